"""Compare dicomarray with dcm2niix, the field's reference converter, on real scanner data.

``python -m benchmarks.compare_dcm2niix [--realdata DIR] [--out DIR] [--sets NAME ...]
[--readme]``

For every set under the realdata folder (the ``neurolabusc/dcm_qa_*`` validation sets),
dcm2niix converts the whole set once (``dcm2niix -z n -b y -ba n -f %s_%d``; gzipped
files are gunzipped into a temporary copy first) and every series that
:func:`dicomarray.list_series` finds is opened with :func:`dicomarray.open_series` and
paired with the dcm2niix outputs of the same (0020,000E) *Series Instance UID* and
(0020,0011) *Series Number* (both are in dcm2niix's BIDS sidecar; the number is left
out when dicomarray split the volumes by it). dicomarray's volume set (dims
``(*extra, z, y, x)``) is compared with all those outputs together:

* shape, up to axis order: every output has the three spatial sizes (matched through
  the affines), and the outputs hold as many 3-D volumes (dcm2niix's 4th dim, and its
  files per echo, per image type, ``_e2``, ``_ph``) as dicomarray's extra dims;
* geometry: the world position (LPS mm) of the 8 corner voxels through dicomarray's
  ``.dicom.affine`` ((z, y, x) index to LPS) and through each output's NIfTI affine
  (index to RAS, turned into LPS);
* values: each of dicomarray's volumes is paired with one dcm2niix volume (by the
  stored values of the middle slice; dcm2niix orders and splits volumes its own way)
  and every pair is compared voxel by voxel, one slice at a time: modality values
  (stored x rescale; dcm2niix keeps the stored integers and puts the rescale into
  ``scl_slope``/``scl_inter``) and stored values.

Each series gets one category (:data:`CATEGORIES`). One series never stops the others:
every failure is recorded with its type and message. Results go to
``OUT/dcm2niix_comparison.json`` and ``.md`` (default ``benchmarks/results``); the run
prints the table (series, dcm2niix shape, dicomarray's, verdict) and the counts, and
``--readme`` rewrites the counts in the README between :data:`README_START` and
:data:`README_END`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
#: Environment variable naming the realdata folder.
REALDATA_ENV = "DICOMARRAY_REALDATA"
#: Corner distance (mm) above which the geometry is "off". The NIfTI header holds its
#: affine as float32: about 1e-5 mm of rounding at 100 mm from the origin.
GEOMETRY_TOL_MM = 0.01
#: Seconds one dcm2niix run may take before it is stopped.
DCM2NIIX_TIMEOUT = 900

MATCH = "match"
VALUES_DIFFER = "values differ"
GEOMETRY_OFF = "geometry off"
SHAPE_DIFFERS = "shape differs"
DICOMARRAY_ERROR = "dicomarray error"
DCM2NIIX_ONLY = "dcm2niix only"
DICOMARRAY_ONLY = "dicomarray only"
NOT_AN_IMAGE = "not an image"
COMPARISON_FAILED = "comparison failed"
#: Every category, best first; a series paired with several outputs takes the best.
CATEGORIES = (
    MATCH,
    VALUES_DIFFER,
    GEOMETRY_OFF,
    SHAPE_DIFFERS,
    DICOMARRAY_ERROR,
    DCM2NIIX_ONLY,
    DICOMARRAY_ONLY,
    NOT_AN_IMAGE,
    COMPARISON_FAILED,
)
#: Sets holding one session exported twice (classic and enhanced multi-frame): the two
#: exports share Series Instance UIDs and dcm2niix converts both, so each export is
#: compared on its own, as a user would open it.
EXPORTS = {"dcm_qa_philips_enh": ("In/cl", "In/enh")}
#: The README block ``--readme`` rewrites with the counts.
README = REPO / "README.md"
README_START = "<!-- compare_dcm2niix: start (python -m benchmarks.compare_dcm2niix --readme) -->"
README_END = "<!-- compare_dcm2niix: end -->"
#: dicomarray's LPS patient axes from NIfTI's RAS: flip x and y.
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Comparison:
    """One row of the comparison: a dicomarray series, a dcm2niix output, or both."""

    set: str
    category: str
    series_uid: str | None = None
    series_number: int | None = None
    description: str | None = None
    dicomarray_shape: list[int] | None = None
    dicomarray_dims: list[str] | None = None
    #: dcm2niix's files of the series, comma-separated, and their shapes
    nifti: str | None = None
    nifti_shapes: list[list[int]] | None = None
    #: 3-D volumes on each side (dicomarray's extra dims, dcm2niix's 4th dims and files)
    volumes: int | None = None
    nifti_volumes: int | None = None
    #: the dcm2niix volume (flat over its files, in name order) paired with each of ours
    volume_order: list[int] | None = None
    geometry_mm: float | None = None
    max_abs_diff: float | None = None
    differing_voxels: int | None = None
    stored_differing_voxels: int | None = None
    rescale: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float | None = None


@dataclass
class NiftiOutput:
    """One dcm2niix output: the NIfTI file and the tags of its BIDS sidecar."""

    path: Path
    series_uid: str | None
    series_number: int | None
    #: dcm2niix scaled by Philips' private (2005,100E) *Scale Slope* ("floating point"
    #: values) instead of the standard rescale
    philips_float: bool = False
    description: str | None = None

    @property
    def name(self) -> str:
        return self.path.name


# -- finding the data ---------------------------------------------------------------------


def default_realdata() -> Path | None:
    """The realdata folder: ``$DICOMARRAY_REALDATA``, else ``shared/realdata`` beside the repo.

    A git worktree lies deeper than the main checkout, so every ancestor of the repository
    is tried (``../shared/realdata`` first).
    """
    if os.environ.get(REALDATA_ENV):
        path = Path(os.environ[REALDATA_ENV])
        return path if path.is_dir() else None
    for parent in REPO.parents:
        candidate = parent / "shared" / "realdata"
        if candidate.is_dir():
            return candidate
    return None


def realdata_sets(root: Path, names: Sequence[str] = ()) -> list[Path]:
    """The set folders under ``root`` (all of them, or those named), sorted by name."""
    sets = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [p for p in sets if not names or p.name in names]


def comparison_units(sets: Sequence[Path]) -> list[tuple[Path, str]]:
    """(folder, name) of each unit compared on its own: a set, or each export of a set in
    :data:`EXPORTS` (``dcm_qa_philips_enh/cl``)."""
    units = []
    for folder in sets:
        exports = [folder / sub for sub in EXPORTS.get(folder.name, ()) if (folder / sub).is_dir()]
        units += [(e, f"{folder.name}/{e.name}") for e in exports] or [(folder, folder.name)]
    return units


def gzipped_dicom_files(folder: Path) -> list[Path]:
    """The ``*.gz`` files under ``folder`` that hold a DICOM file (not, say, a ``.nii.gz``)."""
    found = []
    for path in sorted(folder.rglob("*.gz")):
        try:
            with gzip.open(path, "rb") as stream:
                head = stream.read(132)
        except (OSError, EOFError):
            continue
        if head[128:132] == b"DICM":
            found.append(path)
    return found


def gunzipped_copy(folder: Path, zipped: Sequence[Path], work: Path) -> Path:
    """``folder`` itself, or a copy of it under ``work`` with the ``zipped`` files gunzipped."""
    if not zipped:
        return folder
    copy, wanted = work / folder.name, set(zipped)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        target = copy / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path in wanted:
            with gzip.open(path, "rb") as src, open(target.with_suffix(""), "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            shutil.copyfile(path, target)
    return copy


# -- dcm2niix -----------------------------------------------------------------------------


def run_dcm2niix(source: Path, out: Path, *, timeout: float = DCM2NIIX_TIMEOUT) -> str:
    """Convert ``source`` with dcm2niix into ``out``; return its output (stdout and stderr).

    Raises
    ------
    FileNotFoundError
        dcm2niix is not installed.
    subprocess.TimeoutExpired
        dcm2niix ran longer than ``timeout`` seconds.
    """
    out.mkdir(parents=True, exist_ok=True)
    command = ["dcm2niix", "-z", "n", "-b", "y", "-ba", "n", "-f", "%s_%d", "-o", str(out)]
    done = subprocess.run(
        [*command, str(source)], capture_output=True, text=True, timeout=timeout, check=False
    )
    return done.stdout + done.stderr


def nifti_outputs(out: Path) -> list[NiftiOutput]:
    """Every NIfTI dcm2niix wrote in ``out``, with the series tags of its sidecar."""
    found = []
    for path in sorted(out.glob("*.nii")):
        sidecar = path.with_suffix(".json")
        tags = json.loads(sidecar.read_text()) if sidecar.exists() else {}
        number = tags.get("SeriesNumber")
        found.append(
            NiftiOutput(
                path,
                tags.get("SeriesInstanceUID"),
                int(number) if number is not None else None,
                bool(tags.get("UsePhilipsFloatNotDisplayScaling")),
                tags.get("SeriesDescription"),
            )
        )
    return found


# -- comparing one pair -------------------------------------------------------------------


@dataclass(frozen=True)
class AxisMap:
    """Which NIfTI voxel axis (and direction) runs along each of dicomarray's z, y, x."""

    axes: tuple[int, int, int]
    flipped: tuple[bool, bool, bool]

    def nifti_index(self, index: Sequence[int], shape: Sequence[int]) -> np.ndarray:
        """The NIfTI voxel index of dicomarray's voxel ``index`` in a volume of ``shape``."""
        nifti = np.zeros(3)
        for i, (axis, flip) in enumerate(zip(self.axes, self.flipped, strict=True)):
            nifti[axis] = shape[i] - 1 - index[i] if flip else index[i]
        return nifti

    def nifti_slice(self, data: Any, k: int, shape: Sequence[int]) -> np.ndarray:
        """dicomarray's slice ``k`` (y, x) read from the NIfTI array proxy ``data``."""
        selection: list[Any] = [slice(None)] * 3
        selection[self.axes[0]] = shape[0] - 1 - k if self.flipped[0] else k
        plane = np.asarray(data[tuple(selection)])
        # the two remaining NIfTI axes keep their order in the plane
        remaining = sorted(self.axes[1:])
        plane = plane.transpose([remaining.index(axis) for axis in self.axes[1:]])
        for dim, flip in enumerate(self.flipped[1:]):
            if flip:
                plane = np.flip(plane, axis=dim)
        return plane


