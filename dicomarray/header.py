"""Bounded header reads of one DICOM file: the index tags, where the pixel data starts.

Every DICOM file the package opens goes through this module first. One walker steps over
the elements of a file's data set (explicit or implicit VR, little or big endian,
deflated, and into every sequence item at every depth) without building a data set, and
refuses a file past any of the :class:`HeaderLimits`: pydicom's own parse takes time that
grows with the square of a sequence's item count (100,000 empty items: 72 s) and memory
many times the header's size, so a file must be known to be small before pydicom sees it.

* :func:`read_header` gives the index tags as plain Python values from that one walk;
  pydicom decodes them only for character sets the walker does not decode itself, and a
  property test checks that both give the same values.
* :func:`read_dataset` is the package's only door onto :func:`pydicom.dcmread`, and
  :func:`checked_file` the door for any other pydicom reader (pixel decoders): both walk
  the file within the limits first.
* :func:`referenced_file_ids` lists the files a DICOMDIR's records point to.

Only regular files are opened, and without blocking (a named pipe in a tree must not
hang a scan). A file whose header ends inside an element is truncated and refused; pixel
data cut short is not a header problem and is left to the pixel reader.
"""

from __future__ import annotations

import math
import os
import stat
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.filereader import read_partial
from pydicom.uid import UID

from .errors import DicomArrayError, HeaderLimitError, InvalidDicomError

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
    # per-frame values that tell volumes at the same positions apart (issue 13); an
    # enhanced file holds most of them in its functional groups (dicomarray.frames)
    "AcquisitionDateTime",
    "FrameAcquisitionDateTime",
    "FrameReferenceDateTime",
    "TriggerTime",
    "EchoTime",
    "RepetitionTime",
    "NumberOfTemporalPositions",
    "TemporalPositionIndex",
    "InStackPositionNumber",
    "StackID",
    "DimensionIndexValues",
    "DiffusionBValue",
    "DiffusionGradientOrientation",
    "DiffusionDirectionality",
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

#: Vendor-private elements read beside the index tags, by (group, private creator, low
#: byte of the element): a private element (gggg,xxee) belongs to the creator written in
#: (gggg,00xx), so the same tag under another creator is another element and is not read.
#: They are no columns: :func:`read_header` turns them into the standard
#: (0018,9087) *Diffusion b-value* and (0018,9089) *Diffusion Gradient Orientation* when
#: a file lacks those. The tags and their meaning follow dcm2niix (console/nii_dicom.cpp:
#: kDiffusionBFactorGE, kDiffusionBFactor, kDiffusionDirectionRL/AP/FH, and the
#: commented-out kDiffusionBFactorSiemens "0019;000C;SIEMENS MR HEADER;B_value").
PRIVATE_ELEMENTS: dict[tuple[int, str, int], tuple[str, str]] = {
    # Siemens (0019,xx0C) B_value, (0019,xx0E) DiffusionGradientDirection (patient LPS)
    (0x0019, "SIEMENS MR HEADER", 0x0C): ("SiemensBValue", "IS"),
    (0x0019, "SIEMENS MR HEADER", 0x0E): ("SiemensGradient", "FD"),
    # GE (0043,xx39) "Slop_int_6..9": the b-value first, plus 1e9 in some sequences
    (0x0043, "GEMS_PARM_01", 0x39): ("GEBValue", "IS"),
    # Philips (2001,xx03) Diffusion B-Factor, (2005,xxB0..B2) direction RL, AP, FH
    (0x2001, "Philips Imaging DD 001", 0x03): ("PhilipsBValue", "FL"),
    (0x2005, "Philips MR Imaging DD 001", 0xB0): ("PhilipsGradientRL", "FL"),
    (0x2005, "Philips MR Imaging DD 001", 0xB1): ("PhilipsGradientAP", "FL"),
    (0x2005, "Philips MR Imaging DD 001", 0xB2): ("PhilipsGradientFH", "FL"),
}
_PRIVATE_GROUPS = frozenset(group for group, _, _ in PRIVATE_ELEMENTS)

#: Extra columns every index row carries beside the tags.
FILE_COLUMNS: tuple[str, ...] = (
    "TransferSyntaxUID",
    "pixel_data_offset",
    "pixel_data_length",
    "file_size",
)

#: (0002,0002) *Media Storage SOP Class UID* of a Media Storage Directory (DICOMDIR, DIRFILE).
DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"


