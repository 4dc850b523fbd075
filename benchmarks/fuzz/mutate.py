"""Mutations of one DICOM file: byte flips, truncation, hostile tag values, deep sequences.

Every mutation is a function ``(rng, data) -> (new_data, description)``: given the same
``random.Random`` state and bytes it returns the same result, so a case is replayed from its
number and the run's seed alone. Tag-level mutations go through pydicom (keeping the file's
own transfer syntax); when pydicom cannot write the hostile value, the element is written
as raw bytes, which is what a hostile file would hold anyway.
"""

from __future__ import annotations

import io
import random
import struct
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Mutation = Callable[[random.Random, bytes], tuple[bytes, str]]

PIXEL_DATA = b"\xe0\x7f\x10\x00"
ITEM = b"\xfe\xff\x00\xe0"

#: Hostile values for image-size tags: zero, one, odd widths, the VR's maximum.
SIZE_VALUES = (0, 1, 3, 7, 255, 4096, 32768, 65535)

#: (keyword, VR, values) of single-tag edits; values are what a hostile file may hold.
TAG_EDITS: tuple[tuple[str, str, tuple[object, ...]], ...] = (
    ("Rows", "US", SIZE_VALUES),
    ("Columns", "US", SIZE_VALUES),
    ("BitsAllocated", "US", (0, 1, 7, 12, 24, 48, 64, 65535)),
    ("BitsStored", "US", (0, 1, 13, 33, 65535)),
    ("HighBit", "US", (0, 31, 40, 65535)),
    ("SamplesPerPixel", "US", (0, 2, 3, 4, 65535)),
    ("PixelRepresentation", "US", (1, 2, 65535)),
    ("PlanarConfiguration", "US", (1, 2)),
    ("NumberOfFrames", "IS", ("0", "-5", "2", "1000", "1000000000", "2.5", "abc", "")),
    ("PhotometricInterpretation", "CS", ("RGB", "YBR_FULL_422", "PALETTE COLOR", "XYZ", "")),
    ("RescaleSlope", "DS", ("0", "-1", "nan", "inf", "1e308", "abc", "")),
    ("RescaleIntercept", "DS", ("1e308", "-inf", "nan", "abc")),
    ("WindowCenter", "DS", ("nan", "1e308", ["40", "400", "1"], "abc")),
    ("WindowWidth", "DS", ("0", "-100", "nan", ["80"], "abc")),
    ("VOILUTFunction", "CS", (["LINEAR", "SIGMOID"], "SIGMOID", "BOGUS", "")),
    ("PixelPaddingValue", "US", (0, 65535)),
    ("SliceThickness", "DS", ("0", "-5", "nan", "abc")),
    ("SpacingBetweenSlices", "DS", ("0", "-5", "nan")),
    ("Modality", "CS", ("", "MR", "XX")),
    ("SeriesInstanceUID", "UI", ("", "1.2.3")),
    ("SOPInstanceUID", "UI", ("", "1.2.3")),
    ("SeriesNumber", "IS", ("", "-1", "99999999999", "abc")),
    ("InstanceNumber", "IS", ("", "abc", "1e9")),
)

#: (keyword, VR, values) of wrong value multiplicities for geometry and display tags.
VM_EDITS: tuple[tuple[str, str, tuple[object, ...]], ...] = (
    ("ImageOrientationPatient", "DS", (["1"], ["1", "0", "0", "0", "1"], ["0"] * 6, ["nan"] * 6)),
    ("ImagePositionPatient", "DS", (["1"], ["1", "2"], ["nan", "0", "0"], ["1e308"] * 3)),
    ("PixelSpacing", "DS", (["0.5"], ["0.5", "0.5", "0.5"], ["0", "0"], ["-1", "nan"])),
    ("ImagerPixelSpacing", "DS", (["0.5"], ["0", "0"])),
    ("VOILUTFunction", "CS", (["LINEAR", "SIGMOID"],)),
    ("WindowCenter", "DS", (["40", "400"],)),
    ("WindowWidth", "DS", (["80", "0"],)),
)

#: Transfer syntaxes a file may lie about (the pixel data stays as it is).
SYNTAX_LIES = (
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.5",
    "1.2.3.4.5",
)


def regions(data: bytes) -> dict[str, tuple[int, int]]:
    """Byte ranges of a Part-10 file: preamble+prefix, meta group, data set, pixel data."""
    meta_end = max(132, _meta_end(data))
    pixel_tag = data.rfind(PIXEL_DATA)
    if pixel_tag < meta_end:
        pixel_tag = len(data)
    return {
        "preamble": (0, min(132, len(data))),
        "meta": (min(132, len(data)), meta_end),
        "dataset": (meta_end, pixel_tag),
        "pixels": (pixel_tag, len(data)),
    }


