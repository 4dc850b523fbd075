"""The fast header reader agrees with pydicom, and finds the pixel data where pydicom does."""

from __future__ import annotations

import gzip
import io
import os
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

import dicomarray
import dicomarray.header as header
from dicomarray.header import INDEX_KEYWORDS, plain_value, read_header

from .conftest import pydicom_file

TEST_FILES = sorted((pydicom_file("MR_small.dcm").parent).glob("*.dcm"))


def reference_values(path: Path) -> dict:
    """The index tags as pydicom alone reads them: the reference for the walker."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    values = {kw: plain_value(ds[kw].value) for kw in INDEX_KEYWORDS if kw in ds}
    values["TransferSyntaxUID"] = str(ds.file_meta.TransferSyntaxUID)
    return values


def walked_values(path: Path) -> dict:
    values = read_header(path)
    for key in ("pixel_data_offset", "pixel_data_length", "file_size", "MediaStorageSOPClassUID"):
        values.pop(key)
    return values


@pytest.mark.parametrize("path", TEST_FILES, ids=[p.name for p in TEST_FILES])
def test_header_values_equal_pydicom_on_shipped_files(path):
    try:
        reference = reference_values(path)
    except Exception as exc:  # noqa: BLE001 - pydicom itself cannot read some of these
        pytest.skip(f"pydicom cannot read it: {exc}")
    if "SOPInstanceUID" not in reference or "truncated" in path.name:
        pytest.skip("not an instance")
    assert walked_values(path) == reference


def test_common_files_are_decoded_without_pydicom(monkeypatch):
    def refuse(path):
        raise AssertionError("pydicom was asked")

    monkeypatch.setattr(header, "_read_with_pydicom", refuse)
    decoded = 0
    for path in TEST_FILES:
        try:
            read_header(path)
            decoded += 1
        except Exception:  # noqa: BLE001, S110 - counted: what matters is how many pass
            pass
    assert decoded >= len(TEST_FILES) * 3 // 4


def test_pixel_data_offset_points_at_the_pixel_bytes():
    path = pydicom_file("CT_small.dcm")
    header = read_header(path)
    ds = pydicom.dcmread(path)
    with open(path, "rb") as file:
        file.seek(header["pixel_data_offset"])
        raw = file.read(header["pixel_data_length"])
    assert raw == ds.PixelData
    assert header["file_size"] == os.path.getsize(path)


text = st.text(alphabet=st.sampled_from("ABCXYZ019^ -_."), min_size=0, max_size=12)
decimals = st.floats(-1e4, 1e4, allow_nan=False).map(lambda v: round(v, 3))


@st.composite
def headers(draw):
    ds = Dataset()
    ds.SpecificCharacterSet = draw(st.sampled_from(["ISO_IR 100", "ISO_IR 192", ""]))
    ds.PatientName = draw(text)
    ds.PatientID = draw(text)
    ds.SeriesDescription = draw(text)
    ds.ImageType = draw(
        st.lists(st.sampled_from(["ORIGINAL", "DERIVED", "PRIMARY", "AXIAL"]), max_size=4)
    )
    ds.Modality = draw(st.sampled_from(["CT", "MR", ""]))
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(draw(st.integers()))])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(draw(st.integers()))])
    ds.InstanceNumber = draw(st.one_of(st.none(), st.integers(-1000, 100000)))
    ds.SeriesNumber = draw(st.integers(0, 999))
    ds.ImagePositionPatient = draw(st.lists(decimals, min_size=3, max_size=3))
    ds.ImageOrientationPatient = draw(st.lists(decimals, min_size=6, max_size=6))
    ds.PixelSpacing = draw(st.lists(decimals, min_size=2, max_size=2))
    ds.SliceLocation = draw(st.one_of(st.none(), decimals))
    ds.WindowCenter = draw(st.lists(decimals, min_size=1, max_size=3))
    ds.Rows, ds.Columns = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ds.BitsAllocated, ds.PixelRepresentation = 16, draw(st.integers(0, 1))
    ds.RescaleSlope, ds.RescaleIntercept = draw(decimals), draw(decimals)
    if draw(st.booleans()):  # an undefined-length sequence the reader must walk past
        item = Dataset()
        item.CodeValue, item.CodeMeaning = "T-A0100", draw(text)
        item.ConceptCodeSequence = Sequence([Dataset()])
        ds.AnatomicRegionSequence = Sequence([item])
    if draw(st.booleans()):
        ds.add_new(0x00091010, "LO", draw(text))  # a private element
    ds.PixelData = np.arange(ds.Rows * ds.Columns, dtype="<u2").tobytes()
    return ds


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ds=headers(), implicit=st.booleans(), undefined=st.booleans())
def test_fast_path_equals_pydicom_on_generated_headers(tmp_path, ds, implicit, undefined):
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    if undefined and "AnatomicRegionSequence" in ds:
        ds.AnatomicRegionSequence.is_undefined_length = True
        ds.AnatomicRegionSequence[0].is_undefined_length_sequence_item = True
    ds.save_as(buffer, enforce_file_format=True)
    path = tmp_path / "generated.dcm"
    path.write_bytes(buffer.getvalue())
    assert read_header(path)["pixel_data_offset"] is not None
    assert walked_values(path) == reference_values(path)
    with open(path, "rb") as file:
        file.seek(read_header(path)["pixel_data_offset"])
        assert file.read(len(ds.PixelData)) == ds.PixelData


def test_unreadable_files_raise(tmp_path):
    junk = tmp_path / "junk.txt"
    junk.write_text("plain text, not DICOM")
    with pytest.raises(Exception):  # noqa: B017 - scan turns any of these into a skip
        read_header(junk)


def test_a_gzipped_instance_is_named_as_gzip_compressed(tmp_path):
    # real exports ship *.dcm.gz (dcm_qa_philips_enh): "not DICOM" would send users astray
    zipped = tmp_path / "CT_small.dcm.gz"
    zipped.write_bytes(gzip.compress(pydicom_file("CT_small.dcm").read_bytes()))
    with pytest.raises(dicomarray.InvalidDicomError, match="CT_small.dcm.gz: gzip-compressed"):
        read_header(zipped)
    assert dicomarray.scan(tmp_path).attrs["skipped"] == [
        (str(zipped), "gzip-compressed, not read (gunzip it first)")
    ]


# -- bounds: every header is walked within HeaderLimits before pydicom sees it ------------


def part10(elements: bytes = b"", syntax: str = ExplicitVRLittleEndian) -> bytes:
    """A small valid Part-10 instance, with raw ``elements`` added before its pixel data."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue() + elements


