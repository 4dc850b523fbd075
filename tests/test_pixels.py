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
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

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
) -> Path:
    """A one-instance CT image whose header says what the arguments say, whatever the data."""
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
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [1, 1], 1
    ds.PixelData = pixel_data
    ds["PixelData"].VR = "OB" if syntax != ExplicitVRLittleEndian or bits <= 8 else "OW"
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
