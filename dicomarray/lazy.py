"""The dask array over a FrameStack: deterministic names, fused slicing, one-copy loads.

``dask.array.from_array`` gives slicing that is fused into the reads (a picture of one
slice reads one file). Loading a whole volume the ordinary way computes every chunk and
then concatenates them into a second array; :class:`FrameStackArray` instead reads every
frame straight into one array when numpy asks for the whole untouched volume (this is
what ``DataArray.values`` does). Any operation on it gives a plain dask array, and it
pickles as one, so nothing else changes.
"""

from __future__ import annotations

from typing import Any

import dask.array
import numpy as np
from dask.base import tokenize

from .pixels import FrameStack, file_signature


class FrameStackArray(dask.array.Array):
    """A dask array whose ``__array__`` reads all frames into one array, once."""

    _frame_stack: FrameStack | None = None

    @property
    def frame_stack(self) -> FrameStack | None:
        """The frames behind this very array, or None once anything changed it."""
        stack = self._frame_stack
        return stack if stack is not None and self.shape == stack.shape else None

    def __getitem__(self, key: Any) -> Any:
        """Selecting frames (along ``z`` and the extra dims only) keeps reading straight
        from the files."""
        stack = self.frame_stack
        grid_key = _grid_only(key, self.ndim, len(stack.grid)) if stack is not None else None
        if stack is None or grid_key is None:
            return super().__getitem__(key)
        subset = stack.take(stack.positions(grid_key))
        kept = [i for i, k in enumerate(grid_key) if not _is_index(k)]
        kept += list(range(len(grid_key), len(stack.grid)))
        chunks = tuple(
            min(self.chunks[axis][0], max(1, size))
            for axis, size in zip(kept, subset.grid, strict=True)
        )
        return lazy_frames(subset, (*chunks, *subset.shape[len(subset.grid) :]))

    def __array__(self, dtype: Any = None, copy: Any = None, **kwargs: Any) -> np.ndarray:
        stack = self.frame_stack
        if stack is None:
            return super().__array__(dtype=dtype, copy=copy, **kwargs)
        values = stack[:]
        return values if dtype is None else values.astype(dtype, copy=False)


def lazy_frames(stack: FrameStack, chunks: Any) -> FrameStackArray:
    """A dask array over ``stack`` whose name depends on the files' paths, sizes and times."""
    token = tokenize(
        file_signature(stack.paths),
        stack.grid,
        stack.frame_numbers,
        stack.slopes,
        stack.intercepts,
        stack.padding,
        chunks,
    )
    name = ("dicom-" if stack.slopes is None else "dicom-rescaled-") + token
    plain = dask.array.from_array(
        stack,
        chunks=chunks,
        name=name,
        lock=False,
        asarray=False,
        meta=np.empty((0,) * stack.ndim, stack.dtype),
    )
    array = FrameStackArray(plain.dask, plain.name, plain.chunks, meta=plain._meta)
    array._frame_stack = stack
    return array


def rescaled_frames(
    data: Any, slope: Any, intercept: Any, padding: tuple[Any, Any, float] | None = None
) -> FrameStackArray | None:
    """``data * slope + intercept`` as float32, rescaled as each frame is read.

    Only for the untouched stored values of a series (else None: use ordinary dask
    arithmetic). Loading the result then fills one float32 array and nothing else.
    ``padding`` as :meth:`FrameStack.rescaled` takes it.
    """
    stack = data.frame_stack if isinstance(data, FrameStackArray) else None
    if stack is None or stack.slopes is not None:
        return None
    return lazy_frames(stack.rescaled(slope, intercept, padding), data.chunks)


def _grid_only(key: Any, ndim: int, n_grid: int) -> tuple[Any, ...] | None:
    """The grid part of a key that selects frames and nothing else, else None.

    Slices, single indices and at most one 1-D list or array of indices qualify (where
    numpy's and dask's fancy indexing agree); rows and columns must be untouched.
    """
    key = key if isinstance(key, tuple) else (key,)
    if len(key) > ndim or not key or any(k is None or k is Ellipsis for k in key):
        return None
    grid_key, rest = key[:n_grid], key[n_grid:]
    if any(not (isinstance(k, slice) and k == slice(None)) for k in rest):
        return None
    parts = []
    for k in grid_key:
        if isinstance(k, slice) or _is_index(k):
            parts.append(k)
        elif isinstance(k, list | np.ndarray):
            indices = np.asarray(k)
            if indices.ndim != 1 or indices.dtype.kind not in "iu":
                return None
            parts.append(indices)
        else:
            return None
    if sum(isinstance(p, np.ndarray) for p in parts) > 1:
        return None
    return tuple(parts)


def _is_index(key: Any) -> bool:
    return isinstance(key, int | np.integer) and not isinstance(key, bool)
