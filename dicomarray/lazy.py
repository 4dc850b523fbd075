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

    def __array__(self, dtype: Any = None, copy: Any = None, **kwargs: Any) -> np.ndarray:
        stack = self._frame_stack
        if stack is None or self.shape != stack.shape:
            return super().__array__(dtype=dtype, copy=copy, **kwargs)
        values = stack[:]
        return values if dtype is None else values.astype(dtype, copy=False)


def lazy_frames(stack: FrameStack, chunks: Any) -> FrameStackArray:
    """A dask array over ``stack`` whose name depends on the files' paths, sizes and times."""
    name = "dicom-" + tokenize(file_signature(stack.paths), stack.frame_numbers, chunks)
    plain = dask.array.from_array(
        stack,
        chunks=chunks,
        name=name,
        lock=False,
        asarray=False,
        meta=np.empty((0, 0, 0), stack.dtype),
    )
    array = FrameStackArray(plain.dask, plain.name, plain.chunks, meta=plain._meta)
    array._frame_stack = stack
    return array
