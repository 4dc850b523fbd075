"""Colour series: RGB and YBR open with a trailing ``channel`` dim of RGB values.

References are pydicom's own undecoded or unconverted values (``raw=True``) put through
:func:`pydicom.pixels.convert_color_space`, or values built in the test.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import xarray as xr
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import convert_color_space, pixel_array
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import dicomarray
from dicomarray import PixelDataError, WriteError
from dicomarray.errors import TransformError
from dicomarray.lazy import FrameStackArray

_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: pydicom test files of each colour coding: (name, photometric as stored)
_TEST_FILES = [
    "SC_rgb_small_odd.dcm",  # native RGB, 3 x 3
    "SC_rgb_rle.dcm",  # RLE RGB
    "SC_rgb_rle_2frame.dcm",  # RLE RGB, 2 frames
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless RGB
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline YBR_FULL: the decoder converts
    "SC_rgb_dcmtk_+eb+cy+np.dcm",  # JPEG baseline YBR_FULL_422
    "SC_ybr_full_422_uncompressed.dcm",  # native YBR_FULL_422: pydicom converts
]


def _test_file(name: str) -> str:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not installed")
    return str(path)


def _reference(path: str) -> np.ndarray:
    """RGB frames ``(frames, rows, columns, 3)``: pydicom's stored colour, converted here."""
    dataset = pydicom.dcmread(path)
    raw = pixel_array(path, raw=True)
    photometric = str(dataset.PhotometricInterpretation)
    if photometric != "RGB":
        raw = convert_color_space(raw, photometric, "RGB")
    return raw.reshape(-1, *raw.shape[-3:])


