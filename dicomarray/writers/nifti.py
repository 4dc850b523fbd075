"""The NIfTI-1 export: the volume with its affine, DICOM LPS turned into NIfTI RAS.

NIfTI voxel indices ``(i, j, k)`` vary ``i`` fastest on disk, which is exactly the byte
order of a C-ordered array whose last dim is ``i``: so ``(i, j, k)`` are the array's last,
middle and first dims, whatever their order (``(x, y, z)`` for a ``(z, y, x)`` volume). The
header is written by nibabel and the chunks go straight after it into a memory-mapped
file, in parallel, never holding the volume. A ``.nii.gz`` is then compressed from that
file as a stream.

Every figure of the header comes from :class:`~dicomarray.geometry.VolumeGeometry`: the
sform is its exact affine (with the shear of a tilted gantry), the qform its rotation
(the row, column and slice-normal directions) with the true voxel sizes, because a qform
cannot shear and ITK-based readers (SimpleITK, ITK-SNAP, ANTs) use the qform whenever
the sform is not a rotation.

A volume with one dim beyond ``z``, ``y`` and ``x`` (``t``, ``echo``, ``diffusion``,
``volume`` ...) is written 4-D, that dim NIfTI's 4th (slowest on disk), chunk by chunk as
a 3-D one. Two or more such dims are refused: dcm2niix writes one file per echo (``_e1``,
``_e2`` ...) rather than a 5-D NIfTI that few readers take, and so do we, one
``.isel(echo=i)`` at a time. A DWI series (``b_value`` along its 4th dim) gets FSL's
``.bval`` and ``.bvec`` beside it, as dcm2niix writes them.
"""

from __future__ import annotations

import functools
import gzip
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .. import resample
from ..errors import WriteError, warn_data_problem
from ..geometry import SPATIAL_DIMS, VolumeGeometry
from ..labels import series_label
from ..staging import discarding, os_errors, partial_path, stage
from .common import (
    MemmapTarget,
    dask_data,
    delayed_finish,
    oriented,
    run_or_delay,
    store_into,
)
from .metadata import nifti_metadata, write_json

#: Largest distance (mm) between a slice's own position and where the affine's one slice
#: step puts it before the export warns (steps that vary within the regularity tolerance).
POSITION_TOLERANCE_MM = 0.01
#: The 4th-dim coords of a DWI series, and the per-volume gradient in patient LPS.
B_VALUE_COORD = "b_value"
GRADIENT_COORDS = ("gradient_l", "gradient_p", "gradient_s")
_SINGLE_FILE_OFFSET = 352  # 348-byte header + 4 bytes of extension flags
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_REVERSED_AXES = [2, 1, 0, 3]  # array dims (a, b, c) -> NIfTI (i, j, k) = (c, b, a)


def nifti_affine(affine: np.ndarray) -> np.ndarray:
    """The NIfTI affine, ``(i, j, k, 1)`` to RAS mm, of a dicomarray affine.

    Parameters
    ----------
    affine : numpy.ndarray
        4 x 4, indices in the array's dim order ``(a, b, c, 1)`` to LPS mm, as
        :meth:`VolumeGeometry.affine` (``(z, y, x, 1)`` for a volume as opened). NIfTI's
        ``(i, j, k)`` are ``(c, b, a)``: the fastest varying dim on disk first.
    """
    return _LPS_TO_RAS @ np.asarray(affine, dtype=float)[:, _REVERSED_AXES]


