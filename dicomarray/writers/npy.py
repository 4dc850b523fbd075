"""The ``.npy`` export: the array written chunk by chunk into a memory-mapped file, plus a
JSON sidecar with the series' tags, per-slice tags, geometry and assembly report."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import xarray as xr

from ..staging import discarding, os_errors, stage
from .common import MemmapTarget, dask_data, delayed_finish, run_or_delay, store_into
from .metadata import series_metadata, write_json


def to_npy(
    volume: xr.DataArray,
    path: str | os.PathLike,
    *,
    json_path: str | os.PathLike | None = None,
    deidentify: bool = False,
    overwrite: bool = False,
    compute: bool = True,
) -> Any:
    """Write a volume as a ``.npy`` file and its metadata as a JSON sidecar.

    The values are written as they are held (stored values, or HU after a transform), one
    dask chunk at a time into a memory-mapped ``.npy``, so peak memory is a few chunks.

    Parameters
    ----------
    volume : xarray.DataArray
        A volume, typically from :func:`dicomarray.open_series`.
    path : str or os.PathLike
        The ``.npy`` file to write.
    json_path : str or os.PathLike, optional
        The sidecar; default: ``path`` with the suffix ``.json``. See
        :func:`dicomarray.writers.metadata.series_metadata` for its fields.
    deidentify : bool, default False
        Leave out the attributes of the DICOM PS3.15 Basic Application Level
        Confidentiality Profile, e.g. (0010,0010) *Patient's Name*, (0010,0020) *Patient ID*,
        (0010,0030) *Patient's Birth Date*, (0008,0080) *Institution Name*, and the series
        UID and file paths of the assembly report. Nothing else is changed or shifted.
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
    """
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