@dataclass(frozen=True)
class HeaderLimits:
    """Bounds on one file's header, checked before pydicom parses it.

    pydicom needs about 10 us and 1 kB per element to parse a header, and building attrs
    from it as much again; the defaults keep the worst header within a few seconds and a
    few hundred MB, and hold an enhanced multi-frame header of about 10,000 frames. The
    walk itself takes about 3 us per element, so a refusal comes within a second.

    Parameters
    ----------
    max_header_bytes : int, default 64 MiB
        Bytes of the data set other than the top-level (7FE0,0010) *Pixel Data* value;
        for a deflated file, also the most it may inflate to beside the pixel data it
        declares.
    max_elements : int, default 250,000
        Data elements and sequence items, counted at every depth of every sequence.
    max_items : int, default 20,000
        Items in any one sequence (pydicom's parse time grows faster than the item
        count: 100,000 items took 72 s). A DICOMDIR's record sequence may hold up to
        ``max_elements`` items: this module walks it without pydicom.
    max_depth : int, default 32
        Sequences nested in sequences.
    """

    max_header_bytes: int = 64 * 2**20
    max_elements: int = 250_000
    max_items: int = 20_000
    max_depth: int = 32


#: The limits used when a caller gives none, looked up at each call: assign a new
#: :class:`HeaderLimits` here to change them for every read of the package (in this
#: process; dask workers in other processes keep their own).
DEFAULT_LIMITS = HeaderLimits()

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
_CHARSETS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}
_IMPLICIT = "1.2.840.10008.1.2"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_DEFLATED = "1.2.840.10008.1.2.1.99"
_GZIP_MAGIC = b"\x1f\x8b"  # RFC 1952: the first two bytes of every gzip member
# pixel data lies at a byte offset the pixel reader can use only in these syntaxes
_OFFSET_SYNTAXES = {_IMPLICIT, "1.2.840.10008.1.2.1"}
_MEDIA_STORAGE_CLASS = 0x00020002
_TRANSFER_SYNTAX = 0x00020010
_REFERENCED_FILE_ID = 0x00041500
_PIXEL_DATA = 0x7FE00010
_PIXEL_TAGS = {0x7FE00008, 0x7FE00009, _PIXEL_DATA}  # float, double float, integer pixels
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_CHUNK = 16384
_INFLATE_CHUNK = 2**20


class _Malformed(Exception):
    """The bytes do not form a DICOM data set: the message says where and why."""


def read_header(
    path: str | os.PathLike[str], *, limits: HeaderLimits | None = None
) -> dict[str, Any]:
    """Read the index tags of one DICOM file without reading its pixel data.

    Parameters
    ----------
    path : str or os.PathLike
        A DICOM Part-10 file: a 128-byte preamble, ``DICM``, a file meta group.
    limits : HeaderLimits, optional
        Bounds on the header; :data:`DEFAULT_LIMITS` when not given.

    Returns
    -------
    dict
        The :data:`INDEX_KEYWORDS` present in the file, as plain Python values (``str``,
        ``int``, ``float``, lists of those, or ``None`` for an empty value), plus
        ``TransferSyntaxUID``, ``MediaStorageSOPClassUID`` (from the file meta group),
        ``pixel_data_offset`` and ``pixel_data_length`` (the byte offset and length of
        the (7FE0,0010) *Pixel Data* value, ``None`` when unknown or deflated; for
        encapsulated data the offset of its first item, and no length) and
        ``file_size``. A Media Storage Directory (DICOMDIR, DIRFILE,
        :data:`DIRECTORY_SOP_CLASS`) gives only the file entries: its records are no
        instance's tags.

    Raises
    ------
    InvalidDicomError
        When the file is not a regular file, not DICOM, truncated inside its header or
        malformed; :func:`dicomarray.scan` turns these into a skipped entry.
    HeaderLimitError
        When the header passes one of the ``limits``.
    """
    path = os.fspath(path)
    with open_regular(path) as file:
        walker = _Walker(file, path, limits or DEFAULT_LIMITS, wanted=_WANTED, private=True)
        walker.walk(through_pixels=False)
    values = walker.values
    if walker.directory:
        return {key: values[key] for key in (*FILE_COLUMNS, "MediaStorageSOPClassUID")}
    if walker.decode_with_pydicom:
        values.update(_read_with_pydicom(path))
    values.update(vendor_diffusion(values, walker.private_values))
    return values


