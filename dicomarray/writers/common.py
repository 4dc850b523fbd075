"""What the writers share: temporary names, atomic publishing, chunk targets and stores.

Every writer writes under a temporary name in the destination folder (``.<name>.<hex>.tmp``)
and renames it to the final name only once everything is written, so a failed or
interrupted export never leaves a half-written file under the name the caller asked for.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from ..errors import WriteError
from ..volume import CHUNK_BYTES

if TYPE_CHECKING:
    import dask.array

# --------------------------------------------------------------------------------------------
# Destinations: temporary names, publishing, clean-up
# --------------------------------------------------------------------------------------------


def destination(
    path: str | os.PathLike,
    *,
    overwrite: bool,
    replaceable: Callable[[Path], bool] | None = None,
    kind: str = "file",
) -> Path:
    """The final path, checked, with its parent folder created.

    An existing path is refused unless ``overwrite``; an existing folder is replaced only
    when ``replaceable(folder)`` says it holds a previous export of the same ``kind``, so a
    mistyped path never deletes a folder of other files.
    """
    final = Path(path).expanduser().absolute()
    if final.exists() or final.is_symlink():
        if not overwrite:
            raise WriteError(f"{final} already exists; pass overwrite=True to replace it")
        is_folder = final.is_dir() and not final.is_symlink()
        if is_folder and (replaceable is None or not replaceable(final)):
            raise WriteError(f"{final} is a folder that is not a {kind} export; not replacing it")
        if not is_folder and replaceable is not None:
            raise WriteError(f"{final} is a file; a {kind} export is a folder")
    final.parent.mkdir(parents=True, exist_ok=True)
    return final


def temporary_sibling(final: Path) -> Path:
    """A fresh hidden name beside ``final``, on the same file system, so rename is atomic."""
    return final.with_name(f".{final.name}.{uuid.uuid4().hex[:12]}.tmp")


def publish(temporary: Path, final: Path, *, overwrite: bool) -> Path:
    """Rename a finished temporary file or folder to its final name."""
    if final.exists() or final.is_symlink():
        if not overwrite:
            discard(temporary)
            raise WriteError(f"{final} appeared while writing; pass overwrite=True to replace it")
        if final.is_dir() and not final.is_symlink():
            # a folder cannot be replaced in one rename: move the old one aside first
            old = temporary_sibling(final)
            os.rename(final, old)
            os.rename(temporary, final)
            discard(old)
            return final
    os.replace(temporary, final)
    return final


def discard(path: Path) -> None:
    """Remove a temporary file or folder if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def run_or_delay(delayed: Any, temporaries: Iterable[Path], *, compute: bool) -> Any:
    """Compute an export's Delayed now (cleaning up on failure) or hand it back.

    With ``compute=False`` nothing cleans up after a computation that fails later: the
    temporary names (``.<name>.<hex>.tmp``) may remain, the final names never appear.
    """
    if not compute:
        return delayed
    try:
        return compute_and_wait(delayed)[0]
    except BaseException:
        for path in temporaries:
            discard(path)
        raise


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
    moves: list[tuple[Path, Path]],
    *,
    overwrite: bool,
    then: Callable[[], Any] | None = None,
    result: Any = None,
) -> Any:
    """Task run after all chunks are stored: an optional last step, then renames into place.

    ``stored`` is only there so that dask runs this after the store tasks. Returns
    ``result``, or the first final path.
    """
    del stored
    if then is not None:
        then()
    for temporary, final in moves:
        publish(temporary, final, overwrite=overwrite)
    return result if result is not None or not moves else moves[0][1]


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


def delayed_finish(stored: Any, moves: list[tuple[Path, Path]], **kwargs: Any) -> Any:
    """A Delayed that runs :func:`finish` after ``stored``."""
    import dask

    return dask.delayed(finish, pure=False)(stored, moves, **kwargs)
