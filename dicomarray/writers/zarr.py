"""The zarr export: a zarr (format 3) store written by xarray, coordinates and attrs kept."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import xarray as xr

from ..errors import DicomArrayError, WriteError
from ..staging import Stage, discarding, stage
from ..volume import VARIABLE_NAME
from .common import dask_data, delayed_finish, oriented, run_or_delay, store_into
from .metadata import export_attrs, is_identifying_coord

_Mode = Literal["w", "w-"]
#: What fsspec and zarr raise for a store they cannot open or write: an unknown protocol
#: (ValueError), a missing filesystem package such as s3fs (ImportError), I/O (OSError).
_STORE_ERRORS = (ValueError, ImportError, OSError)
_FILTERS_LOCK = threading.Lock()


def to_zarr(
    volume: xr.DataArray,
    store: Any,
    *,
    orientation: str | None = None,
    deidentify: bool = False,
    overwrite: bool = False,
    compute: bool = True,
    **kwargs: Any,
) -> Any:
    """Write a volume as a zarr store that :func:`xarray.open_zarr` opens back, lazily.

    The volume is the store's variable (``image`` by default), its dask chunks are the zarr
    chunks (irregular chunks are evened out first), tags stay attrs and per-slice tags stay
    coordinates along ``z``. Text coordinates (``sop_instance_uid`` ...) are written as
    zarr's variable-length ``string`` type. An n-D volume keeps every dim and coordinate
    (``t``, ``echo``, ``b_value`` ..., per-frame ones on ``(*extra, "z")``).

    Parameters
    ----------
    volume : xarray.DataArray
        A volume, typically from :func:`dicomarray.open_series`.
    store : str, os.PathLike, URL or zarr store
        Anything :meth:`xarray.Dataset.to_zarr` accepts. A local path is written under a
        partial name and renamed when complete (:mod:`dicomarray.staging`); URLs and
        store objects are written in place (``mode="w-"``, or ``"w"`` with ``overwrite``).
    orientation : str, optional
        None (default): the dims as stored. Otherwise an orientation code, fastest axis
        first, such as ``"RAS"`` or ``"LPS"``: the volume is reoriented lazily
        (:func:`dicomarray.reorient.reorient`), so series stored head first and feet first
        give the same array. The dims may then come in another order (a sagittal series in
        ``"RAS"`` is ``("y", "x", "z")``); the store keeps them by name, and the attr
        ``dicomarray_orientation`` records the code and the dims written.
    deidentify : bool, default False
        Leave out the attrs and per-slice coordinates of the DICOM PS3.15 Basic Application
        Level Confidentiality Profile (names, IDs, birth dates, institution, physicians,
        UIDs, dates ...), the report's series UID and file paths, and the ``source_file``
        coordinate (folder names often hold patient names), whatever their dims.
    overwrite : bool, default False
        Replace an existing store (a local folder only if it is a zarr store).
    compute : bool, default True
        With False, return a :class:`dask.delayed.Delayed` that writes the chunks (and
        renames a local store into place) when computed.
    **kwargs
        Passed to :meth:`xarray.Dataset.to_zarr` (``encoding``, ``storage_options`` ...).
        ``zarr_format`` defaults to 3; ``consolidated`` defaults to True, as in xarray, so
        that :func:`xarray.open_zarr` reads all metadata at once (pass False for a store
        with only what the zarr 3 specification defines). ``mode`` is set from ``overwrite``.

    Returns
    -------
    pathlib.Path, store or dask.delayed.Delayed
        The local path written, the store given, or the Delayed.

    Raises
    ------
    WriteError
        The store exists (without ``overwrite``), or cannot be opened or written: an
        unknown protocol, a missing filesystem package (``s3fs`` for ``s3://``), an I/O
        error. The message names the store. Or an ``orientation`` that is no code, or a
        volume without the geometry to reorient.
    """
    if "mode" in kwargs:
        raise WriteError("to_zarr sets mode itself; pass overwrite=True to replace a store")
    kwargs.setdefault("zarr_format", 3)
    consolidated = kwargs.pop("consolidated", None) is not False
    dataset = zarr_dataset(oriented(volume, orientation), deidentify=deidentify)
    stages: list[Stage] = []
    target, mode = store, cast(_Mode, "w" if overwrite else "w-")
    if _is_local_path(store):
        local = stage(
            store, overwrite=overwrite, folder=True, replaceable=_is_zarr_store, kind="zarr"
        )
        target, mode = local.partial, "w-"
        stages.append(local)
    partials = [s.partial for s in stages]
    with discarding(partials), _store_errors(store):
        stored = _write(dataset, target, mode, kwargs, store)
    then = functools.partial(_consolidate, target, kwargs, store) if consolidated else None
    done = delayed_finish(stored, stages, then=then, result=None if stages else store)
    return run_or_delay(done, partials, compute=compute)


@contextlib.contextmanager
def _store_errors(store: Any) -> Iterator[None]:
    """Raise what fsspec or zarr raise about a store as a WriteError naming it.

    Without this, an unknown protocol or a missing ``s3fs`` would surface as a bare
    ValueError or ImportError from deep inside fsspec. Our own errors pass unchanged.
    """
    try:
        yield
    except DicomArrayError:
        raise
    except FileExistsError as exc:  # zarr's advice names its modes; ours is overwrite
        raise WriteError(f"{store} already exists; pass overwrite=True to replace it") from exc
    except _STORE_ERRORS as exc:
        raise WriteError(f"{store}: {exc}") from exc


@dataclass(frozen=True)
class _ChunkTarget:
    """A zarr array for :func:`dask.array.store` whose write errors name the store."""

    array: Any
    store: Any

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        with _store_errors(self.store):
            self.array[key] = value


def _write(
    dataset: xr.Dataset, target: Any, mode: _Mode, kwargs: dict[str, Any], store: Any
) -> Any:
    """Write the metadata and coordinates now; return the delayed chunk writes of the image.

    The image's chunks are stored by :func:`~dicomarray.writers.common.store_into` rather
    than by xarray, whose delayed writes come with their own fused copy of the read tasks:
    this way exports computed together read each chunk once.
    """
    import zarr

    name = str(next(iter(dataset.data_vars)))
    # consolidated=False: xarray would consolidate when its own delayed writes finish
    writes = dataset.to_zarr(target, mode=mode, compute=False, consolidated=False, **kwargs)
    if name in (kwargs.get("encoding") or {}):
        return writes  # an encoding may change the stored values: let xarray write them
    array = zarr.open_array(
        store=os.fspath(target) if isinstance(target, Path) else target,
        path=name,
        mode="r+",
        storage_options=kwargs.get("storage_options"),
    )
    return store_into(dataset[name].data, _ChunkTarget(array, store))


def _consolidate(target: Any, kwargs: dict[str, Any], store: Any) -> None:
    import zarr

    # catch_warnings swaps the process's filters: entered and left by one thread at a time,
    # or two exports finishing together would leave each other's filters in place
    with _store_errors(store), _FILTERS_LOCK, warnings.catch_warnings():
        # zarr notes that consolidated metadata is its extension to the v3 format; xarray
        # writes it by default too, and reads it first
        warnings.filterwarnings("ignore", "Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(
            os.fspath(target) if isinstance(target, Path) else target,
            zarr_format=kwargs["zarr_format"],
        )


def zarr_dataset(volume: xr.DataArray, *, deidentify: bool = False) -> xr.Dataset:
    """The Dataset written to zarr: regular dask chunks, text as strings, attrs to keep."""
    name = volume.name if volume.name is not None else VARIABLE_NAME
    data = _regular_chunks(dask_data(volume))
    array = volume.copy(data=data).drop_encoding()
    if deidentify:
        array = array.drop_vars([n for n in array.coords if is_identifying_coord(str(n))])
    array.attrs = export_attrs(volume.attrs, deidentify=deidentify)
    dataset = array.to_dataset(name=name)
    for coord_name in list(dataset.coords):
        # coordinates are small: written whole, in memory (dask-backed ones too)
        coord = dataset.coords[coord_name].variable.load()
        if coord.dtype.kind in "UO":
            strings = np.asarray(coord.values, dtype=np.dtypes.StringDType())
            coord = xr.Variable(coord.dims, strings, coord.attrs)
        dataset.coords[coord_name] = coord
    return dataset


def _regular_chunks(data: Any) -> Any:
    """zarr needs equal chunks along each axis (the last may be smaller)."""
    regular = all(
        len(set(chunks[:-1])) <= 1 and chunks[-1] <= chunks[0] for chunks in data.chunks if chunks
    )
    if regular:
        return data
    return data.rechunk(tuple(max(chunks) for chunks in data.chunks))


def _is_local_path(store: Any) -> bool:
    return isinstance(store, str | os.PathLike) and "://" not in os.fspath(store)


def _is_zarr_store(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("zarr.json", ".zgroup", ".zarray"))
