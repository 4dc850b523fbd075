"""Header-only reads of one DICOM file: the index tags and where the pixel data starts.

The common case (a Part-10 file with explicit or implicit VR little-endian, or an
encapsulated transfer syntax, whose data set is explicit VR little endian) is parsed here
directly from a few kilobytes of the file, which is many times cheaper than a full pydicom
parse. Anything unusual (no preamble, big endian, deflate, an unknown character set, a
structure this parser does not expect) falls back to pydicom, and both paths give the same
plain Python values: a property test checks that.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterable
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.uid import UID

#: Tags read into the index, by DICOM keyword. Assembly and the tag tables need these.
INDEX_KEYWORDS: tuple[str, ...] = (
    "SpecificCharacterSet",
    "ImageType",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyDate",
    "SeriesDate",
    "StudyTime",
    "AcquisitionTime",
    "ContentTime",
    "AccessionNumber",
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "StudyDescription",
    "SeriesDescription",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "BodyPartExamined",
    "SliceThickness",
    "SpacingBetweenSlices",
    "ProtocolName",
    "GantryDetectorTilt",
    "EchoNumbers",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "StudyID",
    "SeriesNumber",
    "AcquisitionNumber",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "FrameOfReferenceUID",
    "TemporalPositionIdentifier",
    "SliceLocation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "PixelSpacing",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "WindowCenter",
    "WindowWidth",
    "RescaleIntercept",
    "RescaleSlope",
    "RescaleType",
)

#: Extra columns every index row carries beside the tags.
FILE_COLUMNS: tuple[str, ...] = (
    "TransferSyntaxUID",
    "pixel_data_offset",
    "pixel_data_length",
    "file_size",
)

_WANTED: dict[int, tuple[str, str]] = {
    int(tag_for_keyword(kw) or 0): (kw, dictionary_VR(kw)) for kw in INDEX_KEYWORDS
}
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}
_TEXT_VRS = {"LT", "ST", "UT", "UR"}  # never split on backslash
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
_FAST_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
_CHARSETS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}
_PIXEL_DATA = 0x7FE00010
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_CHUNK = 16384
_MAX_DEPTH = 16


class _FallBack(Exception):
    """The fast parser met something it leaves to pydicom."""


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the index tags of one DICOM file without reading its pixel data.

    Parameters
    ----------
    path : str or os.PathLike
        A DICOM Part-10 file (or a headerless one pydicom can read).

    Returns
    -------
    dict
        The :data:`INDEX_KEYWORDS` present in the file, as plain Python values (``str``,
        ``int``, ``float``, lists of those, or ``None`` for an empty value), plus
        ``TransferSyntaxUID``, ``pixel_data_offset`` and ``pixel_data_length`` (the byte
        offset and length of the (7FE0,0010) *Pixel Data* value, ``None`` when unknown or
        encapsulated) and ``file_size``.

    Raises
    ------
    pydicom.errors.InvalidDicomError, OSError, ValueError
        When the file is not DICOM or cannot be parsed at all; :func:`dicomarray.scan`
        turns these into a skipped entry.
    """
    path = os.fspath(path)
    try:
        values = _FastReader(path).read()
    except _FallBack:
        values = _read_with_pydicom(path)
    values["file_size"] = os.path.getsize(path)
    return values


def _read_with_pydicom(path: str) -> dict[str, Any]:
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(INDEX_KEYWORDS))
    values = {kw: plain_value(ds[kw].value) for kw in INDEX_KEYWORDS if kw in ds}
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    values["TransferSyntaxUID"] = str(syntax) if syntax else None
    values["pixel_data_offset"] = None
    values["pixel_data_length"] = None
    return values


def plain_value(value: Any) -> Any:
    """Turn a pydicom element value into plain Python: str, int, float, list or None.

    ``DS`` become ``float``, ``IS`` become ``int``, person names and UIDs ``str``,
    multi-values lists; empty values and non-finite numbers become ``None``.
    """
    if value is None:
        return None
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        items = [plain_value(v) for v in value]
        return items if items else None
    if isinstance(value, pydicom.valuerep.IS | int) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, pydicom.valuerep.DSfloat | pydicom.valuerep.DSdecimal | float):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, bytes):
        return None
    text = str(value).strip(" \0")
    return text if text else None


