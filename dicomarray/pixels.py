"""Reading the stored pixel values of frames: the offset fast path, pydicom's decoders, limits.

Uncompressed little-endian grey pixel data is read straight from the file at the offset
the index recorded, into the caller's array, without parsing the header again; so are
1-bit frames, unpacked as they are read. Colour (3 samples) and every other transfer
syntax go through :func:`pydicom.pixels.pixel_array`, whose decoders for JPEG, JPEG-LS,
JPEG 2000 and RLE come from the ``codecs`` extra (pylibjpeg). Colour comes out as RGB
``(rows, columns, 3)``: pydicom undoes either planar configuration and converts YBR to
RGB once (not again after a decoder that converts itself, as JPEG baseline's usually
does); palette colour is refused. A deflated data set is one zlib stream: the
frames of one deflated file that one read asks for come from one inflate
(:func:`decode_deflated`), kept only while they are copied out.

Nothing here keeps a file open between reads, so a :class:`FrameStack` pickles and travels
to dask workers. The threads that overlap reads are made again in a forked child
(multiprocessing fork pools, PyTorch DataLoader workers), which inherits none of them.

Limits
------
Checked when a series is opened, from the index alone, before anything is read or
allocated (:func:`check_readable`):

- the stored values in memory (Rows x Columns x frames x bytes per sample; 1-bit data
  unpacks to one byte per pixel) may not exceed ``max_bytes`` (:data:`MAX_VOLUME_BYTES`,
  64 GiB, by default);
- uncompressed pixel data must hold the Rows x Columns x frames x BitsAllocated bits it
  promises (bit-packed data included) and fit in its file;
- no file may claim more decoded bits (Rows x Columns x samples x frames x BitsAllocated)
  than its transfer syntax can make of the file's size:

  ============================  ==============================================
  transfer syntax               most decoded bits per bit of file
  ============================  ==============================================
  native (either endianness)    1
  RLE Lossless                  64 (a 2-byte replicate run gives 128 bytes)
  Deflated Explicit VR          1032 (zlib's largest expansion)
  JPEG baseline, extended       32 x BitsAllocated (2 bits per 8 x 8 block)
  JPEG lossless (14, 14 SV1)    BitsAllocated (1 bit per sample)
  JPEG-LS, JPEG 2000, others    65536, a plausibility bound: run modes and empty
                                code blocks code blank areas in a few bits (a
                                blank 2048 x 2048 16-bit frame is 162 bytes of
                                JPEG 2000, 52,000 times)
  ============================  ==============================================

Checked as each frame is decoded (:func:`decode_frame`):

- a JPEG, JPEG-LS or JPEG 2000 frame must declare, in its own SOF or SIZ header, the
  Rows x Columns x samples of the DICOM header: decoders allocate what the codestream
  declares;
- every header is walked within :class:`~dicomarray.header.HeaderLimits` before pydicom
  parses it; a deflated data set may not inflate past its pixel data plus
  ``max_header_bytes`` (64 MiB);
- any failure of a decoder (including ``MemoryError`` and ``BaseException`` panics from
  compiled decoders), and running out of memory for a result, is a
  :class:`~dicomarray.errors.PixelDataError` naming the file and the frame.
"""

from __future__ import annotations

import copy
import mmap
import os
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, cast

import numpy as np
import pandas as pd
from pydicom import uid
from pydicom.tag import BaseTag, Tag

from .codestream import declared_size
from .errors import DicomArrayError, MissingDecoderError, PixelDataError
from .header import checked_file, open_regular, read_dataset