def to_nifti(
    volume: xr.DataArray,
    path: str | os.PathLike,
    *,
    orientation: str | None = "RAS",
    equalize: bool = False,
    detilt: bool = False,
    json_path: str | os.PathLike | None = None,
    deidentify: bool = False,
    overwrite: bool = False,
    compute: bool = True,
) -> Any:
    """Write a volume as a NIfTI-1 file (``.nii`` or ``.nii.gz``).

    The values are written as they are held (no ``scl_slope``), by default reoriented to
    RAS as dcm2niix writes (lazy flips and a transpose, see
    :func:`dicomarray.reorient.reorient`). The sform (code 1, scanner anatomical) is the
    exact affine of :meth:`VolumeGeometry.affine`, flipped from LPS to RAS; the qform
    (code 1) is its rotation, :meth:`VolumeGeometry.rotation`, with the true voxel sizes
    (the slice spacing measured along the normal) and the same origin. The two agree
    except for a tilted (sheared) stack, which only the sform can hold: nibabel reads the
    sform, ITK-based readers the qform (the DICOM directions, each slice without its
    in-plane offset).

    Parameters
    ----------
    volume : xarray.DataArray
        A volume with the three dims ``z``, ``y`` and ``x`` in any order, typically from
        :func:`dicomarray.open_series`, and at most one more dim, written as NIfTI's 4th:
        for ``t``, ``pixdim[4]`` is (0018,0080) *Repetition Time* in seconds (else the
        step of the ``t`` coordinate) and the time unit seconds; for ``diffusion`` the
        repetition time too, as dcm2niix writes it; for any other dim (``echo``,
        ``volume`` ...) 1, without a time unit. The sidecar names the dim and holds its
        coordinates.
    path : str or os.PathLike
        The file to write; ``.nii.gz`` is compressed. A volume with a ``b_value``
        coordinate along its 4th dim also gets ``.bval`` and ``.bvec`` files beside it
        (the same name without ``.nii``/``.nii.gz``), FSL's format as dcm2niix writes
        it: the b-values (s/mm²) on one line, the gradient directions (from
        ``gradient_l``, ``gradient_p``, ``gradient_s``, patient LPS) on three, in the
        image's voxel axes, the first component negated when the affine's determinant is
        positive (FSL's radiological convention).
    orientation : str or None, default "RAS"
        The orientation code to write, fastest axis first (``"RAS"``: nibabel's canonical
        and dcm2niix's; ``"LPS"``: ITK's); None writes the array as it is held.
    equalize : bool, default False
        Write a stack without one slice step (a gap, blocks of different spacing) on its
        finest regular step, interpolated lazily (:func:`dicomarray.resample.equalize`,
        dcm2niix's ``_Eq``), instead of refusing it. A regular stack is written as it is.
    detilt : bool, default False
        Write a tilted (sheared) stack with each slice shifted in-plane onto one grid
        (:func:`dicomarray.resample.detilt`, dcm2niix's ``_Tilt``), so sform and qform are
        the same rotation and every reader places the voxels alike. A stack without tilt
        is written as it is.
    json_path : str or os.PathLike, optional
        Also write a JSON sidecar there, of the array as written (after resampling and
        reorienting): the sidecar of :func:`dicomarray.writers.npy.to_npy`, with the BIDS
        fields of :func:`dicomarray.writers.metadata.bids_fields` at the top level, in
        BIDS units (``RepetitionTime`` and ``EchoTime`` in seconds, ``SliceTiming``), as
        dcm2niix writes beside a NIfTI.
    deidentify : bool, default False
        De-identify the sidecar, as for :func:`dicomarray.writers.npy.to_npy`. The NIfTI
        header itself holds no tags.
    overwrite : bool, default False
        Replace existing files.
    compute : bool, default True
        With False, return a :class:`dask.delayed.Delayed` that writes when computed.

    Returns
    -------
    pathlib.Path or dask.delayed.Delayed
        The path written, or the Delayed that returns it.

    Raises
    ------
    WriteError
        For a missing ``z``, ``y`` or ``x``, more than one other dim (naming them), a
        colour (``channel``) volume, a name without ``.nii`` or
        ``.nii.gz``, or a stack without one slice step (a gap, blocks of different
        spacing: NIfTI holds one step) unless ``equalize``, naming the series and its steps.
    DicomArrayError
        For a malformed geometry or orientation code; a
        :class:`~dicomarray.errors.ResampleError` when ``equalize`` or ``detilt`` cannot
        resample the volume.

    Warns
    -----
    GeometryWarning
        For a tilted (sheared) stack written without ``detilt``, which ITK-based readers
        place without its shear;
        and for a slice more than :data:`POSITION_TOLERANCE_MM` from where the affine's
        one slice step puts it.
    """
    nib = _nibabel()
    if not str(path).endswith((".nii", ".nii.gz")):
        raise WriteError(f"{path}: a NIfTI file name ends in .nii or .nii.gz")
    volume = _prepared(volume, orientation, equalize=equalize, detilt=detilt)
    geometry = _checked_geometry(volume)
    fourth = _fourth_dim(volume)
    stages = [stage(path, overwrite=overwrite)]
    if json_path is not None:
        stages.append(stage(json_path, overwrite=overwrite))
    gradients = _diffusion_tables(volume, fourth, geometry)
    gradient_stages = [
        stage(_beside(stages[0].final, suffix), overwrite=overwrite) for suffix in gradients
    ]
    image = stages[0]
    data = dask_data(volume)
    dtype = _nifti_dtype(data.dtype)
    header = _header(nib, data.shape, dtype, geometry, _fourth_step(volume, fourth))
    # a .nii.gz is compressed at the end from an uncompressed partial of its own
    compressed = image.final.name.endswith(".gz")
    raw = partial_path(image.final) if compressed else image.partial
    stages += gradient_stages
    partials = [raw, *(s.partial for s in stages)]
    with discarding(partials), os_errors(image.final):
        target = _start_file(raw, header, data.shape, dtype)
        if json_path is not None:
            write_json(stages[1].partial, nifti_metadata(volume, deidentify=deidentify))
        for output, text in zip(gradient_stages, gradients.values(), strict=True):
            output.partial.write_text(text, encoding="ascii")
    then = functools.partial(_compress, raw, image.partial) if compressed else None
    stored = store_into(data.astype(dtype, copy=False), target)
    done = delayed_finish(stored, stages, then=then)
    return run_or_delay(done, partials, compute=compute)