def write_colour_series(folder, rgb, *, planar=0, photometric="RGB"):
    """One native file per slice of ``rgb`` (slices, rows, columns, 3), 2 mm apart."""
    folder.mkdir(parents=True)
    stored = rgb if photometric == "RGB" else convert_color_space(rgb, "RGB", photometric)
    series, study = generate_uid(), generate_uid()
    for i, frame in enumerate(stored):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = _SECONDARY_CAPTURE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = _SECONDARY_CAPTURE, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID = study + ".1"
        ds.Modality, ds.PatientID, ds.InstanceNumber = "OT", "colour", i + 1
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * i]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 2.0
        ds.Rows, ds.Columns = frame.shape[:2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, photometric
        ds.PlanarConfiguration = planar
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        data = frame.transpose(2, 0, 1) if planar else frame
        ds.PixelData = np.ascontiguousarray(data, dtype=np.uint8).tobytes()
        ds.save_as(folder / f"{i:03d}.dcm", enforce_file_format=True)
    return folder


@pytest.fixture
def rgb():
    """Four 6 x 5 slices of distinct colours."""
    return np.random.default_rng(13).integers(0, 256, (4, 6, 5, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", _TEST_FILES)
def test_pydicom_colour_files_open_as_rgb_once(name):
    path = _test_file(name)
    volume = dicomarray.open_series(path)
    assert volume.dims[-4:] == ("z", "y", "x", "channel")
    assert list(volume["channel"].values) == ["R", "G", "B"]
    values = volume.values.reshape(-1, *volume.shape[-3:])
    reference = _reference(path)
    # a decoder's YBR conversion rounds apart from pydicom's by a unit or two; converting
    # twice would be tens off
    tolerance = 0 if pydicom.dcmread(path).PhotometricInterpretation == "RGB" else 3
    np.testing.assert_allclose(values.astype(int), reference.astype(int), atol=tolerance)
    np.testing.assert_array_equal(values, pixel_array(path).reshape(values.shape))


@pytest.mark.parametrize("planar", [0, 1])
def test_native_rgb_series_of_single_files_in_either_planar_configuration(tmp_path, rgb, planar):
    folder = write_colour_series(tmp_path / "rgb", rgb, planar=planar)
    volume = dicomarray.open_series(folder)
    assert volume.dims == ("z", "y", "x", "channel") and volume.shape == (4, 6, 5, 3)
    assert volume.chunks == ((4,), (6,), (5,), (3,))  # whole frames with all 3 channels
    np.testing.assert_array_equal(volume.values, rgb)
    np.testing.assert_allclose(volume["z"], [0.0, 2.0, 4.0, 6.0])


def test_native_ybr_full_is_converted_to_rgb(tmp_path, rgb):
    folder = write_colour_series(tmp_path / "ybr", rgb, photometric="YBR_FULL")
    stored = convert_color_space(rgb, "RGB", "YBR_FULL")
    volume = dicomarray.open_series(folder)
    np.testing.assert_array_equal(volume.values, convert_color_space(stored, "YBR_FULL", "RGB"))
    assert np.abs(volume.values.astype(int) - rgb).max() <= 3  # RGB, not YBR


def test_frame_selection_stays_lazy_with_the_channel_dim(tmp_path, rgb, reads):
    volume = dicomarray.open_series(write_colour_series(tmp_path / "rgb", rgb), chunks=1)
    picked = volume.data[[0, 2]]
    assert isinstance(picked, FrameStackArray) and picked.shape == (2, 6, 5, 3)
    reads.clear()
    np.testing.assert_array_equal(np.asarray(picked), rgb[[0, 2]])
    assert sorted(reads) == [0, 2]
    np.testing.assert_array_equal(volume.isel(z=3, y=slice(1, 4)).values, rgb[3, 1:4])
    np.testing.assert_array_equal(volume.isel(channel=1).values, rgb[..., 1])
    assert volume.chunks == ((1, 1, 1, 1), (6,), (5,), (3,))


def test_chunks_by_name_keep_all_three_channels(tmp_path, rgb):
    volume = dicomarray.open_series(write_colour_series(tmp_path / "rgb", rgb), chunks={"z": 2})
    assert volume.chunks == ((2, 2), (6,), (5,), (3,))


def test_palette_colour_is_refused_naming_the_file(tmp_path, rgb):
    folder = write_colour_series(tmp_path / "pal", rgb[..., :1])
    path = sorted(folder.iterdir())[0]
    for file in folder.iterdir():
        ds = pydicom.dcmread(file)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "PALETTE COLOR"
        del ds.PlanarConfiguration
        ds.save_as(file)
    with pytest.raises(PixelDataError, match=r"000\.dcm.*PALETTE COLOR"):
        dicomarray.open_series(folder)
    assert path.is_file()


def test_three_samples_of_no_colour_model_are_refused(tmp_path, rgb):
    folder = write_colour_series(tmp_path / "odd", rgb)
    for file in folder.iterdir():
        ds = pydicom.dcmread(file)
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.save_as(file)
    with pytest.raises(PixelDataError, match="SamplesPerPixel 3 with .*MONOCHROME2"):
        dicomarray.open_series(folder)


@pytest.mark.parametrize("transform", ["hu", "window", "normalize"])
def test_transforms_refuse_colour(tmp_path, rgb, transform):
    volume = dicomarray.open_series(write_colour_series(tmp_path / "rgb", rgb))
    args = {"window": (40, 400)}.get(transform, ())
    with pytest.raises(TransformError, match="colour .* no modality values"):
        getattr(volume.dicom, transform)(*args)


def test_npy_and_zarr_keep_the_channel_dim(tmp_path, rgb):
    from dicomarray.writers.npy import open_npy

    volume = dicomarray.open_series(write_colour_series(tmp_path / "rgb", rgb))
    volume.dicom.to_npy(tmp_path / "rgb.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "rgb.npy"), rgb)
    back = open_npy(tmp_path / "rgb.npy")
    assert back.dims == ("z", "y", "x", "channel")
    pytest.importorskip("zarr")
    volume.dicom.to_zarr(tmp_path / "rgb.zarr")
    opened = xr.open_zarr(tmp_path / "rgb.zarr")["image"]
    assert opened.dims == ("z", "y", "x", "channel")
    np.testing.assert_array_equal(opened.values, rgb)


def test_nifti_and_dicom_writers_refuse_colour(tmp_path, rgb):
    volume = dicomarray.open_series(write_colour_series(tmp_path / "rgb", rgb))
    with pytest.raises(WriteError, match="colour"):
        volume.dicom.to_nifti(tmp_path / "rgb.nii.gz")
    with pytest.raises(WriteError, match="colour"):
        volume.dicom.to_dicom(tmp_path / "out")
    assert not (tmp_path / "rgb.nii.gz").exists() and not (tmp_path / "out").exists()


def test_frames_of_a_multi_frame_jpeg_baseline_ybr_file_are_converted_once(tmp_path):
    from pydicom.encaps import encapsulate, generate_frames

    source = _test_file("SC_rgb_dcmtk_+eb+cy+np.dcm")  # JPEG baseline YBR_FULL_422
    ds = pydicom.dcmread(source)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData, ds.NumberOfFrames = encapsulate([frame, frame]), 2
    ds["PixelData"].is_undefined_length = True
    ds.save_as(tmp_path / "two.dcm")
    # each frame decoded from its own bytes, with the header's format given
    values = dicomarray.open_series(tmp_path / "two.dcm").values.reshape(2, 100, 100, 3)
    expected = pixel_array(source)
    np.testing.assert_array_equal(values[0], expected)
    np.testing.assert_array_equal(values[1], expected)


def test_a_deflated_colour_file_opens_as_rgb(tmp_path, rgb):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    folder = write_colour_series(tmp_path / "rgb", rgb[:1], planar=1)
    path = next(folder.iterdir())
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    np.testing.assert_array_equal(dicomarray.open_series(folder).values, rgb[:1])