def _meta_end(data: bytes) -> int:
    """Where the file meta group (0002,xxxx) ends, from its group length when it has one."""
    if data[132:136] == b"\x02\x00\x00\x00" and len(data) >= 144:
        (length,) = struct.unpack("<I", data[140:144])
        return min(len(data), 144 + length)
    return min(len(data), 132)


def _offset_in(rng: random.Random, data: bytes) -> int:
    """A byte offset, a third of the time in each of meta+dataset, pixel data, anywhere."""
    spans = regions(data)
    choice = rng.choice(("header", "pixels", "any"))
    if choice == "header":
        start, end = spans["meta"][0], spans["dataset"][1]
    elif choice == "pixels":
        start, end = spans["pixels"]
    else:
        start, end = 0, len(data)
    if end <= start:
        start, end = 0, len(data)
    return rng.randrange(start, max(start + 1, end))


def byte_flips(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """Set 1 to 16 bytes to random values."""
    out = bytearray(data)
    changed = []
    for _ in range(rng.choice((1, 1, 2, 4, 8, 16))):
        offset = min(_offset_in(rng, data), len(out) - 1)
        out[offset] = rng.randrange(256)
        changed.append(offset)
    return bytes(out), f"bytes set at {sorted(changed)}"


def bit_flips(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """Flip 1 to 8 single bits."""
    out = bytearray(data)
    changed = []
    for _ in range(rng.randint(1, 8)):
        offset = min(_offset_in(rng, data), len(out) - 1)
        out[offset] ^= 1 << rng.randrange(8)
        changed.append(offset)
    return bytes(out), f"bits flipped at {sorted(changed)}"


def truncate(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """Cut the file inside a random region (often just before or after the pixel tag)."""
    spans = regions(data)
    name = rng.choice(("preamble", "meta", "dataset", "pixels", "pixels", "pixel tag"))
    if name == "pixel tag":
        at = spans["pixels"][0] + rng.randint(-2, 12)
    else:
        start, end = spans[name]
        at = rng.randint(start, max(start, end))
    at = max(0, min(at, len(data) - 1))
    return data[:at], f"truncated at {at} ({name})"


def length_lie(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """Change the 32-bit length of the pixel data element or of one encapsulated item."""
    offsets = [i for i in _find_all(data, ITEM)] or []
    pixel_tag = data.rfind(PIXEL_DATA)
    if pixel_tag >= 0:
        offsets.append(pixel_tag + 4)
    if not offsets:
        return byte_flips(rng, data)
    at = rng.choice(offsets)
    # explicit VR OB/OW lengths sit 4 bytes after the VR; items and implicit VR right after
    field = at + 8 if data[at : at + 2] in (b"OB", b"OW") else at + 4
    value = rng.choice((0, 1, 3, 0xFFFFFFFE, 0x7FFFFFF0, rng.randrange(1 << 32)))
    out = data[:field] + struct.pack("<I", value) + data[field + 4 :]
    return out, f"length at {field} set to {value:#x}"


def _find_all(data: bytes, needle: bytes) -> Iterator[int]:
    at = data.find(needle)
    while at >= 0:
        yield at
        at = data.find(needle, at + 1)


def tag_edit(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """Set one image, rescale, window or identity tag to a hostile value."""
    keyword, vr, values = rng.choice(TAG_EDITS)
    value = rng.choice(values)
    return _edited(data, lambda ds: _set(ds, keyword, vr, value), f"{keyword}={value!r}")


def wrong_vm(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """Give a geometry or display tag the wrong number of values (or NaN, zero, huge)."""
    keyword, vr, values = rng.choice(VM_EDITS)
    value = rng.choice(values)
    in_groups = rng.random() < 0.5

    def edit(ds):
        _set_everywhere(ds, keyword, vr, value, in_groups)

    return _edited(data, edit, f"{keyword}={value!r}")


def syntax_lie(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """Claim another transfer syntax in the meta group; the data set stays as it was."""
    uid = rng.choice(SYNTAX_LIES)

    def edit(ds):
        ds.file_meta.TransferSyntaxUID = uid

    return _edited(data, edit, f"TransferSyntaxUID={uid}")


def deep_sequence(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """Add a private sequence nested 50 to 3000 levels deep."""
    depth = rng.choice((50, 150, 300, 1000, 3000))

    def raw(implicit: bool, little: bool) -> bytes:
        order = "<" if little else ">"
        opening = _sequence_head(implicit, order) + struct.pack(order + "HHI", *_ITEM, UNDEFINED)
        closing = struct.pack(order + "HHI", *_ITEM_END, 0) + struct.pack(
            order + "HHI", *_SEQUENCE_END, 0
        )
        return opening * depth + closing * depth

    return _spliced(data, raw, f"sequence {depth} deep")


def many_items(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """Add a private sequence of 1,000 to 100,000 items (or up to 61,000 tiny elements)."""
    count = rng.choice((1_000, 10_000, 30_000, 100_000))
    elements = rng.random() < 0.3

    def raw(implicit: bool, little: bool) -> bytes:
        order = "<" if little else ">"
        if elements:
            return b"".join(
                _element_bytes(0x0009, 0x1001 + i, "SH", b"x ", implicit, order)
                for i in range(min(count, 0xEFFE))
            )
        uid = _element_bytes(0x0008, 0x1155, "UI", b"1.2.3\0", implicit, order)
        item = struct.pack(order + "HHI", *_ITEM, len(uid)) + uid
        ending = struct.pack(order + "HHI", *_SEQUENCE_END, 0)
        return _sequence_head(implicit, order) + item * count + ending

    what = "private elements" if elements else "items"
    return _spliced(data, raw, f"{count} {what}")


UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)

#: A private placeholder element, replaced by raw bytes after pydicom has written the file.
_PLACEHOLDER = (0x0009, 0x1001)
_MARKER = b"FUZZ-PLACEHOLDER"


def _sequence_head(implicit: bool, order: str) -> bytes:
    """The placeholder's tag as a sequence of undefined length."""
    tag = struct.pack(order + "HH", *_PLACEHOLDER)
    if implicit:
        return tag + struct.pack(order + "I", UNDEFINED)
    return tag + b"SQ\0\0" + struct.pack(order + "I", UNDEFINED)


def _element_bytes(group: int, element: int, vr: str, value: bytes, implicit: bool, order: str):
    tag = struct.pack(order + "HH", group, element)
    if implicit:
        return tag + struct.pack(order + "I", len(value)) + value
    return tag + vr.encode() + struct.pack(order + "H", len(value)) + value


def _spliced(
    data: bytes, raw: Callable[[bool, bool], bytes], description: str
) -> tuple[bytes, str]:
    """Write a placeholder element through pydicom, then put ``raw(implicit, little)`` there.

    Building deep or long structures as bytes takes milliseconds where pydicom's writer
    takes a minute; the rest of the file stays as pydicom wrote it. A deflated data set
    cannot be spliced: it keeps the placeholder, and the description says so.
    """

    def edit(ds):
        ds.add_new(0x00090010, "LO", "FUZZ")
        ds.add_new(_PLACEHOLDER[0] << 16 | _PLACEHOLDER[1], "OB", _MARKER)

    out, done = _edited(data, edit, description)
    at = out.find(_MARKER)
    if at < 0:
        return out, f"{done} (not spliced: the data set is deflated)"
    explicit = out[at - 8 : at - 6] == b"OB"
    little = out[at - (12 if explicit else 8)] == _PLACEHOLDER[0]
    start = at - (12 if explicit else 8)
    return out[:start] + raw(not explicit, little) + out[at + len(_MARKER) :], done


def big_header(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """Add one private element of 2 to 16 MB to the header (before the pixel data)."""
    size = rng.choice((2, 8, 16)) * 2**20

    def edit(ds):
        ds.add_new(0x00090010, "LO", "FUZZ")
        ds.add_new(0x00091001, "OB", bytes(size))

    return _edited(data, edit, f"{size // 2**20} MB private element")


def functional_groups(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """Break the functional groups of a multi-frame file (or add broken ones to any file)."""
    choice = rng.choice(("empty per-frame", "fewer frames", "no plane", "empty shared", "bytes"))

    def edit(ds):
        from pydicom.dataset import Dataset
        from pydicom.sequence import Sequence

        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        if choice == "empty per-frame" or per_frame is None:
            ds.PerFrameFunctionalGroupsSequence = Sequence([Dataset()])
        elif choice == "fewer frames" and len(per_frame) > 1:
            ds.PerFrameFunctionalGroupsSequence = Sequence(list(per_frame)[:-1])
        elif choice == "no plane":
            for item in per_frame:
                item.PlanePositionSequence = Sequence([])
        elif choice == "empty shared":
            ds.SharedFunctionalGroupsSequence = Sequence([])
        else:
            ds.add_new(0x52009229, "OB", bytes(rng.randrange(256) for _ in range(64)))

    return _edited(data, edit, f"functional groups: {choice}")


def dicomdir_reference(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """Point a DICOMDIR record outside the tree, at nothing, or at itself."""
    target = rng.choice(
        (
            ["..", "outside", "sentinel.dcm"],
            ["..", "..", "etc", "passwd"],
            ["/", "etc", "passwd"],
            ["OUTSIDE"],
            ["DICOMDIR"],
            ["NOSUCH", "FILE"],
            [],
        )
    )

    def edit(ds):
        records = [r for r in ds.get("DirectoryRecordSequence", []) if "ReferencedFileID" in r]
        for record in rng.sample(records, k=min(len(records), rng.randint(1, 3))):
            record.ReferencedFileID = target if target else ""

    return _edited(data, edit, f"ReferencedFileID={target!r}")


#: Mutations of any file, with their weights (per thousand). The size bombs are rare: while
#: a bomb is not refused early it costs the whole time budget of its case.
FILE_MUTATIONS: tuple[tuple[Mutation, int], ...] = (
    (byte_flips, 300),
    (bit_flips, 100),
    (truncate, 120),
    (length_lie, 60),
    (tag_edit, 220),
    (wrong_vm, 100),
    (syntax_lie, 40),
    (deep_sequence, 15),
    (many_items, 4),
    (big_header, 4),
    (functional_groups, 37),
)

#: Extra mutations for a DICOMDIR target.
DICOMDIR_MUTATIONS: tuple[tuple[Mutation, int], ...] = ((dicomdir_reference, 400),)


def choose(rng: random.Random, dicomdir: bool) -> Mutation:
    """A mutation drawn by weight (DICOMDIR targets also get reference edits)."""
    pool = FILE_MUTATIONS + (DICOMDIR_MUTATIONS if dicomdir else ())
    functions, weights = zip(*pool, strict=True)
    return rng.choices(functions, weights)[0]


# -- pydicom-level edits --------------------------------------------------------------------


def _edited(data: bytes, edit: Callable, description: str) -> tuple[bytes, str]:
    """Read, edit and write back in the file's own encoding; byte flips if pydicom cannot."""
    import pydicom

    with _lenient(), _deep_stack():
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            encoding = (ds.original_encoding[0], ds.original_encoding[1])
            ds.file_meta  # noqa: B018 - a file without meta raises here, not mid-write
            edit(ds)
            buffer = io.BytesIO()
            ds.save_as(
                buffer,
                implicit_vr=encoding[0],
                little_endian=encoding[1],
                enforce_file_format=False,
            )
        except Exception as exc:  # noqa: BLE001 - an unwritable edit still makes a case
            return _flip_fallback(data, f"{description} not writable ({type(exc).__name__})")
    return buffer.getvalue(), description


def _flip_fallback(data: bytes, description: str) -> tuple[bytes, str]:
    rng = random.Random(description)
    out, flipped = byte_flips(rng, data)
    return out, f"{description}; instead {flipped}"


def _set(ds, keyword: str, vr: str, value: object) -> None:
    """Set a tag whatever its value: through pydicom, else as a raw element."""
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import RawDataElement

    tag = tag_for_keyword(keyword)
    try:
        ds[tag] = _element(tag, vr, value)
    except Exception:  # noqa: BLE001 - pydicom refuses the value: write its bytes raw
        raw = _raw_value(vr, value)
        implicit, little = ds.original_encoding
        ds[tag] = RawDataElement(tag, vr, len(raw), raw, 0, implicit, little)


def _element(tag: int, vr: str, value: object):
    from pydicom.dataelem import DataElement

    return DataElement(tag, vr, value)


def _raw_value(vr: str, value: object) -> bytes:
    if isinstance(value, int):
        return struct.pack("<H", value & 0xFFFF)
    text = "\\".join(value) if isinstance(value, list) else str(value)
    raw = text.encode("ascii", "replace")
    return raw + (b" " if len(raw) % 2 else b"")


def _set_everywhere(ds, keyword: str, vr: str, value: object, in_groups: bool) -> None:
    """Set a tag at the top level, and in every functional-group item that holds it."""
    if not in_groups or "PerFrameFunctionalGroupsSequence" not in ds:
        _set(ds, keyword, vr, value)
        return
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for item in ds.get(group, []):
            for macro in item:
                if macro.VR != "SQ":
                    continue
                for inner in macro.value:
                    if keyword in inner:
                        _set(inner, keyword, vr, value)


@contextmanager
def _lenient() -> Iterator[None]:
    """pydicom's validation off while writing hostile values."""
    from pydicom import config

    saved = (config.settings.reading_validation_mode, config.settings.writing_validation_mode)
    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
    try:
        yield
    finally:
        config.settings.reading_validation_mode, config.settings.writing_validation_mode = saved


@contextmanager
def _deep_stack() -> Iterator[None]:
    """Room for pydicom's recursive writer on the deepest sequences we build."""
    saved = sys.getrecursionlimit()
    sys.setrecursionlimit(max(saved, 60_000))
    try:
        yield
    finally:
        sys.setrecursionlimit(saved)