#: Largest stored volume (bytes) a series may declare before it is refused unread.
MAX_VOLUME_BYTES = 64 * 2**30
_NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
_DEFLATED = "1.2.840.10008.1.2.1.99"
#: Most decoded bits one bit of a file can give, per transfer syntax: exact bounds of each
#: coding (see the module docstring); JPEG processes are in ``_SAMPLES_PER_BIT``.
EXPANSION_LIMITS: dict[str, float] = {
    "": 1.0,  # no transfer syntax recorded: native
    "1.2.840.10008.1.2": 1.0,
    "1.2.840.10008.1.2.1": 1.0,
    "1.2.840.10008.1.2.2": 1.0,  # explicit VR big endian
    _DEFLATED: 1032.0,  # zlib's largest expansion
    "1.2.840.10008.1.2.5": 64.0,  # RLE: a 2-byte replicate run gives at most 128 bytes
}
#: Most samples one encoded bit can give in the Huffman-coded JPEG processes: sequential
#: DCT codes each 8 x 8 block in 2 bits at least, lossless each sample in 1 bit at least.
_SAMPLES_PER_BIT: dict[str, float] = {
    "1.2.840.10008.1.2.4.50": 32.0,
    "1.2.840.10008.1.2.4.51": 32.0,
    "1.2.840.10008.1.2.4.57": 1.0,
    "1.2.840.10008.1.2.4.70": 1.0,
}
#: Syntaxes whose frames declare their own image size, which their decoders allocate
_CODESTREAM_SYNTAXES = frozenset(
    uid.JPEGTransferSyntaxes + uid.JPEGLSTransferSyntaxes + uid.JPEG2000TransferSyntaxes
)
_FRAME_TABLE_TAGS: list[BaseTag | int] = [Tag("NumberOfFrames")]
#: JPEG-LS, JPEG 2000, HTJ2K and any other syntax: their run modes and empty code blocks
#: have no useful exact bound, so this plausibility bound applies (a blank 2048 x 2048
#: 16-bit frame is 162 bytes of JPEG 2000: 52,000 times).
PLAUSIBLE_EXPANSION = float(2**16)
#: Colour that opens, read as RGB: pydicom converts YBR (once: not again after a decoder
#: that converts itself, as JPEG baseline's does)
COLOUR_PHOTOMETRICS = frozenset(
    ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")
)
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
    #: (0028,0002) *Samples per Pixel*: 1 (grey) or 3 (colour, read as RGB)
    samples: int = 1
    #: (0028,0004) *Photometric Interpretation*: what pydicom converts colour from
    photometric: str = "MONOCHROME2"

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """One frame as read: ``(rows, columns)``, or ``(rows, columns, 3)`` (RGB) for colour."""
        return (self.rows, self.columns) if self.samples == 1 else (self.rows, self.columns, 3)

    @property
    def dtype(self) -> np.dtype:
        """Stored value type; bit-packed (1-bit) data unpacks to uint8."""
        if self.bits_allocated == 1:
            return np.dtype("u1")
        kind = "i" if self.pixel_representation == 1 else "u"
        return np.dtype(f"<{kind}{self.bits_allocated // 8}")

    @property
    def frame_bits(self) -> int:
        """Bits of one uncompressed frame; YBR_FULL_422 stores two samples a pixel
        (PS3.3 C.7.6.3.1.2)."""
        stored = 2 if self.photometric == "YBR_FULL_422" else self.samples
        return self.rows * self.columns * stored * self.bits_allocated

    @property
    def frame_bytes(self) -> int:
        """Bytes of one uncompressed frame (bit-packed frames are not byte-aligned)."""
        return (self.frame_bits + 7) // 8

    @property
    def array_frame_bytes(self) -> int:
        """Bytes of one frame in memory, as read (bit-packed frames unpack to a byte each)."""
        return self.rows * self.columns * self.samples * self.dtype.itemsize

    @property
    def byte_aligned(self) -> bool:
        return self.bits_allocated in (8, 16, 32)

    @classmethod
    def from_row(cls, row: pd.Series) -> PixelFormat:
        """The format named by one index row, checked for sizes that make sense."""
        path = row["path"]
        try:
            bits = _whole_number(row.get("BitsAllocated"), 16)
            fmt = cls(
                rows=_whole_number(row.get("Rows"), None),
                columns=_whole_number(row.get("Columns"), None),
                bits_allocated=bits,
                bits_stored=_whole_number(row.get("BitsStored"), bits),
                pixel_representation=_whole_number(row.get("PixelRepresentation"), 0),
                samples=_whole_number(row.get("SamplesPerPixel"), 1),
                photometric=_photometric(row.get("PhotometricInterpretation")),
            )
        except (TypeError, ValueError) as exc:
            raise PixelDataError(f"{path}: unusable image pixel attributes: {exc}") from exc
        _check_colour(path, fmt)
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
    """A lazy array of stored values over a grid of frames: ``(*grid, rows, columns)``.

    The frames are one flat list (one frame per file, or per frame of a file) in C order
    over ``grid``: ``(slices,)`` for one volume, ``(volumes, slices)`` for a 4-D series.
    Indexing reads only the frames asked for, each straight into the result. Instances
    hold paths and offsets only (no open files), so they pickle.
    """

    def __init__(
        self, frames: pd.DataFrame, fmt: PixelFormat, grid: tuple[int, ...] | None = None
    ) -> None:
        self.paths = [str(p) for p in frames["path"]]
        self.frame_numbers = [int(f) for f in frames["frame"]]
        #: (0028,0008) *Number of Frames* of each frame's file
        self.file_frames = [_optional_int(n) or 1 for n in frames["NumberOfFrames"]]
        self.offsets = [_optional_int(v) for v in frames["pixel_data_offset"]]
        self.syntaxes = [_syntax(s) for s in frames["TransferSyntaxUID"]]
        #: each frame's place in the whole series' flat frame list (subsets keep them)
        self.slice_indices = list(range(len(self.paths)))
        self.format = fmt
        #: (frames, rows, columns[, 3]): the flat frame list, whatever the grid
        self.frames_shape = (len(self.paths), *fmt.frame_shape)
        self.grid: tuple[int, ...] = (len(self.paths),) if grid is None else tuple(grid)
        if int(np.prod(self.grid)) != len(self.paths):
            raise ValueError(f"a grid of {self.grid} does not hold {len(self.paths)} frames")
        self.stored_dtype = fmt.dtype.newbyteorder("=")
        self.dtype = self.stored_dtype
        self.slopes: np.ndarray | None = None
        self.intercepts: np.ndarray | None = None
        #: (low, high, fill) of :meth:`rescaled`: per-frame stored padding ranges, a fill
        self.padding: tuple[np.ndarray, np.ndarray, float] | None = None
        # colour goes through pydicom, which handles planar configuration and YBR
        self._fast = _LITTLE_ENDIAN_HOST and fmt.byte_aligned and fmt.samples == 1
        # Siemens mosaics (dicomarray.mosaic): a frame with a tile number is that tile of
        # its stored frame; ``format`` is then the stored frame's, for offsets and decoding
        self.tiles, self.format = mosaic_tiles(frames, fmt)

    @property
    def shape(self) -> tuple[int, ...]:
        """``(*grid, rows, columns)`` (``+ (3,)`` for colour); a frame taken alone has no
        grid dims."""
        return (*self.grid, *self.frames_shape[1:])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def rescaled(
        self, slopes: Any, intercepts: Any, padding: tuple[Any, Any, float] | None = None
    ) -> FrameStack:
        """The same frames as float32 ``stored * slope + intercept``, one pair per frame.

        (0028,1053) *Rescale Slope* and (0028,1052) *Rescale Intercept*: scalars or one
        value per frame (in the flat frame order: C order over the grid). Each frame is
        rescaled as it is read, into the float32 result. ``padding`` is
        ``(low, high, fill)``: stored values from ``low`` to ``high`` (scalars or one per
        frame, NaN for none) become ``fill`` (see :func:`fill_padding`).
        """
        other = copy.copy(self)
        n = self.frames_shape[0]
        other.slopes = _per_frame(slopes, n)
        other.intercepts = _per_frame(intercepts, n)
        if padding is not None:
            low, high, fill = padding
            other.padding = (_per_frame(low, n, np.float64), _per_frame(high, n, np.float64), fill)
        other.dtype = np.dtype(np.float32)
        return other

    def take(self, picked: np.ndarray) -> FrameStack:
        """The frames at flat positions ``picked``, arranged as its shape (a 0-d array
        gives one 2-D frame)."""
        picked = np.asarray(picked, dtype=np.int64)
        indices = picked.ravel().tolist()
        other = copy.copy(self)
        names = ("paths", "frame_numbers", "file_frames", "offsets", "syntaxes", "slice_indices")
        for name in names:
            setattr(other, name, [getattr(self, name)[i] for i in indices])
        other.tiles = [self.tiles[i] for i in indices]
        for name in ("slopes", "intercepts"):
            values = getattr(self, name)
            setattr(other, name, None if values is None else values[indices])
        if self.padding is not None:
            low, high, fill = self.padding
            other.padding = (low[indices], high[indices], fill)
        other.frames_shape = (len(indices), *self.frames_shape[1:])
        other.grid = picked.shape
        return other

    def positions(self, key: tuple[Any, ...]) -> np.ndarray:
        """Flat frame positions selected by a key over the grid dims (numpy semantics)."""
        return np.arange(self.frames_shape[0]).reshape(self.grid)[key]

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        n_grid = len(self.grid)
        picked = np.asarray(self.positions(key[:n_grid]))
        indices = [int(i) for i in picked.ravel()]
        first, last, within = _rows_to_read(key[n_grid], self.frames_shape[1])
        out = self._allocate((len(indices), last - first, *self.frames_shape[2:]), indices)
        self._read_frames(indices, out, (first, last))
        result = out[(slice(None), within, *key[n_grid + 1 :])]
        return result.reshape(picked.shape + result.shape[1:])

    def _allocate(self, shape: tuple[int, ...], indices: list[int]) -> np.ndarray:
        """The result array, or a PixelDataError naming the files when memory runs out."""
        try:
            return empty_buffer(shape, self.dtype)
        except (MemoryError, OSError) as exc:  # mmap reports ENOMEM as an OSError
            first = self.paths[indices[0]] if indices else "no frames"
            nbytes = int(np.prod(shape)) * self.dtype.itemsize
            raise PixelDataError(
                f"{first}: cannot allocate {nbytes / 2**20:.1f} MiB for {len(indices)} "
                f"frame(s) of pixels: {exc}"
            ) from exc

    def _read_frames(self, indices: list[int], out: np.ndarray, rows: tuple[int, int]) -> None:
        """Rows ``first:last`` of frames ``indices`` into ``out``, one frame per slot."""
        deflated = self._by_deflated_file(indices)
        for path, group in deflated.items():
            self._read_deflated(path, [indices[i] for i in group], [out[i] for i in group], rows)
        done = {position for group in deflated.values() for position in group}
        mosaics = self._by_decoded_mosaic(indices, done)
        for group in mosaics:
            self._read_tiles([indices[i] for i in group], [out[i] for i in group], rows)
        done.update(position for group in mosaics for position in group)
        slots = [position for position in range(len(indices)) if position not in done]
        if len(slots) >= _PARALLEL_FRAMES:
            # reads release the GIL: overlap them, each straight into its slot of out
            list(
                _reader_pool().map(
                    self.read_into,
                    [indices[i] for i in slots],
                    [out[i] for i in slots],
                    [rows] * len(slots),
                )
            )
        else:
            for position in slots:
                self.read_into(indices[position], out[position], rows)

    def _by_deflated_file(self, indices: list[int]) -> dict[str, list[int]]:
        """Positions in ``indices`` of the frames of each deflated file holding several.

        A deflated data set is one zlib stream: any of its frames costs inflating the
        whole file, so the frames of one file are read from one inflate.
        """
        groups: dict[str, list[int]] = {}
        for position, index in enumerate(indices):
            if self.syntaxes[index] == _DEFLATED:
                groups.setdefault(self.paths[index], []).append(position)
        return {path: group for path, group in groups.items() if len(group) > 1}

    def _by_decoded_mosaic(self, indices: list[int], done: set[int]) -> list[list[int]]:
        """Positions in ``indices`` (not ``done``) of the tiles of each mosaic holding
        several that a decoder reads: it decodes the whole stored frame, so its tiles are
        cut from one decode (uncompressed tiles read only their own rows)."""
        groups: dict[tuple[str, int], list[int]] = {}
        for position, index in enumerate(indices):
            native = self.syntaxes[index] in _NATIVE_SYNTAXES and self.offsets[index] is not None
            if self.tiles[index] is not None and not native and position not in done:
                key = (self.paths[index], self.frame_numbers[index])
                groups.setdefault(key, []).append(position)
        return [group for group in groups.values() if len(group) > 1]

    def _read_tiles(self, indices: list[int], out: list[np.ndarray], rows: tuple[int, int]) -> None:
        """Tiles ``indices``, all of one stored mosaic frame, into ``out``: one decode."""
        stored = np.empty((self.format.rows, self.format.columns), self.stored_dtype)
        self._read_frame_rows(indices[0], stored, (0, self.format.rows))
        for index, slot in zip(indices, out, strict=True):
            (first, last), columns = self._stored_rows(index, rows)
            self._store(index, stored[first:last, columns], slot)

    def _read_deflated(
        self, path: str, indices: list[int], out: list[np.ndarray], rows: tuple[int, int]
    ) -> None:
        """Frames ``indices``, all of the deflated file ``path``, into ``out``: one inflate.

        The inflated file lives only while its frames are copied out.
        """
        decoded = decode_deflated(path)
        for index, slot in zip(indices, out, strict=True):
            number = self.frame_numbers[index]
            if not 0 <= number < len(decoded):
                raise PixelDataError(
                    f"{path}: frame {number}: the file decodes to {len(decoded)} frame(s)"
                )
            frame = self._checked_shape(path, number, decoded[number])
            (first, last), columns = self._stored_rows(index, rows)
            self._store(index, frame[first:last, columns], slot)

    def read_into(self, index: int, out: np.ndarray, rows: tuple[int, int] | None = None) -> None:
        """Read frame ``index`` (or its rows ``first:last``) into the frame array ``out``.

        Rescaled, if this stack is. Uncompressed frames read only the rows asked for.
        """
        rows = rows or (0, self.frames_shape[1])
        if self.slopes is None or self.intercepts is None:
            self._read_stored(index, out, rows)
            return
        stored = np.empty(out.shape, self.stored_dtype)
        self._read_stored(index, stored, rows)
        self._store(index, stored, out)

    def _store(self, index: int, stored: np.ndarray, out: np.ndarray) -> None:
        """Frame ``index``'s stored values into ``out``: rescaled and padded if this stack is."""
        if self.slopes is None or self.intercepts is None:
            out[...] = stored
            return
        np.multiply(stored, self.slopes[index], out=out, dtype=np.float32)
        out += self.intercepts[index]
        if self.padding is not None:
            low, high, fill = self.padding
            fill_padding(stored, out, low[index], high[index], fill)

    def _read_stored(self, index: int, out: np.ndarray, rows: tuple[int, int]) -> None:
        if self.tiles[index] is None:
            self._read_frame_rows(index, out, rows)
            return
        stored_rows, columns = self._stored_rows(index, rows)
        # a mosaic tile: its rows of the stored frame, all columns, then the tile's columns
        band = np.empty((stored_rows[1] - stored_rows[0], self.format.columns), out.dtype)
        self._read_frame_rows(index, band, stored_rows)
        out[...] = band[:, columns]

    def _stored_rows(self, index: int, rows: tuple[int, int]) -> tuple[tuple[int, int], slice]:
        """Rows ``first:last`` of frame ``index`` as rows and columns of its stored frame."""
        tile = self.tiles[index]
        if tile is None:
            return rows, slice(None)
        tile_rows, tile_columns = self.frames_shape[1:]
        across = self.format.columns // tile_columns
        top, left = (tile // across) * tile_rows, (tile % across) * tile_columns
        return (top + rows[0], top + rows[1]), slice(left, left + tile_columns)

    def _read_frame_rows(self, index: int, out: np.ndarray, rows: tuple[int, int]) -> None:
        """Rows ``first:last`` of the stored frame of frame ``index`` into ``out``."""
        path, syntax = self.paths[index], self.syntaxes[index]
        offset = self.offsets[index]
        native = syntax in _NATIVE_SYNTAXES and offset is not None
        if native and self.format.bits_allocated == 1:
            self._read_bits(path, cast(int, offset), self.frame_numbers[index], out, rows)
            return
        if native and self._fast:
            row_bytes = self.format.columns * self.stored_dtype.itemsize
            start = cast(int, offset) + self.frame_numbers[index] * self.format.frame_bytes
            self._read_raw(path, start + rows[0] * row_bytes, out)
            return
        number = self.frame_numbers[index]
        frame = decode_frame(
            path, number, syntax, self.format, offset=offset, n_frames=self.file_frames[index]
        )
        out[...] = self._checked_shape(path, number, frame)[rows[0] : rows[1]]

    def _checked_shape(self, path: str, number: int, frame: np.ndarray) -> np.ndarray:
        expected = self.format.frame_shape
        if frame.shape != expected:
            raise PixelDataError(
                f"{path}: frame {number}: decoded frame has shape {frame.shape}, expected "
                f"{expected}"
            )
        return frame

    def _read_raw(self, path: str, offset: int, out: np.ndarray) -> None:
        _read_exactly(path, offset, memoryview(out).cast("B"))  # type: ignore[arg-type]
        _fix_unused_bits(out, self.format)

    def _read_bits(
        self, path: str, offset: int, frame: int, out: np.ndarray, rows: tuple[int, int]
    ) -> None:
        """Rows of a 1-bit frame: bit-packed frames follow each other with no padding.

        (pydicom 3.0 cannot pick a frame that starts inside a byte.)
        """
        columns = self.format.columns
        first_bit = (frame * self.format.rows + rows[0]) * columns
        n_bits = (rows[1] - rows[0]) * columns
        skip = first_bit % 8
        packed = bytearray((skip + n_bits + 7) // 8)
        _read_exactly(path, offset + first_bit // 8, memoryview(packed))
        bits = np.unpackbits(np.frombuffer(packed, np.uint8), bitorder="little")
        bits = bits[skip : skip + n_bits]
        out[...] = bits.reshape(out.shape)


def _read_exactly(path: str, offset: int, buffer: memoryview) -> None:
    """Fill ``buffer`` with the file's bytes from ``offset``, or refuse naming the file."""
    try:
        with open(path, "rb") as file:
            file.seek(offset)
            got = file.readinto(buffer)
    except OSError as exc:
        raise PixelDataError(f"{path}: cannot read pixel data: {exc}") from exc
    if got != buffer.nbytes:
        raise PixelDataError(
            f"{path}: pixel data truncated: {got} of {buffer.nbytes} bytes present"
        )


def decode_frame(
    path: str,
    frame: int,
    syntax: str,
    fmt: PixelFormat,
    *,
    offset: int | None = None,
    n_frames: int = 1,
) -> np.ndarray:
    """One frame's stored values through pydicom's decoders: the one door to decoder code.

    Third-party decoders fail in every way there is: ``Exception`` subclasses, a
    ``MemoryError``, and ``BaseException`` subclasses such as the ``PanicException``
    pylibjpeg-rle (Rust, pyo3) raises on some corrupt frames, which passes through every
    ``except Exception``. All of them become a :class:`PixelDataError` here; only
    ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` pass, as they must.
    A JPEG, JPEG-LS or JPEG 2000 frame must declare the image size of the DICOM header in
    its own codestream, which is what its decoder allocates, before it is decoded.

    Parameters
    ----------
    path, frame, syntax, fmt
        The file, the 0-based frame in it, its transfer syntax and the image format.
    offset : int, optional
        Where the (7FE0,0010) *Pixel Data* value starts, as the index records it; found
        by parsing the header when not given.
    n_frames : int, default 1
        The file's (0028,0008) *Number of Frames*.

    Raises
    ------
    PixelDataError
        Naming the file, the frame and what the decoder raised or the codestream declared.
    """
    return _decoding(
        f"{path}: frame {frame}", _run_decoder, path, frame, syntax, fmt, offset, n_frames
    )


def decode_deflated(path: str) -> np.ndarray:
    """Every frame (frames, rows, columns) of a Deflated Explicit VR Little Endian file.

    The whole data set is one zlib stream, so one frame costs as much as all of them:
    readers wanting several frames of one file take them from one call. Failures are
    :class:`PixelDataError` as in :func:`decode_frame`.
    """
    return _decoding(f"{path}", _inflated_frames, path)


def _decoding(where: str, decoder: Any, *args: Any) -> np.ndarray:
    """``decoder(*args)``, any failure of it a :class:`PixelDataError` starting ``where``."""
    try:
        return decoder(*args)
    except (KeyboardInterrupt, SystemExit, GeneratorExit, DicomArrayError):
        raise
    except BaseException as exc:  # noqa: BLE001 - a decoder's panic is a BaseException
        raise PixelDataError(
            f"{where}: cannot decode pixel data: {type(exc).__name__}: {exc}"
        ) from exc


def _inflated_frames(path: str) -> np.ndarray:
    from pydicom.pixels import pixel_array  # deferred: decoders load plugins on import

    # read_dataset bounds the inflated size by the header limit and the pixel data
    dataset = read_dataset(path, stop_before_pixels=False)
    array = pixel_array(dataset)
    # one frame comes without a frames axis (a colour one is 3-D all the same)
    n_frames = _optional_int(dataset.get("NumberOfFrames")) or 1
    return array if n_frames > 1 else array[np.newaxis]


def _run_decoder(
    path: str, frame: int, syntax: str, fmt: PixelFormat, offset: int | None, n_frames: int
) -> np.ndarray:
    from pydicom.pixels import pixel_array  # deferred: decoders load plugins on import

    if syntax == _DEFLATED:  # the whole data set is compressed: decode it whole
        return _inflated_frames(path)[frame]
    encapsulated = uid.UID(syntax).is_encapsulated
    if encapsulated and offset is not None and n_frames > 1:
        # a frame of a multi-frame file, decoded from its own bytes: no header is parsed
        # (pydicom handed the file parses every per-frame group again for each frame), so
        # only the items need checking
        with open_regular(path) as file:
            _check_item_lengths(file, path, offset)
            encoded = _checked_frame_bytes(file, path, frame, offset, n_frames, syntax, fmt)
        return _decoded(encoded, syntax, fmt)
    with checked_file(path) as file:  # the header within bounds first
        if encapsulated:
            if offset is None:  # an index made without offsets: find the pixel data
                offset, n_frames = _encapsulated_start(file, path)
            _check_item_lengths(file, path, offset)
            if syntax in _CODESTREAM_SYNTAXES:  # checked only: pydicom reads them itself
                _checked_frame_bytes(file, path, frame, offset, n_frames, syntax, fmt)
        return pixel_array(file, index=frame)  # pydicom reads from the file's start


def _checked_frame_bytes(
    file: BinaryIO, path: str, frame: int, offset: int, n_frames: int, syntax: str, fmt: PixelFormat
) -> bytes:
    """The bytes of one encapsulated frame; a JPEG, JPEG-LS or JPEG 2000 codestream is
    checked against the header first (see :func:`_check_codestream`)."""
    encoded = _encoded_frame(file, frame, offset, n_frames)
    if syntax in _CODESTREAM_SYNTAXES:
        _check_codestream(path, frame, encoded, fmt)
    return encoded


def _decoded(encoded: bytes, syntax: str, fmt: PixelFormat) -> np.ndarray:
    """One encapsulated frame decoded from its own bytes, with the image format given.

    For the frames of a multi-frame file: handing pydicom the file makes it parse every
    per-frame functional group again for each frame (0.5 s a frame for 240 frames).
    Colour comes out as RGB: pydicom converts YBR unless the decoder did.
    """
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder  # deferred: decoders load plugins on import

    options: dict[str, Any] = {  # pydicom types its **kwargs as one TypedDict
        "rows": fmt.rows,
        "columns": fmt.columns,
        "samples_per_pixel": fmt.samples,
        "bits_allocated": fmt.bits_allocated,
        "bits_stored": fmt.bits_stored,
        "pixel_representation": fmt.pixel_representation,
        "photometric_interpretation": fmt.photometric,
        "number_of_frames": 1,
        "planar_configuration": 0,
    }
    # pydicom decodes bytes as encapsulated pixel data: one frame, one fragment
    array, _ = get_decoder(syntax).as_array(encapsulate([encoded]), **options)
    return array


def _encoded_frame(file: BinaryIO, frame: int, offset: int, n_frames: int) -> bytes:
    """The bytes of one frame of encapsulated pixel data, and no other frame's."""
    from pydicom.encaps import get_frame

    file.seek(offset)
    return get_frame(file, frame, number_of_frames=n_frames)


def _check_item_lengths(file: BinaryIO, path: str, offset: int) -> None:
    """Refuse encapsulated items that claim more bytes than the file holds.

    Readers allocate an item's declared length before reading it: one item claiming
    2 GiB in a 1 kB file would be a 2 GiB allocation. Only the 8-byte item headers are read.
    """
    size = os.fstat(file.fileno()).st_size
    position = offset
    while position + 8 <= size:
        file.seek(position)
        tag_group, tag_element, length = struct.unpack("<HHL", file.read(8))
        if (tag_group, tag_element) == (0xFFFE, 0xE0DD):  # sequence delimiter: the end
            return
        if (tag_group, tag_element) != (0xFFFE, 0xE000):
            raise PixelDataError(
                f"{path}: encapsulated pixel data holds no item at byte {position}"
            )
        if position + 8 + length > size:
            raise PixelDataError(
                f"{path}: a pixel data item at byte {position} claims {length} bytes, past the"
                f" end of the file ({size} bytes)"
            )
        position += 8 + length


def _encapsulated_start(file: BinaryIO, path: str) -> tuple[int, int]:
    """Where the items of encapsulated pixel data start, and the number of frames."""
    from pydicom.filereader import read_partial

    # the caller's checked_file walked this file within the header limits already
    ds = read_partial(file, stop_when=_at_pixel_data, specific_tags=_FRAME_TABLE_TAGS)
    element = file.read(12)  # tag, VR, reserved, length: pydicom stops at the tag
    if element[:4] != b"\xe0\x7f\x10\x00" or element[8:] != b"\xff\xff\xff\xff":
        raise PixelDataError(f"{path}: compressed pixel data is not encapsulated")
    return file.tell(), int(ds.get("NumberOfFrames") or 1)


def _at_pixel_data(tag: Any, vr: Any, length: Any) -> bool:
    return int(tag) == 0x7FE00010  # (7FE0,0010) Pixel Data


def _check_codestream(path: str, frame: int, encoded: bytes, fmt: PixelFormat) -> None:
    size = declared_size(encoded)
    if size is None:
        raise PixelDataError(f"{path}: frame {frame}: no JPEG or JPEG 2000 image header found")
    if (size.rows, size.columns, size.components) != (fmt.rows, fmt.columns, fmt.samples):
        raise PixelDataError(
            f"{path}: frame {frame}: the compressed frame declares {size.rows} x "
            f"{size.columns} x {size.components} samples, the file's header {fmt.rows} x "
            f"{fmt.columns} x {fmt.samples}"
        )


def _photometric(value: Any) -> str:
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return "MONOCHROME2"
    return str(value).strip().upper()


def _check_colour(path: str, fmt: PixelFormat) -> None:
    """Grey, or 3 samples pydicom converts to RGB; palette colour is refused.

    A palette's indices are not grey values and its lookup table is not in the index;
    such a series is refused rather than read as a grey volume of indices.
    """
    if fmt.photometric == "PALETTE COLOR":
        raise PixelDataError(
            f"{path}: PhotometricInterpretation PALETTE COLOR: palette colour images do "
            "not open as volumes (apply pydicom.pixels.apply_color_lut to the file)"
        )
    if fmt.samples == 1:
        return
    if fmt.samples != 3 or fmt.photometric not in COLOUR_PHOTOMETRICS:
        raise PixelDataError(
            f"{path}: SamplesPerPixel {fmt.samples} with PhotometricInterpretation "
            f"{fmt.photometric}: only grey, RGB and YBR colour images open as volumes"
        )
    if fmt.bits_allocated not in (8, 16):
        raise PixelDataError(
            f"{path}: colour with BitsAllocated {fmt.bits_allocated} is not supported"
        )


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


def _per_frame(values: Any, n: int, dtype: Any = np.float32) -> np.ndarray:
    flat = np.asarray(values, dtype=dtype).reshape(-1)
    return np.broadcast_to(flat, (n,)).copy()


def is_padding(stored: np.ndarray, low: Any, high: Any) -> np.ndarray:
    """Where ``stored`` lies in ``[low, high]``: the padding of a series.

    (0028,0120) *Pixel Padding Value* and (0028,0121) *Pixel Padding Range Limit* name
    stored values (PS3.3 C.7.5.1.1.2), so padding is found before any rescale. ``low``
    and ``high`` broadcast against ``stored``; NaN bounds match nothing.
    """
    return (stored >= low) & (stored <= high)


def fill_padding(stored: np.ndarray, out: np.ndarray, low: Any, high: Any, fill: float) -> None:
    """Set ``out`` to ``fill`` where ``stored`` is padding (:func:`is_padding`), in place."""
    np.copyto(out, np.float32(fill), where=is_padding(stored, low, high))


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


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _reader_pool() -> ThreadPoolExecutor:
    """The threads that overlap frame reads, made on first use, once per process."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max(2, min(8, os.cpu_count() or 2)), thread_name_prefix="dicomarray-read"
            )
        return _pool


def _forget_pool_after_fork() -> None:
    # A forked child (multiprocessing's fork pools, PyTorch DataLoader workers) inherits
    # the pool object but none of its threads: work sent to it would wait forever. The
    # lock may have been held by a parent thread at the fork, so it is replaced too.
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


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


def mosaic_tiles(frames: pd.DataFrame, fmt: PixelFormat) -> tuple[list[int | None], PixelFormat]:
    """Each frame's Siemens mosaic tile (None for a whole frame), and the stored format.

    ``fmt`` is the format of the frames as they are read (a tile's size for a mosaic,
    :mod:`dicomarray.mosaic`); the stored format has the size of the image the file
    holds, the ``mosaic_rows`` and ``mosaic_columns`` columns.

    Raises
    ------
    PixelDataError
        Tiles of mosaics of different stored sizes, or beside whole frames, in one stack;
        or a stored size that is not a whole grid of tiles.
    """
    if "tile" not in frames:
        return [None] * len(frames), fmt
    tiles = [_optional_int(t) for t in frames["tile"]]
    if all(t is None for t in tiles):
        return tiles, fmt
    sizes = {
        (_optional_int(r), _optional_int(c))
        for r, c in zip(frames["mosaic_rows"], frames["mosaic_columns"], strict=True)
    }
    path = frames["path"].iloc[0]
    if len(sizes) > 1 or None in tiles:
        shown = ", ".join(f"{r} x {c}" for r, c in sorted(sizes, key=str))
        raise PixelDataError(
            f"{path}: a stack mixes frames of stored sizes {shown} (mosaic tiles and whole "
            "frames): they cannot share one array"
        )
    ((rows, columns),) = sizes
    if not rows or not columns or rows % fmt.rows or columns % fmt.columns:
        raise PixelDataError(
            f"{path}: a mosaic of {rows} x {columns} is no grid of {fmt.rows} x {fmt.columns} tiles"
        )
    return tiles, replace(fmt, rows=rows, columns=columns)


def _whole_number(value: Any, default: int | None) -> int:
    """An index value as an int, whatever its column's type (object, float, Int64).

    Missing (None, NaN, ``pd.NA``) gives ``default``; raises ValueError when there is no
    default, and for a fraction; TypeError for a multi-valued element.
    """
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        if default is None:
            raise ValueError("a required value is missing")
        return default
    number = float(value)
    if not number.is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    return int(number)


def _optional_int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def check_readable(
    frames: pd.DataFrame, fmt: PixelFormat, *, max_bytes: int = MAX_VOLUME_BYTES
) -> None:
    """Refuse, before any read or allocation, what cannot be decoded or does not fit.

    Raises
    ------
    MissingDecoderError
        A transfer syntax no installed decoder handles; the message names the syntax and
        the extra to install.
    PixelDataError
        Stored values larger in memory than ``max_bytes``; uncompressed pixel data
        shorter than Rows x Columns x frames x bits promise; or a file claiming more
        decoded pixels than its transfer syntax can hold in the file's size (see
        :data:`EXPANSION_LIMITS`).
    """
    total = fmt.array_frame_bytes * len(frames)
    if total > max_bytes:
        raise PixelDataError(
            f"{frames['path'].iloc[0]}: the series declares {total / 2**30:.1f} GiB of pixels, "
            f"more than the limit of {max_bytes / 2**30:.1f} GiB"
        )
    for syntax, path in frames.groupby("TransferSyntaxUID", dropna=False)["path"].first().items():
        _check_decoder(_syntax(syntax), path)
    files = frames.drop_duplicates("path")
    _tiles, stored = mosaic_tiles(frames, fmt)  # a mosaic's files hold whole mosaics
    _check_lengths(files, stored)
    _check_expansion(files, stored)


def _check_lengths(files: pd.DataFrame, fmt: PixelFormat) -> None:
    """Uncompressed pixel data must hold what Rows x Columns x frames x bits promise."""
    files = files[files["TransferSyntaxUID"].isin(_NATIVE_SYNTAXES)]
    n_frames = _numbers(files["NumberOfFrames"], missing=1)
    # bit-packed frames follow each other with no padding: only the last byte is partial
    need = np.ceil(fmt.frame_bits * n_frames / 8)
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


def _check_expansion(files: pd.DataFrame, fmt: PixelFormat) -> None:
    """No file may claim more decoded bits than its codec can make of the file's bits."""
    n_frames = _numbers(files["NumberOfFrames"], missing=1)
    # stored bits a frame (YBR_FULL_422 two samples a pixel): what native data must hold
    decoded_bits = float(fmt.frame_bits) * n_frames
    file_bits = 8 * _numbers(files["file_size"], missing=np.inf)
    syntaxes = [_syntax(s) for s in files["TransferSyntaxUID"]]
    limits = np.array([expansion_limit(s, fmt.bits_allocated) for s in syntaxes])
    for i in np.flatnonzero(decoded_bits > limits * file_bits):
        name = uid.UID(syntaxes[i]).name if syntaxes[i] else "native"
        raise PixelDataError(
            f"{files['path'].iloc[i]}: {fmt.rows} x {fmt.columns} x {int(n_frames[i])} "
            f"frame(s) x {fmt.bits_allocated} bits ({decoded_bits[i] / 2**23:.1f} MiB) cannot "
            f"come from a file of {int(file_bits[i] // 8)} bytes: {name} data expands at "
            f"most {limits[i]:g} times"
        )


def expansion_limit(syntax: str, bits_allocated: int) -> float:
    """The most decoded bits one bit of a file in ``syntax`` can give (module docstring).

    Parameters
    ----------
    syntax : str
        (0002,0010) *Transfer Syntax UID*; empty means native (implicit little endian).
    bits_allocated : int
        (0028,0100) *Bits Allocated*: the decoded size of one sample.
    """
    if syntax in _SAMPLES_PER_BIT:  # Huffman-coded JPEG spends bits on every block
        return _SAMPLES_PER_BIT[syntax] * bits_allocated
    return EXPANSION_LIMITS.get(syntax, PLAUSIBLE_EXPANSION)


def _syntax(value: Any) -> str:
    return "" if value is None or pd.isna(value) else str(value)


def _numbers(column: pd.Series, *, missing: float) -> np.ndarray:
    """A column as float64 (None, NaN, pd.NA and non-numbers become ``missing``)."""
    numbers = pd.to_numeric(column, errors="coerce").astype("float64")
    return numbers.fillna(missing).to_numpy()


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
        try:
            stat = os.stat(path)
        except OSError as exc:  # gone or unreadable since the index was made
            raise PixelDataError(f"{path}: cannot open: {exc.strerror}") from exc
        signature.append((path, stat.st_size, stat.st_mtime_ns))
    return signature
