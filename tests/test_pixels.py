"""Reading pixels: decoder failures, fork safety and decoded-size limits, on files built here."""

from __future__ import annotations

import multiprocessing
import struct
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

import dicomarray
from dicomarray import PixelDataError

#: An RLE frame (8 x 8, 16 bits: two segments) whose second segment's replicate run
#: overruns the row; pylibjpeg-rle 2.x answers it with a Rust panic (a BaseException).
PANICKING_RLE_FRAME = struct.pack("<16L", 2, 64, 80, *[0] * 13) + bytes.fromhex(
    "f900f900f956f900f900f900f900f900"
    "0700010203040506070708090a0b0c0d0e0f0710111213141516170718191a1b1c1d1e1f"
    "9620212223242526270728a42a2b2c2d2e2f0730313233343536370738393a3b3c3d3e3f"
)


def write_image(
    path: Path,
    pixel_data: bytes,
    *,
    rows: int = 8,
    columns: int = 8,
    bits: int = 16,
    syntax: str = ExplicitVRLittleEndian,
    frames: int | None = None,
    position: bool = True,
) -> Path:
    """A one-instance CT image whose header says what the arguments say, whatever the data.

    ``position=False`` leaves out (0020,0032): the frames of a multi-frame image that share
    one position would not assemble.
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID = "CT", "PIXELS"
    ds.Rows, ds.Columns = rows, columns
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 0
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    if position:
        ds.ImagePositionPatient = [0, 0, 0]
    ds.PixelSpacing, ds.SliceThickness = [1, 1], 1
    ds.PixelData = pixel_data
    native = syntax in (ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
    ds["PixelData"].VR = "OW" if native and bits > 8 else "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------------------------
# Decoder failures
# --------------------------------------------------------------------------------------------


def test_a_decoder_panic_becomes_a_pixel_data_error_naming_file_and_frame(tmp_path):
    path = write_image(
        tmp_path / "panic.dcm", encapsulate([PANICKING_RLE_FRAME]), syntax=RLELossless
    )
    volume = dicomarray.open_series(path)
    for read in (lambda: volume.values, lambda: volume.isel(z=0).compute()):
        with pytest.raises(PixelDataError, match=r"panic\.dcm: frame 0: .*Panic"):
            read()


@pytest.mark.parametrize("raised", [MemoryError, RuntimeError, type("Panic", (BaseException,), {})])
def test_any_decoder_failure_becomes_a_pixel_data_error(tmp_path, monkeypatch, raised):
    path = write_image(tmp_path / "rle.dcm", encapsulate([_rle_frame(8, 8)]), syntax=RLELossless)
    volume = dicomarray.open_series(path)

    def failing(*args, **kwargs):
        raise raised("decoder gave up")

    monkeypatch.setattr(pydicom.pixels, "pixel_array", failing)
    with pytest.raises(PixelDataError, match=rf"rle\.dcm: frame 0: .*{raised.__name__}"):
        _ = volume.values


def test_keyboard_interrupt_in_a_decoder_is_not_swallowed(tmp_path, monkeypatch):
    path = write_image(tmp_path / "rle.dcm", encapsulate([_rle_frame(8, 8)]), syntax=RLELossless)
    volume = dicomarray.open_series(path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pydicom.pixels, "pixel_array", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _ = volume.values


def _rle_frame(rows: int, columns: int) -> bytes:
    """A valid 16-bit RLE frame of the values 0, 1, 2, ... (row by row)."""
    from pydicom.pixels.encoders import RLELosslessEncoder

    values = np.arange(rows * columns, dtype=np.uint16).reshape(rows, columns)
    return RLELosslessEncoder.encode(
        values,
        encoding_plugin="pydicom",
        rows=rows,
        columns=columns,
        samples_per_pixel=1,
        bits_allocated=16,
        bits_stored=16,
        pixel_representation=0,
        photometric_interpretation="MONOCHROME2",
        number_of_frames=1,
    )


# --------------------------------------------------------------------------------------------
# Fork safety
# --------------------------------------------------------------------------------------------


def _sum_in_child(folder: str) -> float:
    return float(dicomarray.open_series(folder).values.sum())


def test_forked_children_read_after_the_parent_used_its_reader_threads(make_series):
    folder = str(make_series()[0].parent)
    expected = float(dicomarray.open_series(folder).values.sum())  # 12 frames: threaded read
    context = multiprocessing.get_context("fork")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        with context.Pool(2) as pool:
            results = [pool.apply_async(_sum_in_child, (folder,)) for _ in range(2)]
            # a child with the parent's dead threads would wait forever: fail instead
            assert [r.get(timeout=60) for r in results] == [expected, expected]


def test_torch_dataloader_workers_read_after_the_parent(make_series):
    torch_data = pytest.importorskip("torch.utils.data")
    folder = str(make_series()[0].parent)
    volume = dicomarray.open_series(folder)
    expected = volume.values.astype(np.float64).sum(axis=(1, 2))

    class Slices(torch_data.Dataset):
        def __len__(self) -> int:
            return volume.sizes["z"]

        def __getitem__(self, i: int) -> float:
            return float(volume.isel(z=i).values.astype(np.float64).sum())

    loader = torch_data.DataLoader(
        Slices(), batch_size=None, num_workers=2, multiprocessing_context="fork", timeout=60
    )
    np.testing.assert_array_equal([float(v) for v in loader], expected)


# --------------------------------------------------------------------------------------------
# Decoded-size limits
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",  # RLE
        "JPEG-lossy.dcm",  # JPEG extended (12-bit)
        "SC_rgb_small_odd_jpeg.dcm",  # JPEG baseline
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS
        "MR_small_jp2klossless.dcm",  # JPEG 2000
        "image_dfl.dcm",  # deflate
        "MR_small_bigendian.dcm",  # big endian
        "MR_small.dcm",  # explicit little endian
    ],
)
def test_a_small_file_claiming_a_huge_image_is_refused_before_allocating(tmp_path, name):
    from .conftest import pydicom_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about some of these files
        ds = pydicom.dcmread(pydicom_file(name))
    ds.Rows = ds.Columns = 65535
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.save_as(tmp_path / "bomb.dcm")
    assert (tmp_path / "bomb.dcm").stat().st_size < 300_000
    with pytest.raises(PixelDataError, match=r"bomb\.dcm: "):
        dicomarray.open_series(tmp_path / "bomb.dcm")


def test_an_rle_bomb_names_the_file_and_the_bound(tmp_path):
    frame = _rle_frame(8, 8)  # 16 bits: two segments, each byte plane
    path = write_image(
        tmp_path / "rle_bomb.dcm",
        encapsulate([frame]),
        rows=65535,
        columns=65535,
        syntax=RLELossless,
    )
    with pytest.raises(PixelDataError, match=r"rle_bomb\.dcm: 65535 x 65535 .*RLE.*64 times"):
        dicomarray.open_series(path)


def test_bit_packed_pixel_data_shorter_than_claimed_is_refused(tmp_path):
    # 2.6 KB claiming 4 frames of 65535 x 65535 one-bit pixels: 17 GB once unpacked
    path = write_image(
        tmp_path / "bits.dcm", bytes(2048), rows=65535, columns=65535, bits=1, frames=4
    )
    with pytest.raises(PixelDataError, match=r"bits\.dcm: pixel data holds 2048 bytes"):
        dicomarray.read_pixels(path)


def test_bit_packed_frames_read_with_their_values(tmp_path):
    from pydicom.pixels import pack_bits

    bits = (np.arange(3 * 5 * 7) % 3 == 0).astype(np.uint8).reshape(3, 5, 7)
    path = write_image(tmp_path / "bits.dcm", pack_bits(bits), rows=5, columns=7, bits=1, frames=3)
    np.testing.assert_array_equal(dicomarray.read_pixels(path), bits)


@pytest.mark.parametrize("bits", [1, 16])
def test_default_chunks_are_sized_by_the_decoded_bytes(tmp_path, monkeypatch, bits):
    from pydicom.pixels import pack_bits

    # a bit-packed pixel is 1/8 byte on disk but one byte in memory: chunks count the latter
    frames = (np.arange(10 * 64 * 64) % 3 == 0).astype(np.uint8).reshape(10, 64, 64)
    data = pack_bits(frames) if bits == 1 else frames.astype("<u2").tobytes()
    path = write_image(
        tmp_path / "f.dcm", data, rows=64, columns=64, bits=bits, frames=10, position=False
    )
    monkeypatch.setattr(dicomarray.volume, "CHUNK_BYTES", 4 * 64 * 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dicomarray.GeometryWarning)  # frames without positions
        volume = dicomarray.open_series(path)
    per_chunk = {1: 4, 16: 2}[bits]  # 4096 bytes in memory per 1-bit frame, 8192 per 16-bit
    assert volume.chunks[0][:2] == (per_chunk, per_chunk)
    np.testing.assert_array_equal(volume.values, frames)


def test_the_memory_limit_counts_unpacked_bytes(tmp_path):
    from pydicom.pixels import pack_bits

    bits = np.ones((64, 64), np.uint8)  # 512 bytes packed, 4096 bytes in memory
    path = write_image(tmp_path / "bits.dcm", pack_bits(bits), rows=64, columns=64, bits=1)
    with pytest.raises(PixelDataError, match="more than the limit"):
        dicomarray.open_series(path, max_bytes=1000)


def test_rows_of_a_bit_packed_frame_read_alone(tmp_path, reads):
    from pydicom.pixels import pack_bits

    bits = (np.arange(5 * 7) % 4 == 1).astype(np.uint8).reshape(5, 7)
    path = write_image(tmp_path / "bits.dcm", pack_bits(bits), rows=5, columns=7, bits=1)
    volume = dicomarray.open_series(path)
    np.testing.assert_array_equal(volume.isel(y=slice(1, 4)).values[0], bits[1:4])
    assert reads.rows == [(1, 4)]


# --------------------------------------------------------------------------------------------
# Codestream headers: what a decoder would allocate
# --------------------------------------------------------------------------------------------

CODESTREAM_FILES = ["MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "JPGExtended.dcm"]


def first_frame(name: str) -> tuple[pydicom.Dataset, bytes]:
    from pydicom.encaps import generate_frames

    from .conftest import pydicom_file

    ds = pydicom.dcmread(pydicom_file(name))
    return ds, next(generate_frames(ds.PixelData, number_of_frames=1))


@pytest.mark.parametrize("name", CODESTREAM_FILES)
def test_codestream_size_matches_the_dicom_header(name):
    from dicomarray.codestream import CodestreamSize, declared_size

    ds, frame = first_frame(name)
    assert declared_size(frame) == CodestreamSize(ds.Rows, ds.Columns, 1)


def test_codestream_size_is_found_inside_a_jp2_file():
    from dicomarray.codestream import CodestreamSize, declared_size

    ds, codestream = first_frame("MR_small_jp2klossless.dcm")
    signature = bytes.fromhex("0000000c6a5020200d0a870a")
    ftyp = struct.pack(">L4s4sL4s", 20, b"ftyp", b"jp2 ", 0, b"jp2 ")
    jp2 = signature + ftyp + struct.pack(">L4s", 8 + len(codestream), b"jp2c") + codestream
    assert declared_size(jp2) == CodestreamSize(ds.Rows, ds.Columns, 1)


@pytest.mark.parametrize("frame", [b"", b"\xff\xd8", b"\xff\xd8\xff\xda\x00\x02", b"\x00" * 64])
def test_codestream_without_a_frame_header_has_no_size(frame):
    from dicomarray.codestream import declared_size

    assert declared_size(frame) is None


def with_declared_size(frame: bytes, rows: int, columns: int) -> bytes:
    """``frame`` with its SOF (JPEG, JPEG-LS) or SIZ (JPEG 2000) image size replaced."""
    data = bytearray(frame)
    if data[:2] == b"\xff\xd8":
        offset = 2
        while data[offset + 1] not in (0xC0, 0xC1, 0xC3, 0xF7):
            offset += 2 + struct.unpack_from(">H", data, offset + 2)[0]
        struct.pack_into(">HH", data, offset + 5, rows, columns)
    else:
        struct.pack_into(">LLLL", data, 8, columns, rows, 0, 0)
    return bytes(data)


@pytest.mark.parametrize("offset_known", [True, False], ids=["offset", "no-offset"])
@pytest.mark.parametrize("name", CODESTREAM_FILES)
def test_a_frame_declaring_a_larger_image_than_its_header_is_refused_undecoded(
    tmp_path, monkeypatch, name, offset_known
):
    ds, frame = first_frame(name)
    ds.PixelData = encapsulate([with_declared_size(frame, 65535, 65535)])
    ds.save_as(tmp_path / "liar.dcm")

    def must_not_run(*args, **kwargs):
        raise AssertionError("the decoder ran")

    monkeypatch.setattr(pydicom.pixels, "pixel_array", must_not_run)
    index = dicomarray.scan(tmp_path / "liar.dcm")
    if not offset_known:  # an index made elsewhere: the header is parsed for the frame
        index["pixel_data_offset"] = None
    volume = dicomarray.open_series(index)
    with pytest.raises(PixelDataError, match=r"liar\.dcm: frame 0: .*declares 65535 x 65535"):
        _ = volume.values


def test_running_out_of_memory_names_the_file(make_series, monkeypatch):
    paths = make_series()
    volume = dicomarray.open_series(paths[0].parent)

    def no_memory(shape, dtype):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(dicomarray.pixels, "empty_buffer", no_memory)
    first = volume.attrs["dicomarray_assembly"]["files"][0]
    with pytest.raises(PixelDataError, match=rf"{Path(first).name}: cannot allocate .* MiB"):
        _ = volume.values


def test_a_deflated_read_of_pixels_keeps_to_the_header_limits(tmp_path, monkeypatch):
    from dicomarray import header

    pixels = np.arange(64, dtype="<u2").tobytes()
    path = write_image(tmp_path / "dfl.dcm", pixels, syntax=DeflatedExplicitVRLittleEndian)
    ds = pydicom.dcmread(path)
    ds.add_new(0x00091010, "OB", bytes(4 * 2**20))  # 4 MiB of zeros: 4 KiB deflated
    ds.save_as(path)
    assert path.stat().st_size < 2**16
    volume = dicomarray.open_series(dicomarray.scan(path))
    np.testing.assert_array_equal(volume.values[0], np.arange(64).reshape(8, 8))
    monkeypatch.setattr(header, "DEFAULT_LIMITS", header.HeaderLimits(max_header_bytes=2**20))
    with pytest.raises(dicomarray.DicomArrayError, match=r"dfl\.dcm: refused"):
        _ = volume.values  # read again: the header is walked at every read


def count_inflates(monkeypatch) -> list[str]:
    """Every zlib inflate started from now on (pydicom's and the header walker's)."""
    import zlib

    started: list[str] = []
    for name in ("decompress", "decompressobj"):
        original = getattr(zlib, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            started.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(zlib, name, counted)
    return started


def test_the_frames_of_a_deflated_file_in_one_chunk_share_one_inflate(tmp_path, monkeypatch):
    frames = (np.arange(20 * 16 * 16, dtype="<u2").reshape(20, 16, 16) * 7) % 4096
    path = write_image(
        tmp_path / "dfl.dcm",
        frames.tobytes(),
        rows=16,
        columns=16,
        frames=20,
        syntax=DeflatedExplicitVRLittleEndian,
        position=False,
    )
    reference = pydicom.dcmread(path).pixel_array
    np.testing.assert_array_equal(reference, frames)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dicomarray.GeometryWarning)  # frames without positions
        whole, chunked = (dicomarray.open_series(path, chunks=n) for n in (20, 5))
    inflates = count_inflates(monkeypatch)
    np.testing.assert_array_equal(whole.isel(z=3).values, reference[3])
    per_read = len(inflates)
    assert per_read > 0
    inflates.clear()
    np.testing.assert_array_equal(whole.values, reference)  # one task of 20 frames
    assert len(inflates) == per_read
    inflates.clear()
    np.testing.assert_array_equal(chunked.data.compute(scheduler="sync"), reference)
    assert len(inflates) == 4 * per_read  # one inflate per task of 5 frames
    np.testing.assert_array_equal(chunked.isel(y=slice(2, 9)).values, reference[:, 2:9])


# --------------------------------------------------------------------------------------------
# Index values of any column type
# --------------------------------------------------------------------------------------------

INTEGER_COLUMNS = [
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "SamplesPerPixel",
    "NumberOfFrames",  # None in single-frame files: <NA> or NaN below
    "pixel_data_offset",
    "pixel_data_length",
    "file_size",
]


@pytest.mark.parametrize("dtype", [object, "Int64", "float64"])
def test_index_integers_of_any_column_type_read_the_same_pixels(make_series, dtype):
    from dicomarray.pixels import FrameStack, PixelFormat, check_readable

    paths = make_series()
    frames = dicomarray.scan(paths[0].parent).assign(frame=0)
    expected = np.stack([pydicom.dcmread(p).pixel_array for p in frames["path"]])
    frames = frames.astype({column: dtype for column in INTEGER_COLUMNS})
    fmt = PixelFormat.from_row(frames.iloc[0])
    check_readable(frames, fmt)
    np.testing.assert_array_equal(FrameStack(frames, fmt)[:], expected)


def test_a_file_gone_since_the_scan_is_named(make_series):
    paths = make_series()
    index = dicomarray.scan(paths[0].parent)
    paths[3].unlink()
    # open_series reads every header (InvalidDicomError); a read of pixels, PixelDataError
    with pytest.raises(dicomarray.DicomArrayError, match=rf"{paths[3].name}: cannot open"):
        dicomarray.open_series(index)


@pytest.mark.parametrize("name", ["JPEGLSNearLossless_16.dcm", "MR_small_RLE.dcm"])
def test_a_pixel_data_item_claiming_more_than_the_file_is_refused_unread(tmp_path, name):
    """A fragment length of 2 GiB in a small file: readers would allocate it before reading."""
    from pydicom.data import get_testdata_file

    data = bytearray(Path(get_testdata_file(name, download=False)).read_bytes())
    items = data.rfind(b"\xe0\x7f\x10\x00") + 12  # after (7FE0,0010) OB, reserved, undefined
    (table_length,) = struct.unpack_from("<L", data, items + 4)
    fragment = items + 8 + table_length
    assert data[fragment : fragment + 4] == b"\xfe\xff\x00\xe0"
    struct.pack_into("<L", data, fragment + 4, 0x7FFFFFF0)
    path = tmp_path / name
    path.write_bytes(bytes(data))
    volume = dicomarray.open_series(path)
    with pytest.raises(PixelDataError, match=rf"{name}: a pixel data item at byte {fragment}"):
        _ = volume.values


def test_frames_of_a_compressed_multi_frame_file_decode_from_their_own_bytes(monkeypatch):
    """pydicom handed the file parses its whole header for every frame: 0.5 s a frame for
    240 frames of functional groups. Each frame is decoded from its own bytes instead, and
    equals pydicom's decoding of the whole file."""
    import pydicom.pixels

    from dicomarray.pixels import PixelFormat, decode_frame

    from .conftest import pydicom_file

    path = pydicom_file("rtdose_rle.dcm")
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array
    fmt = PixelFormat(ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, 0)
    offset = int(dicomarray.scan(path)["pixel_data_offset"].iloc[0])
    calls = []
    original = pydicom.pixels.pixel_array
    monkeypatch.setattr(
        pydicom.pixels, "pixel_array", lambda *a, **k: calls.append(a) or original(*a, **k)
    )
    for frame in range(int(ds.NumberOfFrames)):
        decoded = decode_frame(
            str(path),
            frame,
            ds.file_meta.TransferSyntaxUID,
            fmt,
            offset=offset,
            n_frames=int(ds.NumberOfFrames),
        )
        np.testing.assert_array_equal(decoded, expected[frame])
    assert calls == []
