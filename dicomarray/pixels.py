"""Reading the stored pixel values of frames: the offset fast path, pydicom's decoders, limits.

Uncompressed little-endian pixel data is read straight from the file at the offset the
index recorded, into the caller's array, without parsing the header again. Every other
transfer syntax goes through :func:`pydicom.pixels.pixel_array`, whose decoders for JPEG,
JPEG-LS, JPEG 2000 and RLE come from the ``codecs`` extra (pylibjpeg).

Nothing here keeps a file open between reads, so a :class:`FrameStack` pickles and travels
to dask workers.
"""

from __future__ import annotations

import copy
import mmap
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from .errors import MissingDecoderError, PixelDataError
from .header import checked_file, read_dataset

#: Largest stored volume (bytes) a series may declare before it is refused unread.
MAX_VOLUME_BYTES = 64 * 2**30
_NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
_DEFLATED = "1.2.840.10008.1.2.1.99"
_LITTLE_ENDIAN_HOST = sys.byteorder == "little"
_PARALLEL_FRAMES = 8
_MMAP_THRESHOLD = 4 * 2**20


@dataclass(frozen=True)
class PixelFormat:
    """How one frame's stored values are laid out: (0028,xxxx) *Image Pixel* attributes."""

    rows: int
    columns: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int

    @property
    def dtype(self) -> np.dtype:
        """Stored value type; bit-packed (1-bit) data unpacks to uint8."""
        if self.bits_allocated == 1:
            return np.dtype("u1")
        kind = "i" if self.pixel_representation == 1 else "u"
        return np.dtype(f"<{kind}{self.bits_allocated // 8}")

    @property
    def frame_bytes(self) -> int:
        """Bytes of one uncompressed frame (bit-packed frames are not byte-aligned)."""
        return (self.rows * self.columns * self.bits_allocated + 7) // 8

    @property
    def byte_aligned(self) -> bool:
        return self.bits_allocated in (8, 16, 32)

    @classmethod
    def from_row(cls, row: pd.Series) -> PixelFormat:
        """The format named by one index row, checked for sizes that make sense."""
        path = row["path"]
        samples = row.get("SamplesPerPixel") or 1
        if samples != 1:
            raise PixelDataError(
                f"{path}: SamplesPerPixel {samples}: only grey images open as volumes"
            )
        try:
            bits = int(row["BitsAllocated"] or 16)
            fmt = cls(
                rows=int(row["Rows"]),
                columns=int(row["Columns"]),
                bits_allocated=bits,
                bits_stored=int(row.get("BitsStored") or bits),
                pixel_representation=int(row.get("PixelRepresentation") or 0),
            )
        except (TypeError, ValueError) as exc:
            raise PixelDataError(f"{path}: unusable image pixel attributes: {exc}") from exc
        if not (0 < fmt.rows <= 65535 and 0 < fmt.columns <= 65535):
            raise PixelDataError(f"{path}: image size {fmt.rows} x {fmt.columns} is not valid")
        if not 0 < fmt.bits_stored <= fmt.bits_allocated:
            raise PixelDataError(
                f"{path}: BitsStored {fmt.bits_stored} does not fit BitsAllocated {bits}"
            )
        if bits not in (1, 8, 16, 32):
            raise PixelDataError(f"{path}: BitsAllocated {bits} is not supported")
        return fmt