def sequence(tag: tuple[int, int], items: bytes, vr: bytes = b"SQ") -> bytes:
    """An undefined-length sequence (explicit VR little endian) holding ``items``."""
    head = struct.pack("<HH2sHI", *tag, vr, 0, 0xFFFFFFFF)
    return head + items + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def item(content: bytes = b"") -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + content + ITEM_END


ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)


def nested(depth: int) -> bytes:
    content = b""
    for _ in range(depth):
        content = sequence((0x0040, 0x0275), item(content))
    return content


def private_elements(n: int) -> bytes:
    return b"".join(
        struct.pack("<HH2sH", 0x0009, 0x1000 + i % 256, b"SH", 2) + b"AB" for i in range(n)
    )


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def open_for_a_decoder(path: Path) -> None:
    with header.checked_file(path, stop_before_pixels=False):
        pass


HOSTILE = {
    # 100,000 empty items in 1.6 MB: pydicom's parse took 72 s
    "items-un": lambda: part10(sequence((0x0041, 0x1010), item() * 100_000, b"UN")),
    "items-sq": lambda: part10(sequence((0x0040, 0x0275), item() * 25_000)),
    "depth": lambda: part10(nested(40)),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_headers_are_refused_by_every_reader(tmp_path, name):
    path = write(tmp_path, f"{name}.dcm", HOSTILE[name]())
    for read in (read_header, header.read_dataset, open_for_a_decoder):
        with pytest.raises(dicomarray.HeaderLimitError, match=f"{path}: refused"):
            read(path)
    (skipped,) = dicomarray.scan(path).attrs["skipped"]
    assert "refused" in skipped[1] and "HeaderLimits" in skipped[1]


def test_headers_within_the_limits_open(tmp_path):
    path = write(tmp_path, "ok.dcm", part10(nested(30) + private_elements(300)))
    assert read_header(path)["SOPInstanceUID"]
    assert "SOPInstanceUID" in header.read_dataset(path)


@pytest.mark.parametrize(
    ("limits", "what"),
    [
        (header.HeaderLimits(max_elements=200), "more than 200 data elements and items"),
        (header.HeaderLimits(max_header_bytes=2000), "more than 2000 bytes"),
        (header.HeaderLimits(max_depth=3), "nested more than 3 deep"),
        (header.HeaderLimits(max_items=1), "more than 1 items"),
    ],
)
def test_each_bound_is_checked(tmp_path, limits, what):
    two_items = sequence((0x0040, 0x0260), item() * 2)
    path = write(tmp_path, "x.dcm", part10(private_elements(300) + two_items + nested(5)))
    read_header(path)  # within the defaults
    with pytest.raises(dicomarray.HeaderLimitError, match=what):
        read_header(path, limits=limits)
    with pytest.raises(dicomarray.HeaderLimitError, match=what):
        header.read_dataset(path, limits=limits)
    (skipped,) = dicomarray.scan(path, limits=limits).attrs["skipped"]
    assert what in skipped[1]


def test_a_deflated_header_may_not_inflate_past_its_bound(tmp_path):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    big = struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, 4 * 2**20) + bytes(4 * 2**20)
    ds = pydicom.dcmread(io.BytesIO(part10(private_elements(1))))
    ds.add_new(0x00091010, "OB", bytes(4 * 2**20))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "deflated.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 100_000 and len(big) > 4 * 2**20
    assert read_header(path)["SOPInstanceUID"] == ds.SOPInstanceUID
    with pytest.raises(dicomarray.HeaderLimitError, match="more than 1048576 bytes"):
        read_header(path, limits=header.HeaderLimits(max_header_bytes=2**20))