def vendor_diffusion(standard: dict[str, Any], private: dict[str, Any]) -> dict[str, Any]:
    """The diffusion b-value and gradient a file gives in vendor-private elements.

    Parameters
    ----------
    standard : dict
        The file's standard values: a (0018,9087) *Diffusion b-value* or (0018,9089)
        *Diffusion Gradient Orientation* there wins over any private one.
    private : dict
        The :data:`PRIVATE_ELEMENTS` found, by their names there.

    Returns
    -------
    dict
        ``DiffusionBValue`` (float, s/mm2) and ``DiffusionGradientOrientation`` (three
        floats in the patient's LPS axes), each only when the standard element is absent
        and a vendor's element gives it.
    """
    found: dict[str, Any] = {}
    b_value = _first_number(private.get("SiemensBValue"))
    if b_value is None:
        b_value = _first_number(private.get("PhilipsBValue"))
    ge = _first_number(private.get("GEBValue"))
    if b_value is None and ge is not None:
        # GE adds a bias of 1e9 to the b-value of multi-b and synthetic DWI: dcm2niix's
        # set_bValGE keeps bVal % 1000000000 (dcm2niix issue 602, pull request 603)
        b_value = ge % 1_000_000_000
    if b_value is not None and standard.get("DiffusionBValue") is None:
        found["DiffusionBValue"] = float(b_value)
    gradient = private.get("SiemensGradient")
    if gradient is None:
        # Philips RL, AP, FH: the same numbers as its (0018,9089) where both are written
        # (dcm_qa_philips_enh), so the LPS axes in that order
        gradient = [private.get(f"PhilipsGradient{axis}") for axis in ("RL", "AP", "FH")]
    if standard.get("DiffusionGradientOrientation") is None and _three_numbers(gradient):
        found["DiffusionGradientOrientation"] = [float(v) for v in gradient]
    return found


def _first_number(value: Any) -> float | int | None:
    first = value[0] if isinstance(value, list) and value else value
    return first if isinstance(first, int | float) and not isinstance(first, bool) else None


def _three_numbers(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(v, int | float) and math.isfinite(v) for v in value)
    )


@contextmanager
def checked_file(
    path: str | os.PathLike[str],
    *,
    stop_before_pixels: bool = True,
    limits: HeaderLimits | None = None,
) -> Iterator[BinaryIO]:
    """Open a regular file for a pydicom reader once its structure is within ``limits``.

    Parameters
    ----------
    path : str or os.PathLike
        A DICOM Part-10 file.
    stop_before_pixels : bool, default True
        Check the header only; with False, also what follows the top-level pixel data.
    limits : HeaderLimits, optional
        Bounds on the header; :data:`DEFAULT_LIMITS` when not given.

    Yields
    ------
    file object
        The file, opened for binary reading and positioned at its start.

    Raises
    ------
    InvalidDicomError, HeaderLimitError
        As :func:`read_header`.
    """
    path = os.fspath(path)
    with open_regular(path) as file:
        _Walker(file, path, limits or DEFAULT_LIMITS).walk(through_pixels=not stop_before_pixels)
        file.seek(0)
        yield file


def read_dataset(
    path: str | os.PathLike[str],
    *,
    stop_before_pixels: bool = True,
    specific_tags: list[str] | None = None,
    defer_size: int | str | None = None,
    stop_before_tag: int | None = None,
    limits: HeaderLimits | None = None,
) -> Dataset:
    """:func:`pydicom.dcmread` of one file, within bounds: the package's only way to it.

    Parameters
    ----------
    path : str or os.PathLike
        A DICOM Part-10 file.
    stop_before_pixels, specific_tags, defer_size
        As for :func:`pydicom.dcmread`.
    stop_before_tag : int, optional
        Stop at the first top-level element of this tag or above (pydicom parses a
        sequence it is told to skip all the same: stopping is the only way to spare it
        the functional groups of an enhanced multi-frame file).
    limits : HeaderLimits, optional
        Bounds on the header; :data:`DEFAULT_LIMITS` when not given.

    Returns
    -------
    pydicom.dataset.FileDataset

    Raises
    ------
    InvalidDicomError
        When the file is not a regular file, not DICOM, truncated or malformed, or pydicom
        cannot parse it; the message names the file.
    HeaderLimitError
        When the header passes one of the ``limits``.
    """
    path = os.fspath(path)
    with checked_file(path, stop_before_pixels=stop_before_pixels, limits=limits) as file:
        try:
            if stop_before_tag is not None:
                return read_partial(
                    file,
                    stop_when=lambda tag, _vr, _length: tag >= stop_before_tag,
                    defer_size=defer_size,
                    specific_tags=specific_tags,  # type: ignore[arg-type]
                )
            return pydicom.dcmread(
                file,
                stop_before_pixels=stop_before_pixels,
                specific_tags=specific_tags,
                defer_size=defer_size,
            )
        except Exception as exc:  # noqa: BLE001 - any pydicom failure names the file
            raise InvalidDicomError(f"{path}: cannot parse: {type(exc).__name__}: {exc}") from exc