def axis_map(dicomarray_affine: np.ndarray, nifti_affine: np.ndarray) -> AxisMap | None:
    """Match the voxel axes of two arrays by the directions their affines give them.

    ``None`` when no one-to-one match exists (the two affines disagree on the axes, or
    dicomarray's is singular).
    """
    try:
        to_dicomarray = np.linalg.inv(dicomarray_affine) @ LPS_FROM_RAS @ nifti_affine
    except np.linalg.LinAlgError:  # a singular affine matches nothing
        return None
    linear = to_dicomarray[:3, :3]
    axes = tuple(int(np.argmax(np.abs(linear[i]))) for i in range(3))
    if len(set(axes)) != 3:
        return None
    flipped = tuple(bool(linear[i, axes[i]] < 0) for i in range(3))
    return AxisMap(axes, flipped)  # type: ignore[arg-type]


def corner_distance(
    dicomarray_affine: np.ndarray,
    nifti_affine: np.ndarray,
    mapping: AxisMap,
    shape: Sequence[int],
) -> float:
    """The largest distance (mm) between the two positions given to a corner voxel."""
    worst = 0.0
    for corner in np.ndindex(2, 2, 2):
        index = [c * (n - 1) for c, n in zip(corner, shape, strict=True)]
        ours = dicomarray_affine @ np.array([*index, 1.0])
        theirs = LPS_FROM_RAS @ nifti_affine @ np.array([*mapping.nifti_index(index, shape), 1.0])
        worst = max(worst, float(np.linalg.norm(ours[:3] - theirs[:3])))
    return worst


