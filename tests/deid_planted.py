"""A study with an identifying string in every place the de-identification profile covers.

:func:`write_planted_study` writes a CT and an MR series (4 slices of 16 x 16 each, valid
geometry, so both open) and a CT series with one cut file (it fails to assemble), in a
tree whose folder and file names hold the patient's name. In each series every attribute
of PS3.15 Table E.1-1 (``dicomarray/deid/table_e1_1.csv``) that pydicom's dictionary knows
holds a unique planted value valid for its VR, as do private tags (top level and nested),
an overlay group, a curve group, the file meta's source AE title, and the Series
Description and Protocol Name, which also hold the patient's name. Each sequence of the
table gets an item with a planted name and UID and, three sequences deeper, an item with
a planted ID and a private element.

:func:`tokens_in` finds the planted values in any bytes, in the forms a writer may put
them in (a date as ``19450312`` or ``1945-03-12``, a time as ``121314.771234``,
``12:13:14.771234`` or seconds of the day), so a leak is found whatever the exporter made
of the value.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.datadict import (
    dictionary_has_tag,
    dictionary_VM,
    dictionary_VR,
    keyword_for_tag,
    tag_for_keyword,
)
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from dicomarray.deid.profile import ProfileOptions, action_for, rules

#: Every planted UID starts so (the 2.25 form the pseudonyms take cannot hold it).
UID_ROOT = "1.2.826.0.1.3680043.9.7777."
#: Every planted time is this time of day; its fraction ``77nnnn`` tells them apart.
TIME = "121314"
_SECONDS_OF_DAY = "43994"  # 12 h 13 min 14 s: a writer may turn a time into seconds
#: VRs whose values are binary numbers: a number there cannot be found by a byte search
#: (it could be any bytes of the pixel data), so they are not planted.
BINARY_VRS = frozenset(
    ("AT", "FL", "FD", "OD", "OF", "OL", "OV", "SL", "SS", "SV", "UL", "US", "UV")
)
#: The kept (K, not in the table) sequence that nests the items three deep.
NESTING = tag_for_keyword("ConceptNameCodeSequence")
PERSON_NAME = tag_for_keyword("PersonName")  # D: a dummy at any depth
REFERENCED_UID = tag_for_keyword("ReferencedSOPInstanceUID")  # U: a pseudonym at any depth
OTHER_IDS = tag_for_keyword("OtherPatientIDs")  # X: removed at any depth
#: Descriptions planted with the patient's name in them.
_DESCRIPTIONS = (tag_for_keyword("SeriesDescription"), tag_for_keyword("ProtocolName"))
SOP_INSTANCE_UID = tag_for_keyword("SOPInstanceUID")  # one per slice
#: Slices of each series, and their rows and columns.
SLICES, SIZE = 4, 16
_SKIPPED_GROUPS = {
    # a file cannot hold command elements (pydicom refuses to write them)
    0x0000: "command element: not allowed in a file",
    # the file meta is planted apart: its SOP Instance UID is the dataset's
    0x0002: "file meta: planted as the SOP Instance UID",
}


@dataclass(frozen=True)
class Planted:
    """One planted string: the form :func:`tokens_in` reports it in, and where it is.

    ``tags`` is the element's path of tags from the top level of the dataset (a sequence's
    tag, then the tag inside its item ...); empty for file and folder names.
    """

    token: str
    where: str
    tags: tuple[int, ...] = ()
    vr: str = ""

    def kept_under(self, options: ProfileOptions) -> bool:
        """Whether the profile keeps this value as it is under ``options`` (so finding it in
        an output is no leak): every sequence on its path is kept (``K``, ``C``, ``U*``: the
        items' attributes decide) and its own action keeps the value (``K``, or ``C`` except
        for a date moved by Modified Dates). Names, private tags, curves and overlays never
        are."""
        if not self.tags or any(_is_removed_group(tag) for tag in self.tags):
            return False
        actions = [action_for(tag, options) for tag in self.tags]
        if any(action in ("X", "Z", "D") for action in actions[:-1]):
            return False
        if actions[-1] == "C":
            return not (options.retain_modified_dates and self.vr in ("DA", "DT"))
        return actions[-1] == "K"


def _is_removed_group(tag: int) -> bool:
    """Private (odd group), curve (50xx) or overlay (60xx): removed whole by the profile."""
    group = tag >> 16
    return group % 2 == 1 or group & 0xFF00 in (0x5000, 0x6000)


@dataclass
class PlantedStudy:
    """What :func:`write_planted_study` wrote."""

    root: Path
    #: ``CT``, ``MR`` and ``CUT`` (its third file cut short) -> the series' files
    series: dict[str, list[Path]]
    planted: list[Planted]
    #: keywords of table attributes left out -> why
    not_planted: dict[str, str]

    def where(self, token: str) -> list[str]:
        """Where a token was planted (a per-slice SOP Instance UID is also the file meta's)."""
        return [p.where for p in self.planted if p.token == token]

    def tokens(self, options: ProfileOptions | None = None) -> set[str]:
        """The planted tokens, less those ``options`` keep (:meth:`Planted.kept_under`)."""
        if options is None:
            return {p.token for p in self.planted}
        kept = {p.token for p in self.planted if p.kept_under(options)}
        return {p.token for p in self.planted} - kept


@dataclass
class _Planter:
    """Hands out unique values by VR and records where each went."""

    number: int = 1000  # four digits throughout: no token is the start of another
    days: int = 0
    ages: int = 10
    planted: list[Planted] = field(default_factory=list)
    not_planted: dict[str, str] = field(default_factory=dict)

    def text(self, where: str, tags: tuple[int, ...] = (), vr: str = "LO") -> str:
        """``PLANTED<n>X`` (recorded as ``PLANTED<n>``)."""
        self.number += 1
        self.planted.append(Planted(f"PLANTED{self.number}", where, tags, vr))
        return f"PLANTED{self.number}X"

    def value(self, vr: str, where: str, tags: tuple[int, ...], vm: int = 1) -> object:
        """A planted value valid for ``vr`` (``vm`` values of a fixed multiplicity)."""
        if vr in ("DS", "IS"):
            token, value = self._record(f"7777{self._next()}", where, tags, vr)
            return [value] * vm if vm > 1 else value
        if vr == "UI":
            return self._record(f"{UID_ROOT}{self._next()}", where, tags, vr)[1]
        if vr == "TM":
            return self._record(f"{TIME}.77{self._next()}", where, tags, vr)[1]
        if vr in ("DA", "DT"):
            date = self._record(self._date(), where, tags, vr)[1]
            return date if vr == "DA" else date + TIME
        if vr == "AS":
            self.ages += 1
            return self._record(f"0{self.ages}Y", where, tags, vr)[1]
        text = self.text(where, tags, vr)
        if vr == "PN":
            return f"{text}^{text[:-1]}Y"
        if vr == "UR":
            return f"http://planted.invalid/{text}"
        return text.encode() if vr in ("OB", "OW", "UN") else text

    def _next(self) -> int:
        self.number += 1
        return self.number

    def _date(self) -> str:
        """``19nn0m1d``, unique for each of 9000 calls (and a valid date)."""
        day = self.days
        self.days += 1
        return f"19{day % 100:02d}0{1 + day // 100 % 9}1{day // 900 % 10}"

    def _record(self, token: str, where: str, tags: tuple[int, ...], vr: str) -> tuple[str, str]:
        self.planted.append(Planted(token, where, tags, vr))
        return token, token


def write_planted_study(root: Path) -> PlantedStudy:
    """Write the planted CT, MR and cut CT series under ``root`` (see the module's text)."""
    planter = _Planter()
    series: dict[str, list[Path]] = {}
    for label, modality in (("CT", "CT"), ("MR", "MR"), ("CUT", "CT")):
        series[label] = _write_series(root, planter, label, modality)
    _cut_pixel_data(series["CUT"][2])
    return PlantedStudy(root, series, planter.planted, planter.not_planted)


def _cut_pixel_data(path: Path) -> None:
    """Cut the file in its Pixel Data (elements after it, such as the trailing padding,
    go too): its header still reads, its pixels cannot."""
    data = path.read_bytes()
    start = data.rindex(b"\xe0\x7f\x10\x00OW")  # (7FE0,0010), explicit VR little endian
    path.write_bytes(data[: start + 12 + SIZE * SIZE])  # tag, VR, length: half the pixels


def _write_series(root: Path, planter: _Planter, label: str, modality: str) -> list[Path]:
    header = _planted_header(planter, label)
    family = str(header.PatientName).split("^")[0]
    folder = (
        root
        / f"{family}_{planter.text(f'{label}: patient folder name')}"
        / f"study_{planter.text(f'{label}: study folder name')}"
        / f"{label}_{planter.text(f'{label}: series folder name')}"
    )
    folder.mkdir(parents=True)
    stem = f"{family}_{planter.text(f'{label}: file names')}"
    paths = []
    for index in range(SLICES):
        ds = _slice(header, planter, label, modality, index)
        path = folder / f"{stem}_{index:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _planted_header(planter: _Planter, label: str) -> Dataset:
    """Every table attribute pydicom knows, planted; then the extras the table does not list."""
    ds = Dataset()
    for tag in _table_tags(planter):
        if tag not in (*_DESCRIPTIONS, SOP_INSTANCE_UID):  # planted apart
            _plant(ds, planter, tag, label, ())
    family = str(ds.PatientName).split("^")[0]
    for tag in _DESCRIPTIONS:  # they also name the patient (Clean Descriptors must see it)
        where = f"{label}: {keyword_for_tag(tag)}"
        ds.add_new(tag, "LO", f"{planter.text(where, (tag,))} of {family}")
    _plant_private(ds, planter, label, (), 0x0009)
    _plant_graphics(ds, planter, label)
    return ds


def _table_tags(planter: _Planter) -> Iterator[int]:
    """The tags of the table's rows that can be planted; the others go to ``not_planted``."""
    for text, rule in rules().items():
        if "x" in text:
            continue  # repeating groups (curves, overlays): planted apart, in group 5000/6000
        tag = int(text, 16)
        if tag >> 16 in _SKIPPED_GROUPS:
            planter.not_planted[rule.keyword] = _SKIPPED_GROUPS[tag >> 16]
        elif not dictionary_has_tag(tag):
            planter.not_planted[rule.keyword] = f"pydicom {pydicom.__version__} does not know it"
        elif _vr(tag) in BINARY_VRS:
            planter.not_planted[rule.keyword] = f"binary VR {_vr(tag)}"
        else:
            yield tag


def _vr(tag: int) -> str:
    """The tag's VR; the first of a choice (``OB or OW`` -> ``OB``, ``US or SS`` -> ``US``)."""
    return dictionary_VR(tag).split(" or ")[0]


def _plant(ds: Dataset, planter: _Planter, tag: int, label: str, path: tuple[int, ...]) -> None:
    tags = (*path, tag)
    where = f"{label}: " + " > ".join(keyword_for_tag(t) or f"{t:08X}" for t in tags)
    vr = _vr(tag)
    if vr == "SQ":
        ds.add_new(tag, "SQ", Sequence([_item(planter, label, tags)]))
        return
    vm = dictionary_VM(tag)
    ds.add_new(tag, vr, planter.value(vr, where, tags, int(vm) if vm.isdigit() else 1))


def _item(planter: _Planter, label: str, path: tuple[int, ...]) -> Dataset:
    """A planted name and UID, then three kept sequences down an item with a planted ID
    and a private element: the profile must reach every depth."""
    item = Dataset()
    _plant(item, planter, PERSON_NAME, label, path)
    _plant(item, planter, REFERENCED_UID, label, path)
    deepest, deep_path = item, path
    for _ in range(3):
        inner = Dataset()
        deepest.add_new(NESTING, "SQ", Sequence([inner]))
        deepest, deep_path = inner, (*deep_path, NESTING)
    _plant(deepest, planter, OTHER_IDS, label, deep_path)
    _plant_private(deepest, planter, label, deep_path, 0x0011)
    return item


def _plant_private(
    ds: Dataset, planter: _Planter, label: str, path: tuple[int, ...], group: int
) -> None:
    """A private block: its creator, a text, bytes and a sequence holding a planted name."""
    creator = planter.text(
        f"{label}: private creator ({group:04X},0010)", (*path, group << 16 | 0x10)
    )
    ds.add_new(group << 16 | 0x0010, "LO", creator)
    block = ds.private_block(group, creator)
    for offset, vr in ((0x01, "LO"), (0x02, "OB"), (0x03, "SQ")):
        tag = block.get_tag(offset)
        where = f"{label}: private ({tag >> 16:04X},{tag & 0xFFFF:04X}) {vr}"
        if vr == "SQ":
            inner = Dataset()
            inner.add_new(PERSON_NAME, "PN", planter.value("PN", where, (*path, tag, PERSON_NAME)))
            block.add_new(offset, "SQ", Sequence([inner]))
        else:
            block.add_new(offset, vr, planter.value(vr, where, (*path, tag)))


def _plant_graphics(ds: Dataset, planter: _Planter, label: str) -> None:
    """An overlay (6000) with data, description, label and comment, and a curve (5000)."""
    ds.add_new(0x60000010, "US", SIZE)  # OverlayRows
    ds.add_new(0x60000011, "US", SIZE)  # OverlayColumns
    ds.add_new(0x60000040, "CS", "G")  # OverlayType
    ds.add_new(0x60000050, "SS", [1, 1])  # OverlayOrigin
    ds.add_new(0x60000100, "US", 1)  # OverlayBitsAllocated
    ds.add_new(0x60000102, "US", 0)  # OverlayBitPosition
    for tag, vr in ((0x60000022, "LO"), (0x60001500, "LO"), (0x60004000, "LT")):
        ds.add_new(
            tag,
            vr,
            planter.text(f"{label}: overlay ({tag >> 16:04X},{tag & 0xFFFF:04X})", (tag,), vr),
        )
    data = planter.text(f"{label}: OverlayData (6000,3000)", (0x60003000,), "OW").encode()
    ds.add_new(0x60003000, "OW", data.ljust(SIZE * SIZE // 8, b"\0"))
    ds.add_new(0x50000005, "US", 1)  # CurveDimensions
    ds.add_new(0x50000010, "US", 2)  # NumberOfPoints
    for tag, vr in ((0x50000020, "CS"), (0x50000022, "LO"), (0x50002500, "LO"), (0x50003000, "OB")):
        value = planter.text(f"{label}: curve ({tag >> 16:04X},{tag & 0xFFFF:04X})", (tag,), vr)
        ds.add_new(tag, vr, value.encode() if vr == "OB" else value)


def _slice(header: Dataset, planter: _Planter, label: str, modality: str, index: int) -> Dataset:
    """One slice: the planted header, its own planted SOP Instance UID, geometry and pixels."""
    ds = copy.deepcopy(header)
    uid = planter.value(
        "UI",
        f"{label}: SOPInstanceUID = MediaStorageSOPInstanceUID (slice {index})",
        (SOP_INSTANCE_UID,),
    )
    ds.SOPInstanceUID = uid
    ds.SOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    ds.Modality = modality
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [-8.0, -8.0, 2.0 * index]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = 2.0
    _set_pixels(ds, modality, index)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.SourceApplicationEntityTitle = planter.text(
        f"{label}: file meta SourceApplicationEntityTitle (slice {index})", (0x00020016,), "AE"
    )
    return ds


def _set_pixels(ds: Dataset, modality: str, index: int) -> None:
    values = (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 200 + 10 * index).astype(np.int16)
    ds.Rows = ds.Columns = SIZE
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if modality == "CT" else 0
    if modality == "CT":
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
    ds.PixelData = values.astype(np.int16 if modality == "CT" else np.uint16).tobytes()


_TOKEN_PATTERNS: tuple[tuple[re.Pattern[bytes], str], ...] = (
    (re.compile(rb"planted(\d{4})"), "PLANTED{0}"),
    (re.compile(rb"3680043\.9\.7777\.(\d{4})(?!\d)"), UID_ROOT + "{0}"),
    # a date, with or without dashes (a DT's date part too), not inside a longer number
    (re.compile(rb"(?<![\d.])(19\d\d)(-?)(0[1-9])\2(1\d)"), "{0}{2}{3}"),
    (re.compile(rb"(?<![\d.])7777(\d{4})(?!\d)"), "7777{0}"),
    (re.compile(rb"(?<!\d)12:?13:?14\.77(\d{4})"), TIME + ".77{0}"),
    (re.compile(rb"(?<!\d)" + _SECONDS_OF_DAY.encode() + rb"\.77(\d{4})"), TIME + ".77{0}"),
    (re.compile(rb"(?<![0-9])0(\d\d)y"), "0{0}Y"),
)


def tokens_in(data: bytes) -> set[str]:
    """The tokens of planted values (as :attr:`Planted.token`) that ``data`` may hold, in
    any letter case; callers keep those they planted."""
    folded = data.lower()
    found = set()
    for pattern, form in _TOKEN_PATTERNS:
        for match in pattern.finditer(folded):
            found.add(form.format(*(g.decode() for g in match.groups())))
    return found
