"""The ``.npy`` export: the array written chunk by chunk into a memory-mapped file, plus a
JSON sidecar with the series' tags, per-slice tags, geometry and assembly report; and
:func:`open_npy`, which reads the two back as the DataArray they were written from."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..attrs import snake_case
from ..errors import DicomArrayError
from ..geometry import POSITION_COORDS, SPATIAL_DIMS, plane_coords
from ..staging import discarding, os_errors, stage
from .common import (
    MemmapTarget,
    dask_data,
    delayed_finish,
    oriented,
    run_or_delay,
    store_into,
)
from .metadata import SIDECAR_SECTIONS, series_metadata, write_json

#: Slices per dask chunk of :func:`open_npy`: streaming writers hold a few chunks.
NPY_CHUNK_SLICES = 8


def to_npy(
    volume: xr.DataArray,
    path: str | os.PathLike,
    *,
    json_path: str | os.PathLike | None = None,
    orientation: str | None = None,
    deidentify: bool = False,
    overwrite: bool = False,
    compute: bool = True,
) -> Any:
    """Write a volume as a ``.npy`` file and its metadata as a JSON sidecar.

    The values are written as they are held (stored values, or HU after a transform), one
    dask chunk at a time into a memory-mapped ``.npy``, so peak memory is a few chunks.
    The array's axes are the volume's dims, as stored or in a chosen ``orientation``; the
    sidecar's ``array.dims`` names them in order. An n-D volume (``t``, ``echo``,
    ``diffusion`` ... before ``z``) is written whole, its extra-dim and per-frame
    coordinates in the sidecar's ``array.coords``, which :func:`open_npy` reads back.

    Parameters
    ----------
    volume : xarray.DataArray
        A volume, typically from :func:`dicomarray.open_series`.
    path : str or os.PathLike
        The ``.npy`` file to write.
    json_path : str or os.PathLike, optional
        The sidecar; default: ``path`` with the suffix ``.json``. See
        :func:`dicomarray.writers.metadata.series_metadata` for its fields.
    orientation : str, optional
        None (default): the axes as stored. Otherwise an orientation code, fastest axis
        first, such as ``"RAS"`` (nibabel's canonical) or ``"LPS"``: the volume is
        reoriented lazily (:func:`dicomarray.reorient.reorient`), so series stored head
        first and feet first give the same array. The axes may then come in another order
        (a sagittal series in ``"RAS"`` is ``("y", "x", "z")``); the sidecar's
        ``array.dims`` and ``array.attrs.dicomarray_orientation`` record what was written.
    deidentify : bool, default False
        Leave out the attributes of the DICOM PS3.15 Basic Application Level
        Confidentiality Profile, e.g. (0010,0010) *Patient's Name*, (0010,0020) *Patient ID*,
        (0010,0030) *Patient's Birth Date*, (0008,0080) *Institution Name*, the series
        UID and file paths of the assembly report, and the ``source_file`` coordinate (the
        path each slice was read from: folder names often hold patient names). Nothing else
        is changed or shifted.
    overwrite : bool, default False
        Replace existing files; otherwise an existing file is a
        :class:`~dicomarray.errors.WriteError`.
    compute : bool, default True
        With False, return a :class:`dask.delayed.Delayed` that writes when computed, so
        that several exports share one computation.

    Returns
    -------
    pathlib.Path or dask.delayed.Delayed
        The ``.npy`` path, or the Delayed that returns it.

    Raises
    ------
    WriteError
        An existing file (without ``overwrite``), an I/O error, or an ``orientation`` that
        is no code or a volume without the geometry to reorient.
    """
    volume = oriented(volume, orientation)
    array = stage(path, overwrite=overwrite)
    sidecar = stage(
        array.final.with_suffix(".json") if json_path is None else json_path, overwrite=overwrite
    )
    data = dask_data(volume)
    partials = [array.partial, sidecar.partial]
    with discarding(partials), os_errors(array.final):
        write_json(sidecar.partial, series_metadata(volume, deidentify=deidentify))
        mapped = np.lib.format.open_memmap(
            array.partial, mode="w+", dtype=data.dtype, shape=data.shape
        )
        target = MemmapTarget(str(array.partial), int(mapped.offset), data.shape, data.dtype.str)
        del mapped
    done = delayed_finish(store_into(data, target), [array, sidecar])
    return run_or_delay(done, partials, compute=compute)


def open_npy(
    path: str | os.PathLike, *, json_path: str | os.PathLike | None = None
) -> xr.DataArray:
    """Read an ``.npy`` and its JSON sidecar (from :func:`to_npy`) back as a lazy DataArray.

    The array is memory-mapped and wrapped in dask chunks of :data:`NPY_CHUNK_SLICES`
    slices, so nothing is read until values are asked for. The sidecar gives back what
    :func:`dicomarray.writers.to_dicom` needs to put the values over their own series:
    the tags common to the series as attrs (e.g. (0028,1053) *Rescale Slope* and
    (0028,1052) *Rescale Intercept* of stored values), the non-DICOM attrs
    (``dicomarray_values = "modality"`` after ``hu()``), the ``z`` position of every
    slice, the tags that vary by slice as coordinates along ``z`` (e.g.
    ``sop_instance_uid``), and ``y`` and ``x`` in mm rebuilt from the sidecar's affine
    (:func:`dicomarray.geometry.plane_coords`), so the array's geometry is the one it was
    written with, rows and columns flipped by ``orientation=`` included.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npy`` file.
    json_path : str or os.PathLike, optional
        Its sidecar; default: ``path`` with the suffix ``.json``.

    The coordinates of an n-D volume's extra dims (``t`` in s, ``echo`` in ms,
    ``b_value``, ``gradient_l`` ...) and those per frame (dims ``(*extra, "z")``) come
    back from the sidecar's ``array.coords`` with their dims and attrs.

    Returns
    -------
    xarray.DataArray
        Dims as written, in the order written (``z``, ``y``, ``x`` for a volume as stored;
        after an ``orientation`` perhaps ``y``, ``x``, ``z``; extra dims such as ``t``
        first), dask-backed: chunks of one index of each extra dim and
        :data:`NPY_CHUNK_SLICES` along the first spatial dim.

    Raises
    ------
    DicomArrayError
        The ``.npy`` or the sidecar cannot be read, the sidecar is not a dicomarray
        sidecar, or it describes an array of another shape (it belongs to another file).
    """
    path = Path(path)
    sidecar_path = path.with_suffix(".json") if json_path is None else Path(json_path)
    array = memory_map_npy(path)
    sidecar = _read_sidecar(sidecar_path)
    described = sidecar["array"]
    if list(described.get("shape") or []) != list(array.shape):
        raise DicomArrayError(
            f"{sidecar_path} describes an array of shape {tuple(described.get('shape') or ())}"
            f", but {path} holds {array.shape}: it is the sidecar of another file"
        )
    import dask.array

    dims = tuple(described.get("dims") or [f"dim_{i}" for i in range(array.ndim)])
    data = dask.array.from_array(array, chunks=_read_chunks(dims, array.shape))
    coords = {
        **_sidecar_coords(sidecar, dims, array.shape),
        **_extra_coords(described.get("coords"), dict(zip(dims, array.shape, strict=True))),
    }
    volume = xr.DataArray(data, dims=dims, coords=coords, name=described.get("name"))
    tags = {k: v for k, v in sidecar.items() if k not in SIDECAR_SECTIONS}
    volume.attrs = {**tags, **(described.get("attrs") or {})}
    return volume


def _read_chunks(dims: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """One index of each dim before the first spatial one (a volume of a ``t`` series),
    :data:`NPY_CHUNK_SLICES` of that one, the rest whole: a few slices per chunk."""
    first = next((i for i, d in enumerate(dims) if d in SPATIAL_DIMS), 0)
    return tuple(
        1 if i < first else NPY_CHUNK_SLICES if i == first else n for i, n in enumerate(shape)
    )


def _extra_coords(described: Any, sizes: dict[str, int]) -> dict[str, Any]:
    """The sidecar's ``array.coords`` as coordinates; an entry whose dims or shape do not
    fit the array (a hand-edited sidecar) is left out rather than failing the read."""
    coords: dict[str, Any] = {}
    for name, entry in (described or {}).items() if isinstance(described, dict) else ():
        if not isinstance(entry, dict) or not isinstance(entry.get("dims"), list):
            continue
        dims = tuple(str(d) for d in entry["dims"])
        values = np.asarray(entry.get("values"))
        if values.shape != tuple(sizes.get(d, -1) for d in dims):
            continue
        coords[str(name)] = (dims, values, entry.get("attrs") or {})
    return coords


def memory_map_npy(path: Path) -> np.ndarray:
    """An ``.npy`` file memory-mapped read-only; a DicomArrayError naming it if unreadable."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DicomArrayError(f"{path}: not a readable .npy file: {exc}") from exc