def _prepared(
    volume: xr.DataArray, orientation: str | None, *, equalize: bool, detilt: bool
) -> xr.DataArray:
    """The volume as it will be written, lazily: three spatial dims after at most one other,
    put on one slice step and one in-plane grid if asked (before reorienting: both work on
    the stored stack), then reoriented."""
    extra = [str(d) for d in volume.dims if d not in SPATIAL_DIMS]
    if len(volume.dims) - len(extra) != 3 or "channel" in extra:
        raise WriteError(
            f"to_nifti needs the three dims z, y and x (in any order) and at most one more "
            f"dim (not a colour channel), not {volume.dims}; in {series_label(volume.attrs)}"
        )
    if len(extra) > 1:
        split = "echo" if "echo" in extra else extra[0]  # dcm2niix splits echoes first
        raise WriteError(
            f"NIfTI holds one dim beyond z, y and x, and {series_label(volume.attrs)} has "
            f"{len(extra)}: {', '.join(extra)}; write one file per {split} as dcm2niix "
            f"does, e.g. volume.isel({split}=0), or select the others away"
        )
    # the 4th NIfTI dim is the slowest on disk: the extra dim first, as reorient puts it
    volume = volume.transpose(*extra, ...)
    # only a stack that needs it goes through resampling, which takes 3-D volumes alone:
    # an n-D series on one regular grid is written as it is (batch asks equalize always)
    if equalize and not VolumeGeometry.of(volume).is_regular:
        volume = resample.equalize(volume)
    if detilt and VolumeGeometry.of(volume).is_sheared:  # after equalize, which keeps it
        volume = resample.detilt(volume)
    return oriented(volume, orientation)


