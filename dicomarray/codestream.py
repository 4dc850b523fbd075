"""The image size a compressed frame declares in its own codestream header.

A decoder allocates what the codestream declares, not what the DICOM header says: a frame
of a 64 x 64 image whose JPEG-LS header claims 65535 x 65535 makes CharLS allocate 8 GB
and decode for minutes. :func:`declared_size` reads the declaration (a few bytes at the
start of the frame) so that it can be compared with (0028,0010) *Rows* and (0028,0011)
*Columns* before any decoder runs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# JPEG start-of-frame markers (ISO/IEC 10918-1 B.1.1.3): C0-CF except DHT (C4), JPG (C8)
# and DAC (CC); JPEG-LS SOF55 (F7) and its extension SOF57 (F9) share the layout
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7, 0xF9}
# markers without a length field: TEM and the restart markers RST0-RST7
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_SOI, _SOS = 0xD8, 0xDA
_J2K_START = b"\xff\x4f\xff\x51"  # SOC then SIZ, which must come first (15444-1 A.5.1)
_JP2_SIGNATURE = b"\x00\x00\x00\x0c\x6a\x50\x20\x20"
_JP2_CODESTREAM_BOX = b"jp2c"


@dataclass(frozen=True)
class CodestreamSize:
    """The rows, columns and components a codestream says it holds."""

    rows: int
    columns: int
    components: int


def declared_size(frame: bytes) -> CodestreamSize | None:
    """The size in a JPEG, JPEG-LS or JPEG 2000 frame's header; None if there is none.

    Parameters
    ----------
    frame : bytes
        One encoded frame: a JPEG or JPEG-LS stream (starting with SOI) or a JPEG 2000
        codestream (SOC, SIZ), bare or in a JP2 file.
    """
    if frame[:2] == b"\xff\xd8":
        return _jpeg_size(frame)
    return _j2k_size(frame)


def _jpeg_size(frame: bytes) -> CodestreamSize | None:
    """The SOFn (or JPEG-LS SOF55) segment's size: marker segments are walked to it."""
    offset = 2
    while offset + 4 <= len(frame):
        if frame[offset] != 0xFF:
            return None  # not at a marker: the stream is corrupt
        marker = frame[offset + 1]
        if marker == 0xFF:  # fill byte before a marker
            offset += 1
            continue
        if marker in _STANDALONE or marker == _SOI:
            offset += 2
            continue
        if marker == _SOS:
            return None  # a scan before any frame header
        if marker in _SOF_MARKERS:
            if offset + 10 > len(frame):
                return None
            rows, columns, components = struct.unpack_from(">HHB", frame, offset + 5)
            return CodestreamSize(rows, columns, components)
        (length,) = struct.unpack_from(">H", frame, offset + 2)
        offset += 2 + length
    return None


def _j2k_size(frame: bytes) -> CodestreamSize | None:
    """The image area and component count of the SIZ segment (15444-1 A.5.1)."""
    offset = _jp2_codestream_offset(frame) if frame.startswith(_JP2_SIGNATURE) else 0
    if offset is None or frame[offset : offset + 4] != _J2K_START or len(frame) < offset + 42:
        return None
    # SIZ: Lsiz, Rsiz, then Xsiz, Ysiz, XOsiz, YOsiz, tile sizes and offsets, Csiz
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">LLLL", frame, offset + 8)
    (components,) = struct.unpack_from(">H", frame, offset + 40)
    return CodestreamSize(max(0, ysiz - yosiz), max(0, xsiz - xosiz), components)


def _jp2_codestream_offset(frame: bytes) -> int | None:
    """Where the codestream starts in a JP2 file: the contents of its ``jp2c`` box."""
    offset = 0
    while offset + 8 <= len(frame):
        length, kind = struct.unpack_from(">L4s", frame, offset)
        if kind == _JP2_CODESTREAM_BOX:
            return offset + 8
        if length == 1 and offset + 16 <= len(frame):  # a 64-bit length follows the type
            (length,) = struct.unpack_from(">Q", frame, offset + 8)
        if length < 8:  # 0: the box runs to the end, so no codestream box follows
            return None
        offset += length
    return None
