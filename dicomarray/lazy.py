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
        """Selecting slices (along ``z`` only) keeps reading straight from the files."""
        stack = self.frame_stack
        z_key = _z_only(key, self.ndim) if stack is not None and self.ndim == 3 else None
        if stack is None or z_key is None:
            return super().__getitem__(key)
        picked = np.arange(self.shape[0])[z_key]
        subset = stack.subset(np.atleast_1d(picked).tolist(), squeeze=np.ndim(picked) == 0)
        per_chunk = min(self.chunks[0][0], max(1, subset.frames_shape[0]))
        chunks = subset.shape if subset.ndim == 2 else (per_chunk, *subset.shape[1:])
        return lazy_frames(subset, chunks)

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


def _z_only(key: Any, ndim: int) -> Any:
    """The ``z`` part of a key that selects slices and nothing else, else None.

    Slices, single indices and 1-D lists or arrays of indices qualify.
    """
    key = key if isinstance(key, tuple) else (key,)
    if len(key) > ndim or not key:
        return None
    z_key, rest = key[0], key[1:]
    if any(not (isinstance(k, slice) and k == slice(None)) for k in rest):
        return None
    if isinstance(z_key, slice) or (
        isinstance(z_key, int | np.integer) and not isinstance(z_key, bool)
    ):
        return z_key
    if isinstance(z_key, list | np.ndarray):
        indices = np.asarray(z_key)
        if indices.ndim == 1 and indices.dtype.kind in "iu":
            return indices
    return None
