"""Compare dicomarray with dcm2niix, the field's reference converter, on real scanner data.

``python -m benchmarks.compare_dcm2niix [--realdata DIR] [--out DIR] [--sets NAME ...]``

For every set under the realdata folder (the ``neurolabusc/dcm_qa_*`` validation sets),
dcm2niix converts the whole set once (``dcm2niix -z n -b y -ba n -f %s_%d``; gzipped
files are gunzipped into a temporary copy first) and every series that
:func:`dicomarray.list_series` finds is opened with :func:`dicomarray.open_series` and
paired with the dcm2niix outputs of the same (0020,000E) *Series Instance UID* and
(0020,0011) *Series Number* (both are in dcm2niix's BIDS sidecar). Each pair is compared:

* shape: the three spatial sizes (dcm2niix adds a 4th dimension for several volumes);
* geometry: the world position (LPS mm) of the 8 corner voxels through dicomarray's
  ``.dicom.affine`` ((z, y, x) index to LPS) and the NIfTI affine (index to RAS, turned
  into LPS); the voxel axes of the two arrays are matched through the affines;
* values: stored values, slice by slice (dcm2niix keeps the stored integers and puts the
  rescale into ``scl_slope``/``scl_inter``, compared separately).

Each series gets one category (:data:`CATEGORIES`). One series never stops the others:
every failure is recorded with its type and message. Results go to
``OUT/dcm2niix_comparison.json`` and ``.md`` (default ``benchmarks/results``).
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
    nifti: str | None = None
    nifti_shape: list[int] | None = None
    nifti_volume: int | None = None
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


def compare_values(volume: Any, volumes: Sequence[Any], mapping: AxisMap) -> list[ValueDiff]:
    """Compare dicomarray's values with each NIfTI volume, one dicomarray slice at a time.

    dcm2niix may write the rescaled values, or the stored ones with the rescale in
    ``scl_slope``/``scl_inter``; nibabel's array proxy applies the latter, so modality
    values are compared (dicomarray's stored values times each slice's rescale), and the
    stored values too (the NIfTI's values with its scl_* undone). ``volumes`` are NIfTI
    array proxies (or arrays) of dicomarray's shape; a 4-D NIfTI is searched for the volume
    dicomarray opened in one pass.
    """
    slopes, intercepts = slice_rescale(volume)
    results = [ValueDiff() for _ in volumes]
    shape = volume.shape
    for k in range(shape[0]):
        stored = np.asarray(volume.isel(z=k).values, dtype=np.float64)
        ours = stored * slopes[k] + intercepts[k]
        for data, result in zip(volumes, results, strict=True):
            theirs = np.asarray(mapping.nifti_slice(data, k, shape), dtype=np.float64)
            close = np.isclose(ours, theirs, rtol=1e-5, atol=1e-3)
            result.max_abs_diff = max(result.max_abs_diff, float(np.abs(ours - theirs).max()))
            result.differing += int(close.size - np.count_nonzero(close))
            slope, inter = _scl(data)
            theirs_stored = np.rint((theirs - inter) / slope)
            result.stored_differing += int(np.count_nonzero(theirs_stored != stored))
    return results


def slice_rescale(volume: Any) -> tuple[np.ndarray, np.ndarray]:
    """Each slice's (0028,1053) *Rescale Slope* and (0028,1052) *Rescale Intercept*.

    From the per-slice coordinates when they vary, else the attrs (default 1 and 0).
    """
    n = volume.shape[0]
    found = []
    for keyword, coord, default in (
        ("RescaleSlope", "rescale_slope", 1.0),
        ("RescaleIntercept", "rescale_intercept", 0.0),
    ):
        if coord in volume.coords:
            found.append(np.asarray(volume[coord].values, dtype=np.float64))
        else:
            found.append(np.full(n, float(volume.attrs.get(keyword, default))))
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


def compare_pair(row: Comparison, volume: Any, output: NiftiOutput) -> Comparison:
    """Fill ``row`` (shape, geometry, values, category) for one volume and one NIfTI.

    A 4-D NIfTI whose volumes have dicomarray's shape is "shape differs" (dicomarray
    opened one of its volumes), but geometry and values are still compared, against the
    NIfTI volume most like dicomarray's.
    """
    import nibabel

    image: Any = nibabel.load(output.path)
    row.nifti = output.name
    row.nifti_shape = [int(n) for n in image.shape]
    spatial = [int(n) for n in image.shape[:3]] + [1] * (3 - len(image.shape[:3]))
    extra = [int(n) for n in image.shape[3:]]
    if len([n for n in extra if n != 1]) > 1 or sorted(spatial) != sorted(volume.shape):
        row.category = SHAPE_DIFFERS
        if "MOSAIC" in volume.attrs.get("ImageType", ()):
            row.notes.append("a Siemens mosaic: dicomarray keeps the tiles as one image")
        return row
    ours = np.asarray(volume.dicom.affine, dtype=np.float64)
    theirs = np.asarray(image.affine, dtype=np.float64)
    mapping = axis_map(ours, theirs)
    if mapping is None or [spatial[a] for a in mapping.axes] != list(volume.shape):
        row.category = GEOMETRY_OFF
        row.notes.append("the two affines do not put the voxel axes in the same directions")
        return row
    row.geometry_mm = corner_distance(ours, theirs, mapping, volume.shape)
    proxy = image.dataobj
    n_volumes = int(np.prod(extra)) if extra else 1
    if len(image.shape) > 3:
        proxy = proxy.reshape((*spatial, n_volumes)) if hasattr(proxy, "reshape") else proxy
        volumes: list[Any] = [_VolumeOf(proxy, t) for t in range(n_volumes)]
    else:
        volumes = [proxy]
    results = compare_values(volume, volumes, mapping)
    best = min(range(len(results)), key=lambda t: (results[t].differing, results[t].max_abs_diff))
    row.max_abs_diff = results[best].max_abs_diff
    row.differing_voxels = results[best].differing
    row.stored_differing_voxels = results[best].stored_differing
    row.rescale = rescale_note(volume, image.dataobj)
    if row.differing_voxels and not row.stored_differing_voxels:
        row.notes.append("stored values equal: only the rescale differs")
        if output.philips_float:
            row.notes.append(
                "dcm2niix used Philips' private precise scaling (2005,100E), dicomarray "
                "(0028,1053) Rescale Slope"
            )
    if n_volumes > 1:
        row.nifti_volume = best
        row.category = SHAPE_DIFFERS
        row.notes.append(
            f"dicomarray opened one of {n_volumes} volumes: nearest is NIfTI volume {best}"
        )
    elif row.geometry_mm > GEOMETRY_TOL_MM:
        row.category = GEOMETRY_OFF
    elif row.differing_voxels:
        row.category = VALUES_DIFFER
    else:
        row.category = MATCH
    return row


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
    """Open one ``list_series`` row and compare it with its best-matching dcm2niix output.

    ``index`` is the set's :func:`dicomarray.scan` index (opened from, not re-scanned).
    Returns the row and the names of the outputs it was paired with.
    """
    import dicomarray

    uid = str(series["SeriesInstanceUID"])
    number = _int_or_none(series.get("SeriesNumber"))
    candidates = [o for o in outputs if o.series_uid == uid]
    if number is not None and any(o.series_number == number for o in candidates):
        candidates = [o for o in candidates if o.series_number == number]
    paired = {o.name for o in candidates}
    description = _text(series.get("SeriesDescription"))
    row = Comparison(set_name, DICOMARRAY_ERROR, uid, number, description)
    if _missing(series.get("rows")) and not candidates:
        row.category = NOT_AN_IMAGE
        return row, paired

    def work(row: Comparison) -> Comparison:
        volume = dicomarray.open_series(index, uid)
        row.dicomarray_shape = [int(n) for n in volume.shape]
        if not candidates:
            row.category = DICOMARRAY_ONLY
            return row
        if tuple(volume.dims) != ("z", "y", "x"):
            row.category = SHAPE_DIFFERS
            row.notes.append(f"dims {tuple(volume.dims)}: only (z, y, x) volumes are compared")
            return row
        rows = [compare_pair(_copy(row), volume, output) for output in candidates]
        best = min(rows, key=lambda r: CATEGORIES.index(r.category))
        others = [str(r.nifti) for r in rows if r is not best]
        if others:
            best.notes.append(f"also paired (by UID and number) with {', '.join(others)}")
        return best

    return _guarded(row, work), paired


def _copy(row: Comparison) -> Comparison:
    return Comparison(**{**asdict(row), "notes": list(row.notes)})


def _int_or_none(value: Any) -> int | None:
    return None if _missing(value) else int(value)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def _text(value: Any) -> str | None:
    return None if _missing(value) else str(value)


def compare_set(folder: Path, work: Path) -> tuple[list[Comparison], dict[str, Any]]:
    """Every series of one realdata set compared with dcm2niix's conversion of the set.

    Returns the rows and a summary of the set (files, what dicomarray skipped, dcm2niix's
    log tail).
    """
    import dicomarray

    summary: dict[str, Any] = {"set": folder.name}
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
        rows = [Comparison(folder.name, DICOMARRAY_ERROR, error=f"scan/list_series: {error}")]
        return rows + _unpaired(folder.name, outputs, set()), summary
    rows, paired = [], set()
    for _, series in table.iterrows():
        row, names = compare_series(folder.name, index, series, outputs)
        rows.append(row)
        paired |= names
    return rows + _unpaired(folder.name, outputs, paired), summary


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
                nifti_shape=shape,
            )
        )
    return rows


# -- the report ---------------------------------------------------------------------------


def write_results(rows: list[Comparison], sets: list[dict[str, Any]], out: Path) -> Counter[str]:
    """Write ``dcm2niix_comparison.json`` and ``.md`` into ``out``; return the counts."""
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
    return counts


def markdown(rows: list[Comparison], counts: Counter[str], document: dict[str, Any]) -> str:
    """The comparison as a markdown table, counts first."""
    lines = [
        "# dicomarray vs dcm2niix on the dcm_qa sets",
        "",
        f"Written by `python -m benchmarks.compare_dcm2niix` (dicomarray "
        f"{document['dicomarray_commit']}, dcm2niix {document['dcm2niix']}). Geometry: the",
        "largest distance (mm) of a corner voxel between the two affines (off above",
        f"{GEOMETRY_TOL_MM} mm). Values: modality values (stored x rescale), voxel by voxel",
        "after matching the axes; a note says when the stored values are equal.",
        "",
        "| category | series |",
        "|---|---|",
        *(f"| {c} | {counts.get(c, 0)} |" for c in CATEGORIES),
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
            f"{row.nifti or ''} {_shape(row.nifti_shape)}".strip(),
            "" if row.geometry_mm is None else f"{row.geometry_mm:.3g}",
            "" if row.max_abs_diff is None else f"{row.max_abs_diff:g}",
            notes.replace("|", "/").replace("\n", " ")[:300],
        ]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


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


def run(root: Path, out: Path, names: Sequence[str] = ()) -> Counter[str]:
    """Compare every set under ``root`` (or those named) and write the results into ``out``."""
    rows: list[Comparison] = []
    summaries = []
    with tempfile.TemporaryDirectory(prefix="compare_dcm2niix_") as tmp:
        for folder in realdata_sets(root, names):
            print(f"{folder.name} ...", file=sys.stderr, flush=True)
            try:
                set_rows, summary = compare_set(folder, Path(tmp) / folder.name)
            except Exception as exc:  # noqa: BLE001 - a fault of this script: record, go on
                error = f"comparison failed: {describe_error(exc)}"
                set_rows = [Comparison(folder.name, COMPARISON_FAILED, error=error)]
                summary = {"set": folder.name, "error": error}
            rows.extend(set_rows)
            summaries.append(summary)
    return write_results(rows, summaries, out)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare_dcm2niix")
    parser.add_argument("--realdata", type=Path, default=None, help="folder of dcm_qa sets")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    parser.add_argument("--sets", nargs="*", default=(), help="only these set folders")
    args = parser.parse_args(argv)
    root = args.realdata or default_realdata()
    if root is None or not root.is_dir():
        parser.error(f"no realdata folder (give --realdata or set ${REALDATA_ENV})")
    if shutil.which("dcm2niix") is None:
        parser.error("dcm2niix is not installed (apt-get install dcm2niix)")
    os.nice(10)  # a long run on a shared machine
    counts = run(root, args.out, args.sets)
    for category in CATEGORIES:
        print(f"{category}: {counts.get(category, 0)}")
    print(f"written: {args.out / 'dcm2niix_comparison.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