def _checked_geometry(volume: xr.DataArray) -> VolumeGeometry:
    """The volume's geometry, refused without one slice step, warned about when sheared."""
    geometry = VolumeGeometry.of(volume)
    label = series_label(volume.attrs)
    if not geometry.is_regular:
        raise WriteError(
            f"NIfTI holds one slice step, and {label} has none: {_steps_of(geometry)}; "
            "equalize=True writes it on its finest step"
        )
    if geometry.is_sheared:
        warn_data_problem(
            f"{label}: the gantry tilt of {geometry.tilt_degrees:.3g} degrees shears the "
            "stack; the NIfTI sform holds the shear, but ITK-based readers (SimpleITK, "
            "ITK-SNAP, ANTs) use the qform, the DICOM directions without the shear, and "
            "place every slice but the first off its true position in the plane; "
            "detilt=True writes each slice shifted onto one grid"
        )
    _warn_if_misplaced(geometry, label)
    return geometry


def _steps_of(geometry: VolumeGeometry) -> str:
    if not geometry.positions_known:
        return (
            "its slices have no positions, and neither (0018,0088) Spacing Between Slices "
            "nor (0018,0050) Slice Thickness spaces them"
        )
    return geometry.describe_steps()


def _warn_if_misplaced(geometry: VolumeGeometry, label: str) -> None:
    """Warn when steps that count as regular still put a slice off the affine's grid."""
    if geometry.n_slices < 3 or not geometry.positions_known:
        return
    indices = np.zeros((geometry.n_slices, 3))
    indices[:, geometry.dims.index("z")] = np.arange(geometry.n_slices)
    homogeneous = np.concatenate([indices, np.ones((len(indices), 1))], axis=1)
    predicted = (homogeneous @ geometry.affine().T)[:, :3]
    distances = np.linalg.norm(geometry.world(indices) - predicted, axis=1)
    worst = int(np.argmax(distances))
    if distances[worst] > POSITION_TOLERANCE_MM:
        warn_data_problem(
            f"{label}: NIfTI holds one slice step, so slice {worst} (as written) lies "
            f"{distances[worst]:.3g} mm from its own position ({geometry.describe_steps()})"
        )


def _fourth_dim(volume: xr.DataArray) -> str | None:
    """The one dim beyond the spatial three (:func:`_prepared` checked there is at most one)."""
    extra = [str(d) for d in volume.dims if d not in SPATIAL_DIMS]
    return extra[0] if extra else None


def _fourth_step(volume: xr.DataArray, dim: str | None) -> tuple[float, str] | None:
    """``pixdim[4]`` and its unit: the repetition time in s for time (else the ``t`` step)
    and, as dcm2niix, for diffusion volumes; 1 without a unit for echoes and the like."""
    if dim is None:
        return None
    repetition = _seconds(volume.attrs.get("RepetitionTime"))
    if dim in ("t", "diffusion") and repetition is not None:
        return repetition, "sec"
    if dim == "t" and "t" in volume.coords and volume.sizes["t"] > 1:
        steps = np.diff(np.asarray(volume["t"].values, dtype=float))
        return float(abs(steps.mean())), "sec"
    return 1.0, "unknown"


def _seconds(milliseconds: Any) -> float | None:
    """A DICOM time in ms (a number, or a number's text) in s; None unless positive."""
    try:
        value = float(milliseconds) / 1000.0
    except (TypeError, ValueError):
        return None
    return value if 0 < value < np.inf else None


def _beside(image: Path, suffix: str) -> Path:
    """The file beside a NIfTI with its name and another suffix (``x.nii.gz`` -> ``x.bval``)."""
    stem = image.name.removesuffix(".gz").removesuffix(".nii")
    return image.with_name(stem + suffix)


def _diffusion_tables(
    volume: xr.DataArray, dim: str | None, geometry: VolumeGeometry
) -> dict[str, str]:
    """The ``.bval`` and ``.bvec`` texts of a DWI volume (none without ``b_value`` on its
    4th dim), as dcm2niix writes them: FSL's voxel-axis gradients, ``%g`` numbers."""
    if dim is None or B_VALUE_COORD not in volume.coords:
        return {}
    if volume[B_VALUE_COORD].dims != (dim,):
        return {}
    b_values = np.asarray(volume[B_VALUE_COORD].values, dtype=float)
    if all(name in volume.coords for name in GRADIENT_COORDS):
        lps = np.stack([np.asarray(volume[n].values, dtype=float) for n in GRADIENT_COORDS], -1)
    else:
        lps = np.zeros((len(b_values), 3))
    vectors = fsl_gradients(lps, nifti_affine(geometry.rotation_affine()))
    return {".bval": _line(b_values), ".bvec": "".join(_line(row) for row in vectors.T)}