def test_big_endian_and_deflated_files_are_walked(tmp_path):
    for name in ("MR_small_bigendian.dcm", "image_dfl.dcm"):
        path = pydicom_file(name)
        assert walked_values(path) == reference_values(path)


def test_read_dataset_names_the_file_on_a_pydicom_failure(tmp_path):
    path = write(tmp_path, "junk.dcm", b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x02\x00")
    with pytest.raises(dicomarray.InvalidDicomError, match="junk.dcm"):
        header.read_dataset(path)


def test_every_pydicom_read_in_the_package_goes_through_the_bounded_reader():
    package = Path(header.__file__).parent
    for path in package.rglob("*.py"):
        text = path.read_text()
        if path.name != "header.py":
            assert "dcmread(" not in text and "read_file(" not in text, path
            assert "pixel_array(path" not in text, path


def test_a_corrupt_deflate_stream_is_an_invalid_dicom_error(tmp_path):
    data = pydicom_file("image_dfl.dcm").read_bytes()
    meta_end = 144 + struct.unpack_from("<I", data, 140)[0]  # after the meta group's length
    path = write(tmp_path, "bad.dcm", data[:meta_end] + b"\xff" * 64 + data[meta_end + 64 :])
    for read in (read_header, header.read_dataset):
        with pytest.raises(dicomarray.InvalidDicomError, match="bad.dcm: malformed.*decompress"):
            read(path)