#: Where a nested element lies: the (sequence tag, 0-based item index) of each enclosing
#: item, outermost first.
Location = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class NestedValues:
    """Values found at any depth of a header's sequences, by :func:`read_nested_values`.

    Attributes
    ----------
    values : list of (Location, str, Any)
        Where each element lies, its keyword and its plain value (as :func:`read_header`
        gives values), in file order.
    top_items : dict
        Tag of each top-level sequence to its number of items.
    """

    values: list[tuple[Location, str, Any]]
    top_items: dict[int, int]


def read_nested_values(
    path: str | os.PathLike[str], keywords: Iterable[str], *, limits: HeaderLimits | None = None
) -> NestedValues:
    """The named elements inside sequences, at any depth, in one bounded walk of the header.

    The fast way to an enhanced multi-frame file's functional groups: the walk that
    checks the header's bounds also decodes the wanted values, so pydicom need not build
    a data set of every frame's items (1.5 s for 240 frames).

    Parameters
    ----------
    path : str or os.PathLike
        A DICOM Part-10 file.
    keywords : iterable of str
        Keywords of the elements wanted inside sequences (top-level ones are not read).
    limits : HeaderLimits, optional
        Bounds on the header; :data:`DEFAULT_LIMITS` when not given.

    Raises
    ------
    InvalidDicomError
        As :func:`read_header`, and when a wanted number is no whole number of values.
    HeaderLimitError
        When the header passes one of the ``limits``.
    """
    path = os.fspath(path)
    found: list[tuple[Location, str, Any]] = []
    keyword_of = {int(tag_for_keyword(kw) or 0): kw for kw in keywords}

    def decode(tag: int) -> Callable[[bytes, str, Location], None]:
        keyword = keyword_of[tag]

        def collect(raw: bytes, vr: str, where: Location) -> None:
            if not vr or vr == "UN":
                vr = _dictionary_vr(tag)
            size = 4 if vr == "AT" else struct.calcsize(_NUMBER_FORMATS.get(vr, "B"))
            if len(raw) % size:
                raise _Malformed(f"{keyword} of {len(raw)} bytes is no whole number of {vr}s")
            try:
                value = walker._decode(raw, vr)
            except OverflowError as exc:  # an IS of 1e999: no integer
                raise _Malformed(f"{keyword}: {exc}") from None
            found.append((where, keyword, value))

        return collect

    with open_regular(path) as file:
        walker = _Walker(
            file, path, limits or DEFAULT_LIMITS, nested={tag: decode(tag) for tag in keyword_of}
        )
        walker.walk(through_pixels=False)
    return NestedValues(found, dict(walker.top_items))


def referenced_file_ids(
    path: str | os.PathLike[str], *, limits: HeaderLimits | None = None
) -> list[list[str]]:
    """The (0004,1500) *Referenced File ID* of every record of a DICOMDIR or DIRFILE.

    Each is a list of path components relative to the file-set's root folder, as
    written; nothing is checked or opened here. The record sequence may hold up to
    ``limits.max_elements`` records.

    Raises
    ------
    InvalidDicomError, HeaderLimitError
        As :func:`read_header`.
    """
    path = os.fspath(path)
    limits = limits or DEFAULT_LIMITS
    directory_limits = HeaderLimits(
        limits.max_header_bytes, limits.max_elements, limits.max_elements, limits.max_depth
    )
    found: list[list[str]] = []

    def collect(raw: bytes, _vr: str, _where: Location) -> None:
        parts = [p.strip(" \0") for p in raw.decode("latin-1").split("\\")]
        if any(parts):
            found.append(parts)

    with open_regular(path) as file:
        walker = _Walker(
            file,
            path,
            directory_limits,
            nested={_REFERENCED_FILE_ID: collect},
            directory_records=True,
        )
        walker.walk(through_pixels=False)
    return found


def open_regular(path: str) -> BinaryIO:
    """Open a regular file without blocking: FIFOs, devices and sockets are refused."""

    def opener(name: str, flags: int) -> int:
        return os.open(name, flags | os.O_NONBLOCK)

    try:
        file = open(path, "rb", opener=opener)  # noqa: SIM115 - returned to a with block
    except OSError as exc:
        raise InvalidDicomError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    mode = os.fstat(file.fileno()).st_mode
    if not stat.S_ISREG(mode):
        file.close()
        raise InvalidDicomError(f"{path}: not a regular file ({file_kind(mode)})")
    return file