class _FastReader:
    """Walks the elements of one file through a small moving window of its bytes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file = open(path, "rb")  # noqa: SIM115 - closed in read()
        self.start = 0
        self.buf = self.file.read(_CHUNK)
        self.values: dict[str, Any] = {}
        self.encoding = "latin-1"

    def read(self) -> dict[str, Any]:
        try:
            return self._read()
        except (struct.error, UnicodeDecodeError, IndexError, ValueError) as exc:
            raise _FallBack(str(exc)) from exc
        finally:
            self.file.close()

    def _bytes(self, offset: int, n: int) -> bytes:
        end = offset + n
        if offset < self.start or end > self.start + len(self.buf):
            self.file.seek(offset)
            self.start = offset
            self.buf = self.file.read(max(n, _CHUNK))
            if len(self.buf) < n:
                raise _FallBack("file ends inside an element")
        return self.buf[offset - self.start : end - self.start]

    def _read(self) -> dict[str, Any]:
        if self.buf[128:132] != b"DICM":
            raise _FallBack("no preamble")
        pos, syntax = self._read_meta(132)
        if syntax not in _FAST_SYNTAXES and not UID(syntax).is_encapsulated:
            raise _FallBack(f"transfer syntax {syntax}")
        self.values.update(TransferSyntaxUID=syntax, pixel_data_offset=None, pixel_data_length=None)
        self._read_data_set(pos, explicit=syntax != "1.2.840.10008.1.2")
        return self.values

    def _read_meta(self, pos: int) -> tuple[int, str]:
        syntax = None
        while True:
            head = self._bytes(pos, 8)
            group = struct.unpack_from("<H", head)[0]
            if group != 0x0002:
                break
            tag, length, value_pos = self._explicit_element(pos, head)
            if tag == 0x00020010:
                syntax = self._bytes(value_pos, length).decode("ascii").rstrip("\0 ")
            pos = value_pos + length
        if not syntax:
            raise _FallBack("no transfer syntax in the meta group")
        return pos, syntax

    def _explicit_element(self, pos: int, head: bytes) -> tuple[int, int, int]:
        group, element = struct.unpack_from("<HH", head)
        vr = head[4:6]
        if vr in _LONG_VRS:
            length = struct.unpack("<I", self._bytes(pos + 8, 4))[0]
            return (group << 16) | element, length, pos + 12
        if not vr.isalpha() or not vr.isupper():
            raise _FallBack(f"unexpected VR {vr!r}")
        return (group << 16) | element, struct.unpack_from("<H", head, 6)[0], pos + 8

    def _element(self, pos: int, explicit: bool) -> tuple[int, int, int]:
        head = self._bytes(pos, 8)
        if explicit:
            return self._explicit_element(pos, head)
        group, element, length = struct.unpack_from("<HHI", head)
        return (group << 16) | element, length, pos + 8

    def _read_data_set(self, pos: int, *, explicit: bool) -> None:
        size = os.fstat(self.file.fileno()).st_size
        while pos + 8 <= size:
            tag, length, value_pos = self._element(pos, explicit)
            if tag == _PIXEL_DATA:
                self.values["pixel_data_offset"] = value_pos if length != _UNDEFINED else None
                self.values["pixel_data_length"] = length if length != _UNDEFINED else None
                return
            if length == _UNDEFINED:
                # an undefined-length SQ, or UN holding implicit VR items
                pos = self._skip_sequence(value_pos, explicit, depth=0)
                continue
            if tag in _WANTED:
                keyword, vr = _WANTED[tag]
                self.values[keyword] = self._decode(self._bytes(value_pos, length), vr)
                if keyword == "SpecificCharacterSet":
                    self._set_encoding(self.values[keyword])
            pos = value_pos + length

    def _skip_sequence(self, pos: int, explicit: bool, depth: int) -> int:
        if depth > _MAX_DEPTH:
            raise _FallBack("sequences nested too deep")
        while True:
            tag, length = struct.unpack("<II", self._bytes(pos, 8))
            tag = ((tag & 0xFFFF) << 16) | (tag >> 16)
            pos += 8
            if tag == _SEQUENCE_END:
                return pos
            if tag != _ITEM:
                raise _FallBack(f"unexpected tag {tag:08X} in a sequence")
            if length != _UNDEFINED:
                pos += length
                continue
            pos = self._skip_item(pos, explicit, depth)

    def _skip_item(self, pos: int, explicit: bool, depth: int) -> int:
        while True:
            head = self._bytes(pos, 8)
            group, element, length = struct.unpack_from("<HHI", head)
            if (group << 16) | element == _ITEM_END:
                return pos + 8
            _tag, length, value_pos = self._element(pos, explicit)
            if length == _UNDEFINED:
                pos = self._skip_sequence(value_pos, explicit, depth + 1)
            else:
                pos = value_pos + length

    def _set_encoding(self, charset: Any) -> None:
        name = charset[0] if isinstance(charset, list) else (charset or "")
        if name not in _CHARSETS or (isinstance(charset, list) and len(charset) > 1):
            raise _FallBack(f"character set {charset}")
        self.encoding = _CHARSETS[name]

    def _decode(self, raw: bytes, vr: str) -> Any:
        if vr in _NUMBER_FORMATS:
            fmt = _NUMBER_FORMATS[vr]
            count = len(raw) // struct.calcsize(fmt)
            numbers = [plain_value(v) for v in struct.unpack(f"<{count}{fmt}", raw)]
            return _single_or_list(numbers)
        text = raw.decode(
            self.encoding if vr in {"PN", "LO", "SH", "LT", "ST", "UT"} else "latin-1"
        )
        if vr in _TEXT_VRS:
            return text.strip(" \0") or None
        parts = [_parse_text(part, vr) for part in text.rstrip("\0").split("\\")]
        if len(parts) == 1 and parts[0] is None:
            return None
        return _single_or_list(parts)


def _parse_text(part: str, vr: str) -> Any:
    part = part.strip(" \0")
    if not part:
        return None
    if vr == "DS":
        number = float(part)
        return number if math.isfinite(number) else None
    if vr == "IS":
        return int(float(part)) if "." in part or "e" in part.lower() else int(part)
    return part


def _single_or_list(items: Iterable[Any]) -> Any:
    items = list(items)
    if not items:
        return None
    return items[0] if len(items) == 1 else items