class FrameStack:
    """A lazy 3-D array of stored values, one frame per file (or per frame of a file).

    Indexing reads only the frames asked for, each straight into the result. Instances
    hold paths and offsets only (no open files), so they pickle.
    """

    def __init__(self, frames: pd.DataFrame, fmt: PixelFormat) -> None:
        self.paths = [str(p) for p in frames["path"]]
        self.frame_numbers = [int(f) for f in frames["frame"]]
        self.offsets = [_optional_int(v) for v in frames["pixel_data_offset"]]
        self.syntaxes = [str(s or "") for s in frames["TransferSyntaxUID"]]
        #: each frame's slice index in the whole series (subsets keep them)
        self.slice_indices = list(range(len(self.paths)))
        self.format = fmt
        #: (frames, rows, columns); ``shape`` drops the frames axis of a one-frame subset
        self.frames_shape = (len(self.paths), fmt.rows, fmt.columns)
        self.shape: tuple[int, ...] = self.frames_shape
        self.stored_dtype = fmt.dtype.newbyteorder("=")
        self.dtype = self.stored_dtype
        self.ndim = 3
        self.slopes: np.ndarray | None = None
        self.intercepts: np.ndarray | None = None
        self._fast = _LITTLE_ENDIAN_HOST and fmt.byte_aligned

    def rescaled(self, slopes: Any, intercepts: Any) -> FrameStack:
        """The same frames as float32 ``stored * slope + intercept``, one pair per frame.

        (0028,1053) *Rescale Slope* and (0028,1052) *Rescale Intercept*: scalars or one
        value per frame. Each frame is rescaled as it is read, into the float32 result.
        """
        other = copy.copy(self)
        other.slopes = _per_frame(slopes, self.frames_shape[0])
        other.intercepts = _per_frame(intercepts, self.frames_shape[0])
        other.dtype = np.dtype(np.float32)
        return other

    def subset(self, indices: list[int], *, squeeze: bool = False) -> FrameStack:
        """Some of the frames, in the given order; ``squeeze`` makes one frame 2-D."""
        other = copy.copy(self)
        for name in ("paths", "frame_numbers", "offsets", "syntaxes", "slice_indices"):
            setattr(other, name, [getattr(self, name)[i] for i in indices])
        for name in ("slopes", "intercepts"):
            values = getattr(self, name)
            setattr(other, name, None if values is None else values[indices])
        other.frames_shape = (len(indices), *self.frames_shape[1:])
        other.shape = other.frames_shape[1:] if squeeze else other.frames_shape
        other.ndim = len(other.shape)
        return other

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if len(self.shape) == 2:  # a squeezed single frame
            key = (0, *key)
        key = key + (slice(None),) * (3 - len(key))
        picked = np.arange(self.frames_shape[0])[key[0]]
        indices = [int(i) for i in np.atleast_1d(picked)]
        first, last, within = _rows_to_read(key[1], self.frames_shape[1])
        out = empty_buffer((len(indices), last - first, self.frames_shape[2]), self.dtype)
        rows = [(first, last)] * len(indices)
        if len(indices) >= _PARALLEL_FRAMES:
            # reads release the GIL: overlap them, each straight into its slot of out
            list(_reader_pool().map(self.read_into, indices, out, rows))
        else:
            for position, index in enumerate(indices):
                self.read_into(index, out[position], rows[position])
        result = out[(slice(None), within, key[2])]
        return result[0] if np.ndim(picked) == 0 else result

    def read_into(self, index: int, out: np.ndarray, rows: tuple[int, int] | None = None) -> None:
        """Read frame ``index`` (or its rows ``first:last``) into the 2-D array ``out``.

        Rescaled, if this stack is. Uncompressed frames read only the rows asked for.
        """
        rows = rows or (0, self.frames_shape[1])
        if self.slopes is None or self.intercepts is None:
            self._read_stored(index, out, rows)
            return
        stored = np.empty(out.shape, self.stored_dtype)
        self._read_stored(index, stored, rows)
        np.multiply(stored, self.slopes[index], out=out, dtype=np.float32)
        out += self.intercepts[index]

    def _read_stored(self, index: int, out: np.ndarray, rows: tuple[int, int]) -> None:
        path, syntax = self.paths[index], self.syntaxes[index]
        offset = self.offsets[index]
        try:
            if self._fast and syntax in _NATIVE_SYNTAXES and offset is not None:
                row_bytes = self.frames_shape[2] * self.stored_dtype.itemsize
                start = offset + self.frame_numbers[index] * self.format.frame_bytes
                self._read_raw(path, start + rows[0] * row_bytes, out)
            else:
                frame = self._decode(path, self.frame_numbers[index], syntax)
                out[...] = frame[rows[0] : rows[1]]
        except PixelDataError:
            raise
        except Exception as exc:  # noqa: BLE001 - any decoder failure names the file
            raise PixelDataError(
                f"{path}: cannot read pixel data: {type(exc).__name__}: {exc}"
            ) from exc

    def _read_raw(self, path: str, offset: int, out: np.ndarray) -> None:
        with open(path, "rb") as file:
            file.seek(offset)
            got = file.readinto(memoryview(out).cast("B"))  # type: ignore[arg-type]
        if got != out.nbytes:
            raise PixelDataError(
                f"{path}: pixel data truncated: {got} of {out.nbytes} bytes present"
            )
        _fix_unused_bits(out, self.format)

    def _decode(self, path: str, frame: int, syntax: str) -> np.ndarray:
        from pydicom.pixels import pixel_array  # deferred: decoders load plugins on import

        if syntax == _DEFLATED:  # the whole data set is compressed: decode it whole
            array = pixel_array(read_dataset(path, stop_before_pixels=False))
            array = array[frame] if array.ndim == 3 else array
        else:
            with checked_file(path) as file:  # the header within bounds first
                array = pixel_array(file, index=frame)
        if array.shape != self.frames_shape[1:]:
            raise PixelDataError(
                f"{path}: decoded frame has shape {array.shape}, expected {self.frames_shape[1:]}"
            )
        return array


def _rows_to_read(key: Any, n_rows: int) -> tuple[int, int, Any]:
    """The rows ``first:last`` a row index needs, and the index to apply within them."""
    if isinstance(key, int | np.integer):
        row = range(n_rows)[int(key)]  # raises IndexError as numpy would
        return row, row + 1, 0
    if isinstance(key, slice):
        first, last, step = key.indices(n_rows)
        if step > 0:
            return first, max(first, last), slice(None, None, step)
    return 0, n_rows, key