@dataclass
class ValueDiff:
    """How one NIfTI volume's values differ from dicomarray's volume."""

    #: largest absolute difference of modality values (stored values rescaled)
    max_abs_diff: float = 0.0
    #: voxels whose modality values differ
    differing: int = 0
    #: voxels whose stored values differ
    stored_differing: int = 0


def compare_values(volume: Any, data: Any, mapping: AxisMap) -> ValueDiff:
    """Compare one of dicomarray's 3-D volumes with one NIfTI volume, slice by slice.

    dcm2niix may write the rescaled values, or the stored ones with the rescale in
    ``scl_slope``/``scl_inter``; nibabel's array proxy applies the latter, so modality
    values are compared (dicomarray's stored values times each slice's rescale), and the
    stored values too (the NIfTI's values with its scl_* undone). ``data`` is a NIfTI
    array proxy (or array) of dicomarray's shape, up to axis order.
    """
    slopes, intercepts = slice_rescale(volume)
    slope, inter = _scl(data)
    # each side is read once, one 3-D volume: a NIfTI proxy sliced across its first axis
    # reads the whole file again for every slice (51 s for a 170-slice sagittal MPRAGE),
    # and a slice of a chunk of several volumes may read the chunk
    values = np.asarray(data[(slice(None),) * 3])
    mine = np.asarray(volume.values)
    result = ValueDiff()
    for k in range(volume.shape[0]):
        stored = mine[k].astype(np.float64)
        ours = stored * slopes[k] + intercepts[k]
        theirs = mapping.nifti_slice(values, k, volume.shape).astype(np.float64)
        theirs_stored = np.rint((theirs - inter) / slope)
        close = _close(ours, theirs)
        result.max_abs_diff = max(result.max_abs_diff, float(np.abs(ours - theirs).max()))
        result.differing += int(close.size - np.count_nonzero(close))
        result.stored_differing += int(np.count_nonzero(theirs_stored != stored))
    return result


#: (keyword, coord, default) of the rescale: attrs when constant, coords when varying.
_RESCALE = (
    ("RescaleSlope", "rescale_slope", 1.0),
    ("RescaleIntercept", "rescale_intercept", 0.0),
)


def slice_rescale(volume: Any) -> tuple[np.ndarray, np.ndarray]:
    """Each slice's (0028,1053) *Rescale Slope* and (0028,1052) *Rescale Intercept*, for a
    3-D volume (or a slice of each of a volume set's volumes: then one value each).

    From the per-slice coordinates when they vary, else the attrs (default 1 and 0).
    """
    shape = volume.isel(y=0, x=0, drop=True)
    found = []
    for keyword, coord, default in _RESCALE:
        if coord in volume.coords:
            values = volume[coord].broadcast_like(shape).transpose(*shape.dims).values
        else:
            values = np.full(shape.shape, float(volume.attrs.get(keyword, default)))
        found.append(np.asarray(values, dtype=np.float64).reshape(-1))
    return found[0], found[1]


