"""The NIfTI-1 export: the volume with its affine, DICOM LPS turned into NIfTI RAS.

NIfTI voxel indices are ``(i, j, k) = (x, y, z)`` with ``i`` varying fastest on disk, which is
exactly the byte order of a C-ordered ``(z, y, x)`` array. So the header is written by
nibabel and the chunks go straight after it into a memory-mapped file, in parallel, never
holding the volume. A ``.nii.gz`` is then compressed from that file as a stream.
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

from ..errors import WriteError, warn_data_problem
from ..geometry import POSITION_COORDS
from ..staging import discarding, os_errors, partial_path, stage
from .common import MemmapTarget, dask_data, delayed_finish, run_or_delay, store_into
from .metadata import series_metadata, write_json

#: Largest distance (mm) between a slice's ImagePositionPatient and where the affine puts it
#: before the export warns that NIfTI's single slice step misplaces slices.
POSITION_TOLERANCE_MM = 0.01
_SINGLE_FILE_OFFSET = 352  # 348-byte header + 4 bytes of extension flags
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_ZYX_TO_IJK = [2, 1, 0, 3]


def nifti_affine(affine: np.ndarray) -> np.ndarray:
    """The NIfTI affine, ``(i, j, k, 1) = (x, y, z, 1)`` to RAS mm, of a dicomarray affine.

    Parameters
    ----------
    affine : numpy.ndarray
        4 x 4, ``(z, y, x, 1)`` indices to LPS mm, as :attr:`DicomAccessor.affine`.
    """
    return _LPS_TO_RAS @ np.asarray(affine, dtype=float)[:, _ZYX_TO_IJK]


def to_nifti(
    volume: xr.DataArray,
    path: str | os.PathLike,
    *,
    json_path: str | os.PathLike | None = None,
    deidentify: bool = False,
    overwrite: bool = False,
    compute: bool = True,
) -> Any:
    """Write a ``(z, y, x)`` volume as a NIfTI-1 file (``.nii`` or ``.nii.gz``).

    The values are written as they are held (no ``scl_slope``). Both the sform and the
    qform (code 1, scanner anatomical) hold the affine built from (0020,0032) *Image
    Position (Patient)*, (0020,0037) *Image Orientation (Patient)* and (0028,0030) *Pixel
    Spacing*, flipped from LPS to RAS; a tilted (sheared) stack is exact in the sform only,
    as a qform cannot shear.

    Parameters
    ----------
    volume : xarray.DataArray
        A volume with dims ``("z", "y", "x")``, typically from :func:`dicomarray.open_series`.
    path : str or os.PathLike
        The file to write; ``.nii.gz`` is compressed.
    json_path : str or os.PathLike, optional
        Also write the JSON sidecar of :func:`dicomarray.writers.npy.to_npy` there.
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

    Warns
    -----
    GeometryWarning
        A slice lies more than :data:`POSITION_TOLERANCE_MM` from where the affine's single
        slice step puts it (a gap or uneven spacing).
    """
    nib = _nibabel()
    if tuple(volume.dims) != ("z", "y", "x"):
        raise WriteError(f"to_nifti needs dims ('z', 'y', 'x'), not {volume.dims}")
    affine = volume.dicom.affine
    _warn_if_misplaced(volume, affine)
    if not str(path).endswith((".nii", ".nii.gz")):
        raise WriteError(f"{path}: a NIfTI file name ends in .nii or .nii.gz")
    stages = [stage(path, overwrite=overwrite)]
    if json_path is not None:
        stages.append(stage(json_path, overwrite=overwrite))
    image = stages[0]
    data = dask_data(volume)
    dtype = _nifti_dtype(data.dtype)
    header = _header(nib, data.shape, dtype, nifti_affine(affine))
    # a .nii.gz is compressed at the end from an uncompressed partial of its own
    compressed = image.final.name.endswith(".gz")
    raw = partial_path(image.final) if compressed else image.partial
    partials = [raw, *(s.partial for s in stages)]
    with discarding(partials), os_errors(image.final):
        target = _start_file(raw, header, data.shape, dtype)
        if json_path is not None:
            write_json(stages[1].partial, series_metadata(volume, deidentify=deidentify))
    then = functools.partial(_compress, raw, image.partial) if compressed else None
    stored = store_into(data.astype(dtype, copy=False), target)
    done = delayed_finish(stored, stages, then=then)
    return run_or_delay(done, partials, compute=compute)


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


def _header(nib: Any, shape: tuple[int, ...], dtype: np.dtype, affine: np.ndarray) -> Any:
    header = nib.Nifti1Header(endianness="<")
    try:
        header.set_data_dtype(dtype)
    except nib.spatialimages.HeaderDataError as exc:
        raise WriteError(f"NIfTI cannot hold values of type {dtype}") from exc
    header.set_data_shape(shape[::-1])
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_zooms(tuple(float(z) for z in np.linalg.norm(affine[:3, :3], axis=0)))
    header.set_xyzt_units("mm")
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


def _warn_if_misplaced(volume: xr.DataArray, affine: np.ndarray) -> None:
    if volume.sizes["z"] < 3 or not all(name in volume.coords for name in POSITION_COORDS):
        return
    positions = np.stack([volume[name].values for name in POSITION_COORDS], axis=1)
    predicted = np.arange(len(positions))[:, None] * affine[:3, 0]
    distances = np.linalg.norm(positions - positions[0] - predicted, axis=1)
    worst = int(np.nanargmax(distances))
    if distances[worst] > POSITION_TOLERANCE_MM:
        warn_data_problem(
            f"NIfTI holds one slice step ({np.linalg.norm(affine[:3, 0]):.4g} mm): slice "
            f"{worst} is written {distances[worst]:.3g} mm from its ImagePositionPatient "
            "(a gap or uneven spacing)"
        )