def _per_frame(values: Any, n: int) -> np.ndarray:
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    return np.broadcast_to(flat, (n,)).copy()


def empty_buffer(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array in its own anonymous memory map.

    numpy asks the kernel for transparent huge pages on large arrays; where the kernel
    compacts memory on demand to find them (THP "defrag=madvise", as on many servers),
    touching a fresh 150 MB array costs ~0.4 s instead of ~0.06 s. Pixel buffers are
    written once, front to back, so ordinary pages serve them better.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes < _MMAP_THRESHOLD:
        return np.empty(shape, dtype)
    if not hasattr(mmap, "MAP_ANONYMOUS"):  # Windows: plain anonymous memory
        return np.frombuffer(mmap.mmap(-1, nbytes), dtype=dtype).reshape(shape)
    # MAP_POPULATE: the kernel maps every page at once instead of one fault per 4 KiB page
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
    return np.frombuffer(mmap.mmap(-1, nbytes, flags=flags), dtype=dtype).reshape(shape)


@cache
def _reader_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(
        max(2, min(8, os.cpu_count() or 2)), thread_name_prefix="dicomarray-read"
    )


def _fix_unused_bits(out: np.ndarray, fmt: PixelFormat) -> None:
    """Mask (unsigned) or sign-extend (signed) values stored in fewer bits than allocated."""
    unused = fmt.bits_allocated - fmt.bits_stored
    if unused == 0:
        return
    if fmt.pixel_representation == 1:
        np.left_shift(out, unused, out=out)
        np.right_shift(out, unused, out=out)
    else:
        np.bitwise_and(out, (1 << fmt.bits_stored) - 1, out=out)


def _optional_int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def check_readable(
    frames: pd.DataFrame, fmt: PixelFormat, *, max_bytes: int = MAX_VOLUME_BYTES
) -> None:
    """Refuse, before any read, what cannot be decoded or does not fit.

    Raises
    ------
    MissingDecoderError
        A transfer syntax no installed decoder handles; the message names the syntax and
        the extra to install.
    PixelDataError
        Pixel data shorter than Rows x Columns x frames promise, or a volume larger than
        ``max_bytes``.
    """
    total = fmt.frame_bytes * len(frames)
    if total > max_bytes:
        raise PixelDataError(
            f"{frames['path'].iloc[0]}: the series declares {total / 2**30:.1f} GiB of pixels, "
            f"more than the limit of {max_bytes / 2**30:.1f} GiB"
        )
    for syntax, path in frames.groupby("TransferSyntaxUID", dropna=False)["path"].first().items():
        _check_decoder(str(syntax) if syntax else "", path)
    _check_lengths(frames, fmt)


def _check_lengths(frames: pd.DataFrame, fmt: PixelFormat) -> None:
    """Uncompressed pixel data must hold what Rows x Columns x frames x bits promise."""
    if not fmt.byte_aligned:
        return
    files = frames[frames["TransferSyntaxUID"].isin(_NATIVE_SYNTAXES)].drop_duplicates("path")
    n_frames = _numbers(files["NumberOfFrames"], missing=1)
    need = fmt.frame_bytes * n_frames
    length = _numbers(files["pixel_data_length"], missing=np.inf)
    end = _numbers(files["pixel_data_offset"], missing=-np.inf) + need
    size = _numbers(files["file_size"], missing=np.inf)
    for i in np.flatnonzero((length < need) | (end > size)):
        path = files["path"].iloc[i]
        if length[i] < need[i]:
            raise PixelDataError(
                f"{path}: pixel data holds {int(length[i])} bytes, but {fmt.rows} x "
                f"{fmt.columns} x {int(n_frames[i])} frame(s) x {fmt.bits_allocated} bits "
                f"need {int(need[i])}"
            )
        raise PixelDataError(
            f"{path}: file is truncated: pixel data needs {int(need[i])} bytes from offset "
            f"{int(end[i] - need[i])}, but the file has {int(size[i])} bytes"
        )


def _numbers(column: pd.Series, *, missing: float) -> np.ndarray:
    return np.array([missing if v is None else v for v in column], dtype=np.float64)


def _check_decoder(syntax: str, path: str) -> None:
    if not syntax or syntax in _NATIVE_SYNTAXES:
        return
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise MissingDecoderError(
            f"{path}: no pixel data decoder exists for transfer syntax {syntax}"
        ) from exc
    if not decoder.is_available:
        raise MissingDecoderError(
            f"{path}: transfer syntax {syntax} ({decoder.UID.name}) needs a decoder that is "
            "not installed; install the codecs extra: pip install 'dicomarray[codecs]'"
        )


def file_signature(paths: list[str]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of each file: what makes a dask name change when files do."""
    signature = []
    for path in paths:
        stat = os.stat(path)
        signature.append((path, stat.st_size, stat.st_mtime_ns))
    return signature