def fsl_gradients(lps: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Diffusion gradient directions in FSL's ``.bvec`` convention.

    Parameters
    ----------
    lps : numpy.ndarray
        (volumes, 3) directions in patient LPS, as (0018,9089) *Diffusion Gradient
        Orientation*; zero rows (b = 0) stay zero.
    affine : numpy.ndarray
        The NIfTI affine (voxel ``(i, j, k)`` to RAS mm) of the image they go beside.

    Returns
    -------
    numpy.ndarray
        (volumes, 3) components along the voxel axes ``i``, ``j``, ``k``; ``i`` negated
        when the affine's determinant is positive, as FSL reads every image as
        radiological (and dcm2niix writes).
    """
    rotation = np.asarray(affine, dtype=float)[:3, :3]
    rotation = rotation / np.linalg.norm(rotation, axis=0)
    voxel = (np.asarray(lps, dtype=float) * [-1.0, -1.0, 1.0]) @ rotation
    if np.linalg.det(rotation) > 0:
        voxel[:, 0] = -voxel[:, 0]
    return voxel + 0.0  # no "-0" in the text


def _line(values: np.ndarray) -> str:
    return " ".join(f"{v:g}" for v in values) + "\n"


def _nibabel() -> Any:
    try:
        import nibabel
    except ImportError as exc:  # pragma: no cover - nibabel is in the test extra
        raise WriteError("to_nifti needs nibabel: pip install 'dicomarray[nifti]'") from exc
    return nibabel


def _nifti_dtype(dtype: np.dtype) -> np.dtype:
    if dtype == np.bool_:
        return np.dtype("<u1")
    if dtype == np.float16:
        return np.dtype("<f4")
    return dtype.newbyteorder("<")


def _header(
    nib: Any,
    shape: tuple[int, ...],
    dtype: np.dtype,
    geometry: VolumeGeometry,
    fourth: tuple[float, str] | None,
) -> Any:
    header = nib.Nifti1Header(endianness="<")
    try:
        header.set_data_dtype(dtype)
    except nib.spatialimages.HeaderDataError as exc:
        raise WriteError(f"NIfTI cannot hold values of type {dtype}") from exc
    header.set_data_shape(shape[::-1])
    # set_qform also sets pixdim to the qform's zooms: the true voxel sizes
    header.set_qform(nifti_affine(geometry.rotation_affine()), code=1)
    header.set_sform(nifti_affine(geometry.affine()), code=1)
    if fourth is None:
        header.set_xyzt_units("mm")
    else:
        header.set_zooms((*header.get_zooms()[:3], fourth[0]))
        header.set_xyzt_units("mm", fourth[1])
    header.set_data_offset(_SINGLE_FILE_OFFSET)
    header["descrip"] = b"dicomarray export"
    return header


def _start_file(path: Path, header: Any, shape: tuple[int, ...], dtype: np.dtype) -> MemmapTarget:
    """Write the header and size the file; the chunks are then stored into the target."""
    with open(path, "wb") as file:
        header.write_to(file)
        file.write(b"\0" * (_SINGLE_FILE_OFFSET - file.tell()))
        file.truncate(_SINGLE_FILE_OFFSET + int(np.prod(shape)) * dtype.itemsize)
    return MemmapTarget(str(path), _SINGLE_FILE_OFFSET, tuple(shape), dtype.str)


def _compress(raw: Path, compressed: Path) -> None:
    with (
        os_errors(compressed),
        open(raw, "rb") as source,
        gzip.open(compressed, "wb", compresslevel=6) as target,
    ):
        shutil.copyfileobj(source, target, length=2**20)
    raw.unlink()
