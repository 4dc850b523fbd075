"""What the writers share: running staged exports, chunk targets and stores.

Every writer stages its outputs with :mod:`dicomarray.staging`: written under a hidden
partial name in the destination folder and renamed to the final name only once everything
is written, so a failed or interrupted export never leaves a half-written file under the
name the caller asked for, and nothing existing is replaced without ``overwrite=True``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from ..errors import DicomArrayError, WriteError
from ..labels import series_label
from ..reorient import ORIENTATION_ATTR, reorient
from ..staging import Stage, discarding, os_errors
from ..volume import CHUNK_BYTES

if TYPE_CHECKING:
    import dask.array

# --------------------------------------------------------------------------------------------
# Running an export whose outputs are staged (see dicomarray.staging)
# --------------------------------------------------------------------------------------------


def run_or_delay(delayed: Any, partials: Iterable[Path], *, compute: bool) -> Any:
    """Compute an export's Delayed now (discarding its partials on failure) or hand it back.

    With ``compute=False`` nothing cleans up after a computation that fails later: the
    partials (``.<name>.<owner>.partial``) may remain, the final names never appear;
    :func:`dicomarray.staging.remove_stale_partials` removes them once the process ends.
    """
    if not compute:
        return delayed
    with discarding(partials):
        return compute_and_wait(delayed)[0]


def compute_and_wait(*collections: Any, scheduler: str | None = None) -> tuple[Any, ...]:
    """:func:`dask.compute`, but on failure only return once every running task has ended.

    dask's threaded scheduler raises the first error while other threads are still writing
    their chunks; cleaning up then would race with them (a zarr chunk write recreates its
    folders). So the threads run in a pool of our own, shut down before returning.
    """
    import dask
    import dask.threaded

    # None: nothing configured, so arrays and delayed objects run on the threaded scheduler
    chosen = dask.base.get_scheduler(scheduler=scheduler)
    if chosen not in (None, dask.threaded.get):
        return dask.compute(*collections, scheduler=scheduler)
    workers = dask.config.get("num_workers", None) or os.cpu_count() or 1
    pool = ThreadPoolExecutor(workers)
    try:
        return dask.compute(*collections, scheduler="threads", pool=pool)
    finally:
        pool.shutdown(wait=True)


def finish(
    stored: Any,
    stages: list[Stage],
    *,
    then: Callable[[], Any] | None = None,
    result: Any = None,
) -> Any:
    """Task run after all chunks are stored: an optional last step, then publishing.

    ``stored`` is only there so that dask runs this after the store tasks. Returns
    ``result``, or the first final path.
    """
    del stored
    if then is not None:
        then()
    for output in stages:
        output.publish()
    return result if result is not None or not stages else stages[0].final


# --------------------------------------------------------------------------------------------
# The volume an export writes
# --------------------------------------------------------------------------------------------


def oriented(volume: xr.DataArray, orientation: str | None) -> xr.DataArray:
    """The volume as an export writes it: as stored, or reoriented to an orientation code.

    Reorienting is lazy (flips and a transpose, :func:`dicomarray.reorient.reorient`), so
    the export still reads each chunk once; series stored head first and feet first come
    out alike. The record in ``attrs["dicomarray_orientation"]`` adds the dims in the
    order written (slowest first), which after a transpose need not be ``z, y, x``.

    Parameters
    ----------
    volume : xarray.DataArray
        The volume to export.
    orientation : str or None
        None: as stored. Otherwise a code such as ``"RAS"`` or ``"LPS"``, fastest axis
        first, as :func:`dicomarray.reorient.reorient` takes it.

    Raises
    ------
    WriteError
        For a code that names no orientation, or a volume without geometry; the message
        names the series.
    """
    if orientation is None:
        return volume
    try:
        turned = reorient(volume, orientation)
    except DicomArrayError as exc:
        raise WriteError(f"{series_label(volume.attrs)}: cannot reorient: {exc}") from exc
    record = {**turned.attrs[ORIENTATION_ATTR], "dims": [str(d) for d in turned.dims]}
    return turned.assign_attrs({ORIENTATION_ATTR: record})


# --------------------------------------------------------------------------------------------
# Chunk targets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemmapTarget:
    """A picklable ``__setitem__`` target for :func:`dask.array.store`.

    Each assignment maps the file, writes one chunk and unmaps it, so the target travels
    to dask workers (a ``numpy.memmap`` would pickle its whole contents) and memory holds
    one chunk per worker, never the volume.
    """

    path: str
    offset: int
    shape: tuple[int, ...]
    dtype: str

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        with os_errors(Path(self.path)):  # disk full, say: named, whenever it is computed
            mapped = np.memmap(
                self.path, dtype=self.dtype, mode="r+", offset=self.offset, shape=self.shape
            )
            mapped[key] = value
            mapped.flush()
            del mapped


def dask_data(values: Any) -> dask.array.Array:
    """Values as a dask array: their own chunks, or chunks of whole slices of about 16 MiB."""
    import dask.array

    if isinstance(values, xr.DataArray):
        values = values.data
    if isinstance(values, dask.array.Array):
        return values
    values = np.asarray(values)
    if values.ndim == 0:
        return dask.array.from_array(values)
    per_slice = max(1, values[:1].nbytes)
    return dask.array.from_array(
        values, chunks=(max(1, CHUNK_BYTES // per_slice), *values.shape[1:])
    )


def store_into(data: dask.array.Array, target: Any) -> list[Any]:
    """Delayed stores of every chunk of ``data`` into ``target``, run in parallel.

    The graph is left unoptimised, so that exports of the same volume computed together
    share its read tasks instead of each fusing its own copy of them.
    """
    import dask.array

    stored = dask.array.store(data, target, lock=False, compute=False)
    return stored.to_delayed(optimize_graph=False).ravel().tolist()


def delayed_finish(stored: Any, stages: list[Stage], **kwargs: Any) -> Any:
    """A Delayed that runs :func:`finish` after ``stored``."""
    import dask

    return dask.delayed(finish, pure=False)(stored, stages, **kwargs)