def _scl(data: Any) -> tuple[float, float]:
    """The scl_slope and scl_inter an array proxy applies (1 and 0 for a plain array)."""
    slope = getattr(data, "slope", 1.0)
    inter = getattr(data, "inter", 0.0)
    return float(slope), float(inter)


class _VolumeOf:
    """Volume ``t`` of a 4-D NIfTI array proxy, read lazily: only what is indexed."""

    def __init__(self, proxy: Any, t: int) -> None:
        self.proxy, self.t = proxy, t
        self.slope, self.inter = _scl(proxy)

    def __getitem__(self, selection: tuple[Any, ...]) -> np.ndarray:
        return np.asarray(self.proxy[(*selection, self.t)])


def rescale_note(volume: Any, proxy: Any) -> str:
    """dicomarray's rescale (attrs or per-slice coords) beside the NIfTI's scl_*.

    nibabel moves scl_slope/scl_inter from the loaded header into the array proxy (the
    header then says NaN), so the proxy's are used.
    """
    theirs = _scl(proxy)
    slopes, intercepts = slice_rescale(volume)
    if len(np.unique(slopes)) > 1 or len(np.unique(intercepts)) > 1:
        return f"dicomarray: varies by slice; NIfTI {theirs[0]:g}, {theirs[1]:g}"
    ours = (float(slopes[0]), float(intercepts[0]))
    if np.allclose(ours, theirs, rtol=1e-5, atol=1e-5):
        return "same"
    return f"dicomarray {ours[0]:g}, {ours[1]:g}; NIfTI {theirs[0]:g}, {theirs[1]:g}"


@dataclass
class NiftiFile:
    """One dcm2niix output opened lazily by nibabel, its voxel axes matched to dicomarray's.

    ``mapping`` is None when the file's three spatial sizes are not dicomarray's, or its
    affine does not put the voxel axes in the directions of dicomarray's (``problem``
    says which).
    """

    output: NiftiOutput
    image: Any
    mapping: AxisMap | None
    #: the category the file alone would give, when it is not matched
    problem: str = ""

    @classmethod
    def open(cls, output: NiftiOutput, ours: np.ndarray, shape: Sequence[int]) -> NiftiFile:
        """Open ``output`` and match its axes to dicomarray's affine ``ours`` and (z, y, x)
        ``shape``."""
        import nibabel

        image: Any = nibabel.load(output.path)
        spatial = cls.spatial_of(image.shape)
        if sorted(spatial) != sorted(shape):
            return cls(output, image, None, SHAPE_DIFFERS)
        mapping = axis_map(ours, np.asarray(image.affine, dtype=np.float64))
        if mapping is None or [spatial[a] for a in mapping.axes] != list(shape):
            return cls(output, image, None, GEOMETRY_OFF)
        return cls(output, image, mapping)

    @staticmethod
    def spatial_of(shape: Sequence[int]) -> list[int]:
        """The three spatial sizes of a NIfTI shape (a 2-D image has one slice)."""
        return [int(n) for n in shape[:3]] + [1] * (3 - len(shape[:3]))

    @property
    def n_volumes(self) -> int:
        """The volumes the file holds: the product of its 4th and later sizes."""
        return int(np.prod(self.image.shape[3:], dtype=np.int64))

    def volume(self, t: int) -> Any:
        """Volume ``t``, lazily (a 3-D array proxy, or one volume of a 4-D one)."""
        proxy = self.image.dataobj
        if len(self.image.shape) <= 3:
            return proxy
        return _VolumeOf(proxy.reshape((*self.spatial_of(self.image.shape), -1)), t)