def file_kind(mode: int) -> str:
    """A name for the kind of file an ``st_mode`` describes: FIFO, socket, device..."""
    kinds = (
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "named pipe (FIFO)"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _read_with_pydicom(path: str) -> dict[str, Any]:
    """The index tags as pydicom decodes them (for character sets the walker leaves)."""
    ds = read_dataset(path, specific_tags=list(INDEX_KEYWORDS))
    return {kw: plain_value(ds[kw].value) for kw in INDEX_KEYWORDS if kw in ds}


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


class _Source:
    """Bytes of a file through a small moving window, or of an inflated data set."""

    def __init__(self, file: BinaryIO, data: bytes | None = None) -> None:
        self.file = file
        self.base = 0  # offset of data[0] in the file's (or the inflated) bytes
        self.data = data if data is not None else file.read(_CHUNK)
        self.whole = data is not None
        self.size = len(data) if data is not None else os.fstat(file.fileno()).st_size

    def read(self, offset: int, n: int) -> bytes:
        end = offset + n
        if end > self.size:
            raise _Truncated(offset, n, self.size)
        if self.whole or (offset >= self.base and end <= self.base + len(self.data)):
            return self.data[offset - self.base : end - self.base]
        self.file.seek(offset)
        self.base = offset
        self.data = self.file.read(max(n, _CHUNK))
        return self.data[:n]


class _Truncated(Exception):
    def __init__(self, offset: int, n: int, size: int) -> None:
        super().__init__(f"needs {n} bytes at byte {offset}, the data ends at byte {size}")


class _Walker:
    """One pass over a file's elements: bounds, truncation, and the wanted values.

    ``wanted`` maps top-level tags to (keyword, VR) to decode into :attr:`values`;
    ``nested`` maps tags at any depth to a callback given their raw value, their VR and
    where they lie (:attr:`where`); :attr:`top_items` counts the items of each top-level
    sequence. With ``private``, the top-level :data:`PRIVATE_ELEMENTS` of their own
    creators go to :attr:`private_values`.
    """

    def __init__(
        self,
        file: BinaryIO,
        path: str,
        limits: HeaderLimits,
        *,
        wanted: dict[int, tuple[str, str]] | None = None,
        nested: dict[int, Callable[[bytes, str, Location], None]] | None = None,
        directory_records: bool = False,
        private: bool = False,
    ) -> None:
        self.path = path
        self.private = private
        self.creators: dict[tuple[int, int], str] = {}  # (group, block) -> private creator
        self.private_values: dict[str, Any] = {}
        self.limits = limits
        self.wanted = wanted or {}
        self.nested = nested or {}
        self.where: list[list[int]] = []  # [sequence tag, item index] of each enclosing item
        self.top_items: dict[int, int] = {}
        self.source = _Source(file)
        self.values: dict[str, Any] = {}
        self.encoding = "latin-1"
        self.endian = "<"
        self.elements = 0
        self.pixel_bytes = 0  # the top-level pixel data value, not part of the header
        self.decode_with_pydicom = False
        self.pixels = False  # a top-level pixel data element was met
        self.directory = False
        self.directory_records = directory_records
        self.inflater: Any = None

    # -- entry ---------------------------------------------------------------------------

    def walk(self, *, through_pixels: bool) -> None:
        """Walk the whole header (and past the pixel data when asked), or raise."""
        try:
            self._walk(through_pixels)
        except _Truncated as exc:
            if self.inflater is not None and len(self.source.data) > self.limits.max_header_bytes:
                self._refuse(f"a header of more than {self.limits.max_header_bytes} bytes")
            raise InvalidDicomError(f"{self.path}: truncated: {exc}") from None
        except (_Malformed, struct.error, UnicodeDecodeError, ValueError, zlib.error) as exc:
            if isinstance(exc, DicomArrayError):
                raise
            raise InvalidDicomError(f"{self.path}: malformed header: {exc}") from None

    def _walk(self, through_pixels: bool) -> None:
        if self.source.size >= 2 and self.source.read(0, 2) == _GZIP_MAGIC:
            # exporters and archives ship *.dcm.gz; say so rather than "not DICOM"
            raise InvalidDicomError(f"{self.path}: gzip-compressed, not read (gunzip it first)")
        if self.source.size < 132 or self.source.read(128, 4) != b"DICM":
            raise InvalidDicomError(f"{self.path}: not DICOM (no 'DICM' after the preamble)")
        pos, syntax, media_class = self._read_meta(132)
        offsets = syntax in _OFFSET_SYNTAXES or UID(syntax).is_encapsulated
        self.values.update(
            TransferSyntaxUID=syntax,
            MediaStorageSOPClassUID=media_class,
            pixel_data_offset=None,
            pixel_data_length=None,
            file_size=self.source.size,
        )
        if media_class == DIRECTORY_SOP_CLASS and not self.directory_records:
            self.directory = True  # its records are not read as an instance's tags
            return
        if syntax == _DEFLATED:
            self._inflate(pos)
            pos, offsets = 0, False
        self.endian = ">" if syntax == _BIG_ENDIAN else "<"
        explicit = self._looks_explicit(pos) if pos + 8 <= self.source.size else True
        if syntax == _DEFLATED:
            # only the start is inflated for the walk; the size check bounds the rest
            self._data_set(pos, None, explicit, depth=0, through_pixels=False)
            self._check_inflated_size()
        else:
            self._data_set(pos, None, explicit, depth=0, through_pixels=through_pixels)
        if not offsets:
            self.values.update(pixel_data_offset=None, pixel_data_length=None)

    def _read_meta(self, pos: int) -> tuple[int, str, str | None]:
        syntax = media_class = None
        while pos < self.source.size:
            head = self.source.read(pos, 8)  # raises inside a cut element
            if struct.unpack_from("<H", head)[0] != 0x0002:
                break
            tag, length, value_pos, _vr = self._explicit_element(pos, head, "<")
            self._count(value_pos + length)
            if value_pos + length > self.source.size:
                raise _Truncated(value_pos, length, self.source.size)
            if tag in (_TRANSFER_SYNTAX, _MEDIA_STORAGE_CLASS):
                value = self.source.read(value_pos, length).decode("ascii").rstrip("\0 ")
                if tag == _TRANSFER_SYNTAX:
                    syntax = value
                else:
                    media_class = value
            pos = value_pos + length
        if not syntax:
            raise InvalidDicomError(f"{self.path}: no transfer syntax in the file meta group")
        return pos, syntax, media_class

    def _inflate(self, pos: int) -> None:
        """Inflate a deflated data set, refusing one that grows past its bounds."""
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self.source.file.seek(pos)
        cap = self.limits.max_header_bytes
        data = bytearray()
        while len(data) <= cap and not inflater.eof:
            chunk = inflater.unconsumed_tail or self.source.file.read(_INFLATE_CHUNK)
            if not chunk:
                break
            data += inflater.decompress(chunk, cap + 1 - len(data))
        self.source = _Source(self.source.file, data=bytes(data))
        self.inflater = inflater

    # -- data sets -----------------------------------------------------------------------

    def _data_set(
        self, pos: int, end: int | None, explicit: bool, *, depth: int, through_pixels: bool = False
    ) -> int:
        """Walk one data set from ``pos`` to ``end`` (or its item delimiter when None)."""
        endian = self.endian
        top = depth == 0
        size = self.source.size
        while True:
            if end is not None and pos >= end:
                if pos != end:
                    raise _Malformed(f"an element crosses the end of its item at byte {end}")
                return pos
            if top and pos + 8 > size:
                if pos != size:
                    raise _Truncated(pos, 8, size)
                if "Rows" in self.values and "Columns" in self.values and not self.pixels:
                    raise InvalidDicomError(
                        f"{self.path}: truncated: an image header ends at byte {pos}, "
                        "before any pixel data"
                    )
                return pos
            head = self.source.read(pos, 8)
            if explicit:
                tag, length, value_pos, vr = self._explicit_element(pos, head, endian)
            else:
                group, element, length = struct.unpack_from(endian + "HHI", head)
                tag, value_pos = (group << 16) | element, pos + 8
                vr = _implicit_vr(tag)
            if tag == _ITEM_END and end is None and not top:
                return pos + 8
            self.elements += 1
            if self.elements > self.limits.max_elements:
                self._refuse(f"more than {self.limits.max_elements} data elements and items")
            if top and tag in _PIXEL_TAGS:
                self.pixels = True
            if tag == _PIXEL_DATA and top:
                pos = self._pixel_data(value_pos, length, through_pixels)
                if not through_pixels:
                    return pos
                continue
            pos = self._value(tag, vr, value_pos, length, explicit, depth, top)

    def _value(
        self, tag: int, vr: str, pos: int, length: int, explicit: bool, depth: int, top: bool
    ) -> int:
        """Step over (or into) one element's value; returns the position after it."""
        if length == _UNDEFINED:
            if vr in ("OB", "OW") or tag == _PIXEL_DATA:
                return self._fragments(pos)
            # an SQ, or UN / an unknown private tag holding implicit VR little-endian items
            inner = explicit and vr == "SQ"
            return self._sequence(pos, None, inner, depth + 1, little=not inner, tag=tag)
        self._count(pos + length)
        if vr == "SQ" or (vr == "UN" and _dictionary_vr(tag) == "SQ"):
            inner = explicit and vr == "SQ"
            return self._sequence(pos, pos + length, inner, depth + 1, little=not inner, tag=tag)
        if top and tag in self.wanted:
            self._decode_wanted(tag, pos, length)
        elif top and self.private and tag >> 16 in _PRIVATE_GROUPS:
            self._decode_private(tag, vr, pos, length)
        elif tag in self.nested:
            where = tuple((t, i) for t, i in self.where)
            self.nested[tag](self.source.read(pos, length), vr, where)
        elif pos + length > self.source.size:
            raise _Truncated(pos, length, self.source.size)
        return pos + length

    def _sequence(
        self, pos: int, end: int | None, explicit: bool, depth: int, *, little: bool, tag: int
    ) -> int:
        if depth > self.limits.max_depth:
            self._refuse(f"sequences nested more than {self.limits.max_depth} deep")
        saved, self.endian = self.endian, ("<" if little else self.endian)
        items = 0
        self.where.append([tag, -1])
        sequence_tag = tag
        while end is None or pos < end:
            group, element, length = struct.unpack(self.endian + "HHI", self.source.read(pos, 8))
            tag = (group << 16) | element
            pos += 8
            if tag == _SEQUENCE_END and end is None:
                break
            if tag != _ITEM:
                raise _Malformed(f"tag ({group:04X},{element:04X}) in a sequence at byte {pos - 8}")
            items += 1
            self.elements += 1  # pydicom makes a data set of each item
            if self.elements > self.limits.max_elements:
                self._refuse(f"more than {self.limits.max_elements} data elements and items")
            if items > self.limits.max_items:
                self._refuse(f"more than {self.limits.max_items} items in one sequence")
            self.where[-1][1] = items - 1
            item_end = None if length == _UNDEFINED else pos + length
            if item_end is not None:
                self._count(item_end)
            pos = self._data_set(pos, item_end, explicit, depth=depth)
        if end is not None and pos != end:
            raise _Malformed(f"an item crosses the end of its sequence at byte {end}")
        self.endian = saved
        self.where.pop()
        if depth == 1:
            self.top_items[sequence_tag] = items
        return pos

    def _fragments(self, pos: int) -> int:
        """Step over encapsulated fragments: items of raw bytes up to a sequence end."""
        while True:
            group, element, length = struct.unpack(self.endian + "HHI", self.source.read(pos, 8))
            tag = (group << 16) | element
            if tag == _SEQUENCE_END:
                return pos + 8
            if tag != _ITEM or length == _UNDEFINED:
                raise _Malformed(f"tag ({group:04X},{element:04X}) among fragments at byte {pos}")
            pos += 8 + length

    def _pixel_data(self, pos: int, length: int, through_pixels: bool) -> int:
        """Note where the top-level pixel data lies; step over it when asked to go on."""
        defined = length != _UNDEFINED
        self.values["pixel_data_offset"] = pos  # encapsulated: where its items start
        self.values["pixel_data_length"] = length if defined else None
        if not through_pixels:
            return pos
        if not defined:
            start = pos
            pos = self._fragments(pos)
            self.pixel_bytes += pos - start
            return pos
        if pos + length > self.source.size:
            raise _Truncated(pos, length, self.source.size)
        self.pixel_bytes += length
        return pos + length

    # -- elements and values -------------------------------------------------------------

    def _explicit_element(self, pos: int, head: bytes, endian: str) -> tuple[int, int, int, str]:
        group, element = struct.unpack_from(endian + "HH", head)
        vr = head[4:6]
        tag = (group << 16) | element
        if tag in (_ITEM, _ITEM_END, _SEQUENCE_END):  # delimiters carry no VR
            return tag, struct.unpack_from(endian + "I", head, 4)[0], pos + 8, ""
        if vr in _LONG_VRS:
            length = struct.unpack(endian + "I", self.source.read(pos + 8, 4))[0]
            return tag, length, pos + 12, vr.decode()
        if not vr.isalpha() or not vr.isupper():
            raise _Malformed(f"VR {vr!r} of ({group:04X},{element:04X}) at byte {pos}")
        return tag, struct.unpack_from(endian + "H", head, 6)[0], pos + 8, vr.decode()

    def _looks_explicit(self, pos: int) -> bool:
        """Whether the data set's first element has a VR: pydicom checks the same way."""
        vr = self.source.read(pos, 8)[4:6]
        return vr.isalpha() and vr.isupper()

    def _count(self, header_end: int) -> None:
        if header_end - self.pixel_bytes > self.limits.max_header_bytes:
            self._refuse(f"a header of more than {self.limits.max_header_bytes} bytes")

    def _refuse(self, what: str) -> None:
        raise HeaderLimitError(
            f"{self.path}: refused: {what} (a bound of dicomarray.header.HeaderLimits)"
        )

    def _check_inflated_size(self) -> None:
        """A deflated data set may not inflate past its header and declared pixel data.

        pydicom inflates the whole data set even for a header, so all of it is bounded.
        """
        allowed = self.limits.max_header_bytes + _declared_pixel_bytes(self.values)
        total = len(self.source.data)
        file = self.source.file
        while not self.inflater.eof and total <= allowed:
            chunk = self.inflater.unconsumed_tail or file.read(_INFLATE_CHUNK)
            if not chunk:
                break
            total += len(self.inflater.decompress(chunk, _INFLATE_CHUNK))
        if total > allowed:
            self._refuse(f"deflated data inflating to more than {allowed} bytes")

    def _decode_wanted(self, tag: int, pos: int, length: int) -> None:
        keyword, vr = self.wanted[tag]
        raw = self.source.read(pos, length)
        if self.decode_with_pydicom:
            return  # pydicom decodes this file's values afterwards
        try:
            self.values[keyword] = self._decode(raw, vr)
        except (ValueError, UnicodeDecodeError, struct.error):
            self.decode_with_pydicom = True  # a value pydicom may still make sense of
            return
        if keyword == "SpecificCharacterSet":
            self._set_encoding(self.values[keyword])

    def _decode_private(self, tag: int, vr: str, pos: int, length: int) -> None:
        """Note a private creator, or decode a :data:`PRIVATE_ELEMENTS` of its creator."""
        group, element = tag >> 16, tag & 0xFFFF
        raw = self.source.read(pos, length)
        if 0x0010 <= element <= 0x00FF:  # (gggg,00xx) names the creator of (gggg,xx00-xxFF)
            self.creators[group, element] = raw.decode("latin-1").strip(" \0")
            return
        creator = self.creators.get((group, element >> 8))
        entry = PRIVATE_ELEMENTS.get((group, creator or "", element & 0xFF))
        if entry is None:
            return
        name, known_vr = entry
        try:  # implicit VR, or made UN by a tool that did not know the creator
            self.private_values[name] = self._decode(raw, known_vr if vr in ("", "UN") else vr)
        except (ValueError, UnicodeDecodeError, struct.error):
            return  # a vendor value that is no number is no b-value either

    def _set_encoding(self, charset: Any) -> None:
        name = charset[0] if isinstance(charset, list) else (charset or "")
        if name not in _CHARSETS or (isinstance(charset, list) and len(charset) > 1):
            self.decode_with_pydicom = True
            return
        self.encoding = _CHARSETS[name]

    def _decode(self, raw: bytes, vr: str) -> Any:
        if vr == "AT":  # attribute tags: (group, element) pairs, each in the file's endian
            halves = struct.unpack_from(f"{self.endian}{len(raw) // 4 * 2}H", raw)
            return _single_or_list(
                g << 16 | e for g, e in zip(halves[::2], halves[1::2], strict=True)
            )
        if vr in _NUMBER_FORMATS:
            fmt = _NUMBER_FORMATS[vr]
            count = len(raw) // struct.calcsize(fmt)
            numbers = struct.unpack_from(f"{self.endian}{count}{fmt}", raw)
            return _single_or_list(plain_value(v) for v in numbers)
        text = raw.decode(
            self.encoding if vr in {"PN", "LO", "SH", "LT", "ST", "UT"} else "latin-1"
        )
        if vr in _TEXT_VRS:
            return text.strip(" \0") or None
        parts = [_parse_text(part, vr) for part in text.rstrip("\0").split("\\")]
        if len(parts) == 1 and parts[0] is None:
            return None
        return _single_or_list(parts)


_VR_CACHE: dict[int, str] = {}


def _dictionary_vr(tag: int) -> str:
    """The dictionary VR of a tag; ``UN`` for private and unknown tags."""
    vr = _VR_CACHE.get(tag)
    if vr is None:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
        _VR_CACHE[tag] = vr
    return vr


def _implicit_vr(tag: int) -> str:
    if tag in (_ITEM, _ITEM_END, _SEQUENCE_END):
        return ""
    return _dictionary_vr(tag)


def _declared_pixel_bytes(values: dict[str, Any]) -> int:
    """The bytes of pixel data a header declares (Rows x Columns x frames x samples x bits)."""
    factors = []
    for keyword, default in (
        ("Rows", 0),
        ("Columns", 0),
        ("NumberOfFrames", 1),
        ("SamplesPerPixel", 1),
        ("BitsAllocated", 8),
    ):
        value = values.get(keyword)
        factors.append(value if isinstance(value, int) and value > 0 else default)
    rows, columns, frames, samples, bits = factors
    return rows * columns * frames * samples * math.ceil(bits / 8)


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