def _read_sidecar(path: Path) -> dict[str, Any]:
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DicomArrayError(f"{path}: not a readable JSON sidecar: {exc}") from exc
    if not isinstance(sidecar, dict) or not isinstance(sidecar.get("array"), dict):
        raise DicomArrayError(f"{path}: not a dicomarray sidecar (no 'array' section)")
    return sidecar


def _sidecar_coords(
    sidecar: dict[str, Any], dims: tuple[str, ...], shape: tuple[int, ...]
) -> dict[str, Any]:
    """``z`` and the per-slice tags of a sidecar, as coordinates along ``z``, wherever the
    ``z`` axis is (a reoriented export may put it last)."""
    if "z" not in dims:
        return {}
    count = shape[dims.index("z")]
    geometry = sidecar.get("geometry") or {}
    coords: dict[str, Any] = {}
    if len(geometry.get("z") or []) == count:
        coords["z"] = ("z", np.asarray(geometry["z"], dtype=float))
    for keyword, values in (sidecar.get("varying") or {}).items():
        if not isinstance(values, list) or len(values) != count:
            continue
        if keyword == "ImagePositionPatient":
            positions = np.asarray(values, dtype=float).reshape(count, 3)
            coords.update({n: ("z", positions[:, i]) for i, n in enumerate(POSITION_COORDS)})
        elif all(v is None or isinstance(v, str | int | float) for v in values):
            coords[snake_case(keyword)] = ("z", np.asarray(values))
    return {**coords, **_sidecar_plane_coords(geometry, dims, shape, coords)}


def _sidecar_plane_coords(
    geometry: dict[str, Any], dims: tuple[str, ...], shape: tuple[int, ...], coords: dict
) -> dict[str, Any]:
    """``y`` and ``x`` in mm from the sidecar's affine, so that the array read back has the
    geometry it was written with, rows and columns flipped by ``orientation=`` included."""
    affine = np.asarray(geometry.get("affine") or [], dtype=float)
    orientation = np.asarray(geometry.get("orientation") or [], dtype=float)
    if affine.shape != (4, 4) or orientation.shape != (6,) or geometry.get("dims") != list(dims):
        return {}
    if not all(name in coords for name in POSITION_COORDS):
        return {}
    first = [coords[name][1][0] for name in POSITION_COORDS]
    mm = {"units": "mm", "origin": 0.0}
    planes = plane_coords(affine, orientation, first, dims, shape)
    return {dim: (dim, values, mm) for dim, values in planes.items()}