def ours_slices(volume: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(volumes, y, x) stored and modality values of slice ``k`` of each of dicomarray's
    volumes."""
    plane = volume.isel(z=k).transpose(..., "y", "x")
    stored = np.asarray(plane.values, dtype=np.float64).reshape(-1, *plane.shape[-2:])
    slopes, intercepts = slice_rescale(plane)
    return stored, stored * slopes[:, None, None] + intercepts[:, None, None]


def theirs_slice(
    data: Any, mapping: AxisMap, k: int, shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """dicomarray's slice ``k`` of one NIfTI volume: stored (scl_slope/scl_inter undone)
    and modality values (as nibabel scales them)."""
    slope, inter = _scl(data)
    values = np.asarray(mapping.nifti_slice(data, k, shape), dtype=np.float64)
    return np.rint((values - inter) / slope), values


def pair_volumes(volume: Any, theirs: list[tuple[NiftiFile, int]]) -> list[tuple[int, int]]:
    """Pair each of dicomarray's volumes with one NIfTI volume: (ours, theirs) flat indices.

    dcm2niix splits a volume set its own way (a 4th dim, files per echo or per image
    type), so the volumes are paired by their values on the middle slice: the one-to-one
    assignment with fewest differing voxels, counted in modality or in stored values,
    whichever differ less (dcm2niix may keep either, and scale them its own way); the
    flat order of both sides wins a tie. Each pair is compared in full afterwards.
    """
    from scipy.optimize import linear_sum_assignment

    shape = volume.shape[-3:]
    k = shape[0] // 2
    stored, modality = ours_slices(volume, k)
    cost = np.empty((len(stored), len(theirs)))
    for j, (file, t) in enumerate(theirs):
        assert file.mapping is not None  # only matched files are paired
        their_stored, their_modality = theirs_slice(file.volume(t), file.mapping, k, shape)
        cost[:, j] = np.minimum(
            np.count_nonzero(stored != their_stored[None], axis=(1, 2)),
            np.count_nonzero(~_close(modality, their_modality[None]), axis=(1, 2)),
        )
    # the identity is preferred among equal costs: a tiny bonus on the diagonal
    diagonal = np.arange(min(cost.shape))
    cost[diagonal, diagonal] -= 0.5
    rows, columns = linear_sum_assignment(cost)
    return [(int(i), int(j)) for i, j in zip(rows, columns, strict=True)]


def _close(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """Modality values that agree (float32 NIfTI data holds about 7 digits)."""
    return np.isclose(ours, theirs, rtol=1e-5, atol=1e-3)


def compare_volume_set(row: Comparison, volume: Any, outputs: list[NiftiOutput]) -> Comparison:
    """Fill ``row`` (shapes, geometry, values, category) for dicomarray's volume set and
    the dcm2niix outputs of the same series.

    Shapes are equal up to axis order when every output has dicomarray's three spatial
    sizes (matched through the affines) and the outputs hold as many volumes as
    dicomarray's extra dims (``(*extra, z, y, x)``). The geometry is the worst corner
    distance over the outputs; values are compared for every pair of volumes
    (:func:`pair_volumes`), modality values and stored values.
    """
    ours = np.asarray(volume.dicom.affine, dtype=np.float64)
    shape = volume.shape[-3:]
    files = [NiftiFile.open(output, ours, shape) for output in outputs]
    row.nifti = ", ".join(file.output.name for file in files)
    row.nifti_shapes = [[int(n) for n in file.image.shape] for file in files]
    row.volumes = int(np.prod(volume.shape[:-3], dtype=np.int64))
    row.nifti_volumes = sum(file.n_volumes for file in files)
    matched = [file for file in files if file.mapping is not None]
    if not matched:
        row.category = min((f.problem for f in files), key=CATEGORIES.index)
        row.notes.append(_unmatched_note(volume, files))
        return row
    row.geometry_mm = max(
        corner_distance(ours, f.image.affine, f.mapping, shape)  # type: ignore[arg-type]
        for f in matched
    )
    theirs = [(file, t) for file in matched for t in range(file.n_volumes)]
    pairs = pair_volumes(volume, theirs)
    _compare_pairs(row, volume, theirs, pairs)
    row.category = _verdict(row, volume, files, len(pairs))
    return row


def _compare_pairs(
    row: Comparison, volume: Any, theirs: list[tuple[NiftiFile, int]], pairs: list[tuple[int, int]]
) -> None:
    """Compare every paired volume in full; the row gets the worst and the totals."""
    extra = volume.dims[:-3]
    indices = list(np.ndindex(*volume.shape[:-3]))
    total = ValueDiff()
    rescales = set()
    for i, j in pairs:
        ours = volume.isel(dict(zip(extra, indices[i], strict=True)))
        file, t = theirs[j]
        diff = compare_values(ours, file.volume(t), file.mapping)  # type: ignore[arg-type]
        total.max_abs_diff = max(total.max_abs_diff, diff.max_abs_diff)
        total.differing += diff.differing
        total.stored_differing += diff.stored_differing
        rescales.add(rescale_note(ours, file.image.dataobj))
    row.max_abs_diff = total.max_abs_diff
    row.differing_voxels = total.differing
    row.stored_differing_voxels = total.stored_differing
    row.rescale = "; ".join(sorted(rescales))
    row.volume_order = [j for _, j in sorted(pairs)]
    if row.volume_order != list(range(len(pairs))):
        row.notes.append("dcm2niix stores the volumes in another order (see volume_order)")
    if total.differing and not total.stored_differing:
        row.notes.append("stored values equal: only the rescale differs")
        if any(file.output.philips_float for file, _ in theirs):
            row.notes.append(
                "dcm2niix used Philips' private precise scaling (2005,100E), dicomarray "
                "(0028,1053) Rescale Slope"
            )


def _verdict(row: Comparison, volume: Any, files: list[NiftiFile], n_pairs: int) -> str:
    """The row's category once its pairs are compared; a note says why shapes differ."""
    if any(file.mapping is None for file in files) or row.volumes != row.nifti_volumes:
        row.notes.append(
            f"dicomarray: {row.volumes} volume(s) of dims {tuple(volume.dims)}; dcm2niix: "
            f"{row.nifti_volumes} in {len(files)} file(s); {n_pairs} compared"
        )
        row.notes.extend(filter(None, [_unmatched_note(volume, files)]))
        return SHAPE_DIFFERS
    if row.geometry_mm is not None and row.geometry_mm > GEOMETRY_TOL_MM:
        return GEOMETRY_OFF
    return VALUES_DIFFER if row.differing_voxels else MATCH


def _unmatched_note(volume: Any, files: list[NiftiFile]) -> str:
    """Why files were not compared: other spatial sizes (a mosaic kept whole) or axes."""
    notes = []
    if "MOSAIC" in volume.attrs.get("ImageType", ()) and volume.sizes["z"] == 1:
        notes.append("a Siemens mosaic: dicomarray keeps the tiles as one image")
    for file in files:
        if file.problem == SHAPE_DIFFERS:
            notes.append(f"{file.output.name}: other spatial sizes")
        elif file.problem == GEOMETRY_OFF:
            notes.append(f"{file.output.name}: the affines do not put the voxel axes alike")
    return "; ".join(notes)


# -- one set ------------------------------------------------------------------------------


def _guarded(row: Comparison, work: Any) -> Comparison:
    """Run ``work(row)``; any failure (even a decoder's BaseException) becomes the row's error."""
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            row = work(row)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - one series never stops the run
            row.category = DICOMARRAY_ERROR
            row.error = describe_error(exc)
    messages = dict.fromkeys(f"{w.category.__name__}: {w.message}"[:500] for w in caught)
    row.notes.extend(messages)
    row.seconds = round(time.perf_counter() - started, 3)
    return row


def describe_error(exc: BaseException) -> str:
    """The exception's qualified type and message, as recorded in a row."""
    return f"{type(exc).__module__}.{type(exc).__name__}: {exc}"[:2000]


def compare_series(
    set_name: str, index: pd.DataFrame, series: Any, outputs: list[NiftiOutput]
) -> tuple[Comparison, set[str]]:
    """Open one ``list_series`` row and compare it with the dcm2niix outputs of the series.

    ``index`` is the set's :func:`dicomarray.scan` index (opened from, not re-scanned).
    The outputs are those of the same Series Instance UID and, unless dicomarray split
    the volumes by (0020,0011) *Series Number*, the same number. Returns the row and the
    names of the outputs it was paired with.
    """
    import dicomarray

    uid = str(series["SeriesInstanceUID"])
    number = _int_or_none(series.get("SeriesNumber"))
    by_uid = [o for o in outputs if o.series_uid == uid]
    paired = {o.name for o in _same_number(by_uid, number)}
    description = _text(series.get("SeriesDescription"))
    row = Comparison(set_name, DICOMARRAY_ERROR, uid, number, description)
    if _missing(series.get("rows")) and not by_uid:
        row.category = NOT_AN_IMAGE
        return row, paired

    def work(row: Comparison) -> Comparison:
        volume = dicomarray.open_series(index, uid)
        row.dicomarray_shape = [int(n) for n in volume.shape]
        row.dicomarray_dims = [str(d) for d in volume.dims]
        split_by_number = "SeriesNumber" in _split_keys(volume)
        candidates = by_uid if split_by_number else _same_number(by_uid, number)
        paired.clear()
        paired.update(o.name for o in candidates)
        if not candidates:
            row.category = DICOMARRAY_ONLY
            return row
        if tuple(volume.dims[-3:]) != ("z", "y", "x"):
            row.category = SHAPE_DIFFERS
            row.notes.append(f"dims {tuple(volume.dims)}: only (..., z, y, x) is compared")
            return row
        return compare_volume_set(row, volume, candidates)

    return _guarded(row, work), paired


def _same_number(outputs: list[NiftiOutput], number: int | None) -> list[NiftiOutput]:
    """The outputs of Series Number ``number``, or all of them when none has it."""
    same = [o for o in outputs if number is not None and o.series_number == number]
    return same or outputs


def _split_keys(volume: Any) -> set[str]:
    """Every tag the assembly split the volumes by (its report's ``dims``)."""
    dims = volume.attrs.get("dicomarray_assembly", {}).get("dims", [])
    return {str(key) for dim in dims for key in dim.get("split_by", [])}


def _int_or_none(value: Any) -> int | None:
    return None if _missing(value) else int(value)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def _text(value: Any) -> str | None:
    return None if _missing(value) else str(value)


def compare_set(
    folder: Path, work: Path, name: str | None = None
) -> tuple[list[Comparison], dict[str, Any]]:
    """Every series of one realdata set compared with dcm2niix's conversion of the set.

    ``name`` names the set in the rows (default: the folder's name). Returns the rows and
    a summary of the set (files, what dicomarray skipped, dcm2niix's log tail).
    """
    import dicomarray

    name = name or folder.name
    summary: dict[str, Any] = {"set": name}
    zipped = gzipped_dicom_files(folder)
    readable = gunzipped_copy(folder, zipped, work / "gunzipped")
    summary["gunzipped"] = len(zipped)
    source = _dicomarray_source(folder, readable, zipped, summary)
    out = work / "dcm2niix" / folder.name
    try:
        summary["dcm2niix_log"] = run_dcm2niix(readable, out)[-3000:]
    except (OSError, subprocess.SubprocessError) as exc:
        summary["dcm2niix_log"] = f"dcm2niix failed: {type(exc).__name__}: {exc}"
    outputs = nifti_outputs(out) if out.is_dir() else []
    summary["dcm2niix_outputs"] = len(outputs)
    try:
        index = dicomarray.scan(source)
        summary["instances"] = len(index)
        summary["skipped"] = len(index.attrs.get("skipped", []))
        table = dicomarray.list_series(index)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - the set fails, the run goes on
        error = describe_error(exc)
        summary["error"] = error
        rows = [Comparison(name, DICOMARRAY_ERROR, error=f"scan/list_series: {error}")]
        return rows + _unpaired(name, outputs, set()), summary
    rows, paired = [], set()
    for _, series in table.iterrows():
        row, names = compare_series(name, index, series, outputs)
        rows.append(row)
        paired |= names
    return rows + _unpaired(name, outputs, paired), summary


def _dicomarray_source(
    folder: Path, readable: Path, zipped: Sequence[Path], summary: dict[str, Any]
) -> Path:
    """The original folder when dicomarray reads its ``.gz`` files as they are, else the copy."""
    if not zipped:
        return folder
    import dicomarray

    try:
        reads_gzip = len(dicomarray.scan([str(zipped[0])])) > 0
    except Exception:  # noqa: BLE001 - a refusal is the answer we look for
        reads_gzip = False
    summary["dicomarray_reads_gz"] = reads_gzip
    return folder if reads_gzip else readable


def _unpaired(set_name: str, outputs: list[NiftiOutput], paired: set[str]) -> list[Comparison]:
    """A ``dcm2niix only`` row for each output no dicomarray series was paired with."""
    import nibabel

    rows = []
    for output in outputs:
        if output.name in paired:
            continue
        image: Any = nibabel.load(output.path)
        shape = [int(n) for n in image.shape]
        rows.append(
            Comparison(
                set_name,
                DCM2NIIX_ONLY,
                output.series_uid,
                output.series_number,
                output.description,
                nifti=output.name,
                nifti_shapes=[shape],
            )
        )
    return rows


# -- the report ---------------------------------------------------------------------------


def write_results(
    rows: list[Comparison], sets: list[dict[str, Any]], out: Path, readme: Path | None = None
) -> Counter[str]:
    """Write ``dcm2niix_comparison.json`` and ``.md`` into ``out`` (and the counts into the
    marked block of ``readme``, if given); return the counts."""
    counts = Counter(row.category for row in rows)
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "counts": {c: counts.get(c, 0) for c in CATEGORIES},
        "geometry_tol_mm": GEOMETRY_TOL_MM,
        "dcm2niix": _dcm2niix_version(),
        "dicomarray_commit": _commit(),
        "sets": sets,
        "series": [asdict(row) for row in rows],
    }
    (out / "dcm2niix_comparison.json").write_text(json.dumps(document, indent=1, default=str))
    (out / "dcm2niix_comparison.md").write_text(markdown(rows, counts, document))
    if readme is not None:
        update_readme(readme, readme_block(rows, document))
    return counts


def markdown(rows: list[Comparison], counts: Counter[str], document: dict[str, Any]) -> str:
    """The comparison as a markdown table, counts first."""
    lines = [
        "# dicomarray vs dcm2niix on the dcm_qa sets",
        "",
        f"Written by `python -m benchmarks.compare_dcm2niix` (dicomarray "
        f"{document['dicomarray_commit']}, dcm2niix {document['dcm2niix']}). Geometry: the",
        "largest distance (mm) of a corner voxel between the two affines (off above",
        f"{GEOMETRY_TOL_MM} mm), over every dcm2niix file of the series. Values: modality",
        "values (stored x rescale), voxel by voxel after matching the axes, for every",
        "volume; a note says when the stored values are equal. dicomarray's shape is",
        "(*extra, z, y, x); dcm2niix's (x, y, z, volumes), one per file.",
        "",
        *counts_table(rows),
        "",
        "| set | instances | skipped by scan | gzipped DICOM | read as .gz | dcm2niix outputs |",
        "|---|---|---|---|---|---|",
        *(_set_line(summary) for summary in document["sets"]),
        "",
        "| set | # | description | category | dicomarray | dcm2niix | mm | max diff | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        notes = "; ".join(([row.error] if row.error else []) + row.notes)
        if row.rescale and row.rescale != "same":
            notes = f"rescale: {row.rescale}; {notes}"
        cells = [
            row.set,
            "" if row.series_number is None else str(row.series_number),
            row.description or "",
            row.category,
            _shape(row.dicomarray_shape),
            _nifti_cell(row),
            "" if row.geometry_mm is None else f"{row.geometry_mm:.3g}",
            "" if row.max_abs_diff is None else f"{row.max_abs_diff:g}",
            notes.replace("|", "/").replace("\n", " ")[:300],
        ]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def counts_table(rows: list[Comparison]) -> list[str]:
    """Markdown lines: each category's count and its series (``set #number``)."""
    lines = ["| category | series | which |", "|---|--:|---|"]
    for category in CATEGORIES:
        which = [_series_name(row, described=True) for row in rows if row.category == category]
        lines.append(f"| {category} | {len(which)} | {', '.join(which)} |")
    return lines


def _series_name(row: Comparison, described: bool = False) -> str:
    """``set #number``, and the description (shortened) when ``described``."""
    number = "" if row.series_number is None else f" #{row.series_number}"
    name = f"{row.set.removeprefix('dcm_qa_')}{number}"
    return f"{name} ({row.description[:24]})" if described and row.description else name


def text_table(rows: list[Comparison]) -> str:
    """The plain-text table the run prints: series, dcm2niix shape, ours, verdict."""
    lines = [("series", "description", "dcm2niix", "dicomarray", "verdict")]
    for row in rows:
        shapes = " + ".join(_shape(shape) for shape in row.nifti_shapes or [])
        ours = _shape(row.dicomarray_shape)
        if row.dicomarray_dims:
            ours = f"{ours} ({','.join(row.dicomarray_dims)})"
        lines.append((_series_name(row), (row.description or "")[:28], shapes, ours, row.category))
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def readme_block(rows: list[Comparison], document: dict[str, Any]) -> str:
    """The README's counts, between :data:`README_START` and :data:`README_END`."""
    return "\n".join(
        [
            README_START,
            f"Last run: {len(rows)} rows, dicomarray {document['dicomarray_commit']}, "
            f"dcm2niix {document['dcm2niix']}:",
            "",
            *counts_table(rows),
            README_END,
        ]
    )


def update_readme(path: Path, block: str) -> None:
    """Replace the marked block of the README at ``path`` with ``block``.

    Raises
    ------
    ValueError
        The README has no (or a broken) pair of markers: nothing is written.
    """
    text = path.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{path}: no {README_START!r} ... {README_END!r} block")
    path.write_text(text[:start] + block + text[end + len(README_END) :])


def _nifti_cell(row: Comparison) -> str:
    """Each dcm2niix file of the row with its shape."""
    names = row.nifti.split(", ") if row.nifti else []
    shapes = row.nifti_shapes or []
    return ", ".join(f"{n} {_shape(s)}" for n, s in zip(names, shapes, strict=False))


def _set_line(summary: dict[str, Any]) -> str:
    keys = ("set", "instances", "skipped", "gunzipped", "dicomarray_reads_gz", "dcm2niix_outputs")
    return "| " + " | ".join(str(summary.get(key, "")) for key in keys) + " |"


def _shape(shape: list[int] | None) -> str:
    return "" if shape is None else "x".join(str(n) for n in shape)


def _commit() -> str | None:
    """The repository's commit (with ``+changes`` when the tree differs from it).

    Outside a git checkout (an exported tree): ``$DICOMARRAY_COMMIT``, if set.
    """
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("DICOMARRAY_COMMIT")
    return f"{head}+changes" if dirty else head


def _git(*args: str) -> str:
    command = ["git", "-C", str(REPO), *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def _dcm2niix_version() -> str | None:
    try:
        done = subprocess.run(["dcm2niix", "-v"], capture_output=True, text=True, check=False)
    except OSError:
        return None
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else None


def run(
    root: Path, out: Path, names: Sequence[str] = (), readme: Path | None = None
) -> list[Comparison]:
    """Compare every set under ``root`` (or those named), write the results into ``out``
    (and the counts into ``readme``, if given); return the rows."""
    rows: list[Comparison] = []
    summaries = []
    with tempfile.TemporaryDirectory(prefix="compare_dcm2niix_") as tmp:
        for folder, name in comparison_units(realdata_sets(root, names)):
            print(f"{name} ...", file=sys.stderr, flush=True)
            try:
                set_rows, summary = compare_set(folder, Path(tmp) / name, name)
            except Exception as exc:  # noqa: BLE001 - a fault of this script: record, go on
                error = f"comparison failed: {describe_error(exc)}"
                set_rows = [Comparison(name, COMPARISON_FAILED, error=error)]
                summary = {"set": name, "error": error}
            rows.extend(set_rows)
            summaries.append(summary)
    write_results(rows, summaries, out, readme)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare_dcm2niix")
    parser.add_argument("--realdata", type=Path, default=None, help="folder of dcm_qa sets")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    parser.add_argument("--sets", nargs="*", default=(), help="only these set folders")
    parser.add_argument(
        "--readme", action="store_true", help="rewrite the counts block of README.md"
    )
    args = parser.parse_args(argv)
    root = args.realdata or default_realdata()
    if root is None or not root.is_dir():
        parser.error(f"no realdata folder (give --realdata or set ${REALDATA_ENV})")
    if shutil.which("dcm2niix") is None:
        parser.error("dcm2niix is not installed (apt-get install dcm2niix)")
    os.nice(10)  # a long run on a shared machine
    rows = run(root, args.out, args.sets, README if args.readme else None)
    print(text_table(rows))
    print()
    print("\n".join(counts_table(rows)))
    print(
        f"written: {args.out / 'dcm2niix_comparison.md'}" + (f", {README}" if args.readme else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
