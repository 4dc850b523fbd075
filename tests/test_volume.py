"""open_series and the engine: values, order, coordinates, attrs and warnings of volumes."""

from __future__ import annotations

import json
import pickle
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import xarray as xr

import dicomarray
from dicomarray import GeometryWarning, SeriesSelectionWarning
from dicomarray.sample import write_localizer

from .conftest import copy_files, hu_of, pydicom_file


def stored_to_hu(volume: xr.DataArray) -> np.ndarray:
    slope = (
        volume.coords["rescale_slope"].values
        if "rescale_slope" in volume.coords
        else volume.attrs["RescaleSlope"]
    )
    intercept = (
        volume.coords["rescale_intercept"].values
        if "rescale_intercept" in volume.coords
        else volume.attrs["RescaleIntercept"]
    )
    slope = np.asarray(slope, float).reshape(-1, 1, 1)
    intercept = np.asarray(intercept, float).reshape(-1, 1, 1)
    return volume.values * slope + intercept


def sitk_read(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


@pytest.mark.parametrize(
    "layout",
    [dict(bits_stored=16, signed=True), dict(bits_stored=12, signed=False, intercept=-1024.0)],
    ids=["int16", "uint12"],
)
def test_matches_simpleitk_values_order_and_spacing(make_series, open_volume, layout):
    paths = make_series(**layout)
    folder = paths[0].parent
    volume = open_volume(folder)
    reference = sitk_read(folder)
    np.testing.assert_array_equal(stored_to_hu(volume), sitk.GetArrayFromImage(reference))
    spacing = (
        float(volume.x[1] - volume.x[0]),
        float(volume.y[1] - volume.y[0]),
        float(volume.z[1] - volume.z[0]),
    )
    np.testing.assert_allclose(spacing, reference.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(volume.dicom.affine[:3, 3], reference.GetOrigin(), atol=1e-4)


def test_is_lazy_and_holds_stored_values(make_series, open_volume, phantom):
    volume = open_volume(make_series(slope=0.5, intercept=-2048.0)[0].parent)
    assert volume.dims == ("z", "y", "x")
    assert volume.chunks is not None
    assert volume.dtype == np.int16
    np.testing.assert_allclose(volume.values * 0.5 - 2048.0, phantom, atol=0.5)


def test_order_follows_positions_not_names_numbers_or_slice_location(make_series, phantom):
    paths = make_series(names="random", instance_numbers="reversed", slice_location_sign=-1)
    volume = dicomarray.open_series(paths[0].parent)
    np.testing.assert_array_equal(stored_to_hu(volume), phantom)
    np.testing.assert_allclose(np.diff(volume.z), 12.0)
    assert list(volume.instance_number.values) == list(range(len(paths), 0, -1))


def test_clean_series_raises_no_warning(make_series, open_volume):
    folder = make_series()[0].parent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        volume = open_volume(folder)
    report = volume.attrs["dicomarray_assembly"]
    assert report["warnings"] == [] and report["left_out"] == []
    assert report["sorted_by"] == "ImagePositionPatient"


def test_per_slice_rescale_becomes_coordinates(make_series, phantom):
    volume = dicomarray.open_series(make_series(per_slice_rescale=True)[0].parent)
    assert "rescale_slope" in volume.coords and "RescaleSlope" not in volume.attrs
    assert len(np.unique(volume.rescale_slope)) > 1
    np.testing.assert_allclose(stored_to_hu(volume), phantom, atol=1.0)


def test_gap_keeps_true_positions_and_warns(make_series, phantom):
    positions = [0, 12, 24, 36, 48, 60, 72, 84, 96, 108, 120, 156]  # one slice missing near the end
    folder = make_series(positions=positions)[0].parent
    with pytest.warns(GeometryWarning, match="uneven spacing") as record:
        volume = dicomarray.open_series(folder)
    assert "11 slices at 12 mm, then 1 at 36 mm after slice 10 (z = " in str(record[0].message)
    np.testing.assert_allclose(volume.z - volume.z[0], positions)
    assert any("uneven spacing" in w for w in volume.attrs["dicomarray_assembly"]["warnings"])


def test_gantry_tilt_opens_and_warns_with_degrees(make_series):
    folder = make_series(tilt_degrees=15.0)[0].parent
    with pytest.warns(GeometryWarning, match=r"gantry tilt of 15\.0"):
        volume = dicomarray.open_series(folder)
    # the affine maps the first slice's plane and the mean step between slices
    first = [volume.image_position_l[0], volume.image_position_p[0], volume.image_position_s[0]]
    last = [volume.image_position_l[-1], volume.image_position_p[-1], volume.image_position_s[-1]]
    n = volume.sizes["z"]
    np.testing.assert_allclose(volume.dicom.affine @ [0, 0, 0, 1], [*first, 1])
    np.testing.assert_allclose(volume.dicom.affine @ [n - 1, 0, 0, 1], [*last, 1], atol=1e-6)


def test_copied_file_is_one_slice(make_series, tmp_path, phantom):
    paths = make_series()
    shutil.copy(paths[3], paths[0].parent / "copy_of_slice.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        volume = dicomarray.open_series(paths[0].parent)
    assert volume.sizes["z"] == len(paths)
    (left,) = volume.attrs["dicomarray_assembly"]["left_out"]
    assert "SOPInstanceUID" in left["reason"]


def test_mixed_in_localizer_is_left_out_with_a_warning(make_series, phantom):
    paths = make_series(tags={"SeriesInstanceUID": "1.2.3.4.5"})
    write_localizer(paths[0].parent, rows=64, columns=64, tags={"SeriesInstanceUID": "1.2.3.4.5"})
    with pytest.warns(GeometryWarning, match="localizer"):
        volume = dicomarray.open_series(paths[0].parent)
    np.testing.assert_array_equal(stored_to_hu(volume), phantom)


def test_sagittal_stack_orders_along_its_normal(make_series, phantom):
    orientation = (0, 1, 0, 0, 0, -1)  # rows run anterior-posterior... columns superior-inferior
    paths = make_series(orientation=orientation, instance_numbers="random")
    volume = dicomarray.open_series(paths[0].parent)
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array([pydicom.dcmread(p).ImagePositionPatient for p in paths], float)
    expected = positions @ normal
    np.testing.assert_allclose(volume.z, np.sort(expected))
    affine = volume.dicom.affine
    for k in (0, 5, 11):
        position = [
            volume.image_position_l[k],
            volume.image_position_p[k],
            volume.image_position_s[k],
        ]
        np.testing.assert_allclose(affine @ [k, 0, 0, 1], [*position, 1], atol=1e-6)
    # one step down a column moves along the column cosine by the row spacing
    np.testing.assert_allclose(affine[:3, 1], np.array(orientation[3:]) * 3.6)


def test_junk_files_are_ignored(make_series, phantom):
    folder = make_series()[0].parent
    (folder / "README.txt").write_text("not dicom")
    (folder / "Thumbs.db").write_bytes(b"\x00\x01" * 100)
    volume = dicomarray.open_series(folder)
    np.testing.assert_array_equal(stored_to_hu(volume), phantom)


def test_largest_series_opens_and_others_are_named(make_series, tmp_path, phantom):
    big = make_series("a")
    small = make_series("b", hu=phantom[:5])
    mixed = tmp_path / "mixed"
    copy_files(big, mixed)
    copy_files(small, mixed)
    small_uid = str(pydicom.dcmread(small[0]).SeriesInstanceUID)
    with pytest.warns(SeriesSelectionWarning, match=small_uid):
        volume = dicomarray.open_series(mixed)
    assert volume.sizes["z"] == 12
    assert dicomarray.open_series(mixed, small_uid).sizes["z"] == 5


def test_without_positions_falls_back_to_slice_location(make_series, tmp_path, phantom):
    paths = make_series(names="random")
    for path in paths:
        _edit(path, ImagePositionPatient=None)
    with pytest.warns(GeometryWarning, match="SliceLocation"):
        volume = dicomarray.open_series(paths[0].parent)
    np.testing.assert_array_equal(stored_to_hu(volume), phantom)
    assert volume.attrs["dicomarray_assembly"]["sorted_by"] == "SliceLocation"


def test_without_positions_or_locations_falls_back_to_instance_number(make_series, phantom):
    paths = make_series(names="random", instance_numbers="reversed")
    for path in paths:
        _edit(path, ImagePositionPatient=None, SliceLocation=None)
    with pytest.warns(GeometryWarning, match="InstanceNumber"):
        volume = dicomarray.open_series(paths[0].parent)
    np.testing.assert_array_equal(stored_to_hu(volume), phantom[::-1])


def test_repeated_positions_split_by_echo(make_series, tmp_path, phantom):
    first = make_series("e1", tags={"SeriesInstanceUID": "1.2.3.9", "EchoNumbers": 1})
    second = make_series(
        "e2", hu=phantom + 5, seed=1, tags={"SeriesInstanceUID": "1.2.3.9", "EchoNumbers": 2}
    )
    both = tmp_path / "echoes"
    copy_files(first, both)
    copy_files(second, both)
    volume = dicomarray.open_series(both)
    assert volume.dims == ("echo", "z", "y", "x")
    assert volume.attrs["dicomarray_assembly"]["dims"] == [
        {"dim": "echo", "size": 2, "split_by": ["EchoNumbers"]}
    ]
    np.testing.assert_array_equal(volume["echo_number"], [1, 2])
    np.testing.assert_array_equal(stored_to_hu(volume.isel(echo=0)), phantom)
    np.testing.assert_array_equal(stored_to_hu(volume.isel(echo=1)), phantom + 5)


def test_a_volume_with_missing_slices_is_refused_with_the_candidates(
    make_series, tmp_path, phantom
):
    first = make_series("e1", tags={"SeriesInstanceUID": "1.2.3.9", "EchoNumbers": 1})
    second = make_series(
        "e2", hu=phantom + 5, seed=1, tags={"SeriesInstanceUID": "1.2.3.9", "EchoNumbers": 2}
    )
    both = tmp_path / "echoes"
    copy_files(first, both)
    copy_files(second[:6], both)
    with pytest.raises(dicomarray.AssemblyError, match="do not form a full grid") as caught:
        dicomarray.open_series(both)
    message = str(caught.value)
    assert "18 frames at 12 slice positions (each holds 1 to 2)" in message
    assert "split_by=('EchoNumbers',): 2 volumes of 6 to 12 frames for 12 positions" in message


def test_repeated_positions_no_tag_tells_apart_open_in_acquisition_order(
    make_series, tmp_path, phantom
):
    first = make_series("r1", tags={"SeriesInstanceUID": "1.2.3.8"})
    second = make_series("r2", hu=phantom + 7, seed=1, tags={"SeriesInstanceUID": "1.2.3.8"})
    both = tmp_path / "repeats"
    copy_files(first, both)
    copy_files(second, both)
    volume = dicomarray.open_series(both)
    # the two acquisitions hold different AcquisitionTimes: a time dim, in their order
    assert volume.dims == ("t", "z", "y", "x")
    assert volume.attrs["dicomarray_assembly"]["dims"][0]["split_by"] == ["acquisition order"]
    assert volume["t"].values[0] == 0 and volume["t"].values[1] > 0
    assert volume["t"].attrs["units"] == "s"
    values = [int(stored_to_hu(volume.isel(t=k))[0, 0, 0]) for k in range(2)]
    assert sorted(values) == [int(phantom[0, 0, 0]), int(phantom[0, 0, 0]) + 7]


@pytest.mark.parametrize(
    "name",
    [
        "MR_small.dcm",
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_padded.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "CT_small.dcm",
        "JPEG2000.dcm",
        "liver_1frame.dcm",
        "image_dfl.dcm",
    ],
)
def test_pydicom_test_files_in_every_transfer_syntax(open_volume, name):
    path = pydicom_file(name)
    volume = open_volume(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about padding in some of these
        reference = pydicom.dcmread(path).pixel_array
    np.testing.assert_array_equal(volume.values[0], reference)


def test_dicomdir_tree_opens_every_series(tmp_path):
    tree = xr.DataTree  # noqa: F841 - the DataTree class exists in this xarray
    root = pydicom_file("MR_small.dcm").parent / "dicomdirtests"
    study = dicomarray.open_study(root)
    index = dicomarray.scan(root)
    images = index[index["Rows"].notna()]
    opened = [node for node in study.subtree if "image" in node.data_vars]
    assert len(opened) + len(study.attrs["skipped_series"]) == images["SeriesInstanceUID"].nunique()
    for node in opened:
        volume = node["image"]
        first = volume.attrs["dicomarray_assembly"]["files"][0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = pydicom.dcmread(first).pixel_array
        np.testing.assert_array_equal(
            volume.isel(z=0).values,
            reference.reshape(volume.shape[1:]) if reference.ndim == 2 else reference[0],
        )


def test_enhanced_multiframe_opens_with_per_frame_positions(tmp_path, phantom):
    path = tmp_path / "enhanced.dcm"
    order = [3, 0, 2, 1, 4]
    write_multiframe(path, phantom[order].astype(np.int16) + 1024, z=[12.0 * i for i in order])
    volume = dicomarray.open_series(path)
    np.testing.assert_allclose(volume.z, [0, 12, 24, 36, 48])
    np.testing.assert_array_equal(volume.values, phantom[:5] + 1024)
    assert list(volume.frame.values) == [1, 3, 2, 0, 4]


def write_multiframe(path: Path, frames: np.ndarray, z: list[float]) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID = "CT", "MF1"
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    orientation, measures = Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing, measures.SliceThickness = [3.6, 3.6], 12.0
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for position in z:
        item, plane = Dataset(), Dataset()
        plane.ImagePositionPatient = [-115.0, -115.0, position]
        item.PlanePositionSequence = Sequence([plane])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = frames.astype("<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_missing_decoder_is_named_before_computing(monkeypatch):
    from pydicom.pixels.decoders.base import Decoder

    monkeypatch.setattr(Decoder, "is_available", property(lambda self: False))
    with pytest.raises(
        dicomarray.MissingDecoderError, match=r"1\.2\.840\.10008\.1\.2\.4\.90.*codecs"
    ):
        dicomarray.open_series(pydicom_file("MR_small_jp2klossless.dcm"))


def test_truncated_pixel_data_is_refused_at_open(make_series):
    paths = make_series()
    data = paths[4].read_bytes()
    paths[4].write_bytes(data[: len(data) - 1000])
    with pytest.raises(dicomarray.PixelDataError, match=paths[4].name):
        dicomarray.open_series(paths[0].parent)


def test_memory_limit_refuses_before_reading(make_series):
    folder = make_series()[0].parent
    with pytest.raises(dicomarray.PixelDataError, match="more than the limit"):
        dicomarray.open_series(folder, max_bytes=10_000)


def test_reading_one_slice_reads_one_file(make_series, reads):
    volume = dicomarray.open_series(make_series()[0].parent, chunks=12)
    volume.isel(z=7).compute()
    assert reads == [7]
    reads.clear()
    volume.sel(z=volume.z[2], method="nearest").isel(y=slice(0, 10)).compute()
    assert reads == [2]


def test_reading_one_row_of_every_slice_reads_only_that_row(make_series, reads):
    volume = dicomarray.open_series(make_series()[0].parent, chunks=5)
    row = volume.isel(y=30).values
    assert sorted(reads) == list(range(12)) and set(reads.rows) == {(30, 31)}
    np.testing.assert_array_equal(row, volume.values[:, 30, :])
    reads.clear()
    strided = volume.isel(y=slice(10, 20, 3), x=slice(5, 9)).values
    np.testing.assert_array_equal(strided, volume.values[:, 10:20:3, 5:9])
    hu_row = volume.dicom.hu().isel(y=-1).values
    np.testing.assert_allclose(hu_row, stored_to_hu(volume)[:, -1, :])


def test_pickle_round_trip_of_a_lazy_volume(make_series, open_volume):
    volume = open_volume(make_series()[0].parent, chunks=4)
    copy = pickle.loads(pickle.dumps(volume))
    assert copy.chunks == volume.chunks
    xr.testing.assert_identical(copy.compute(), volume.compute())


def test_same_files_give_the_same_dask_name(make_series):
    folder = make_series()[0].parent
    assert dicomarray.open_series(folder).data.name == dicomarray.open_series(folder).data.name


def test_attrs_are_json_safe_and_tags_by_keyword(make_series, open_volume):
    volume = open_volume(make_series(tags={"PatientID": "P-7"})[0].parent)
    text = json.dumps(volume.attrs, allow_nan=False)
    assert json.loads(text)["PatientID"] == "P-7"
    assert volume.attrs["Modality"] == "CT"
    assert isinstance(volume.attrs["RescaleSlope"], float)
    assert volume.attrs["PixelSpacing"] == [3.6, 3.6]
    assert "PixelData" not in volume.attrs
    assert volume.dicom.metadata == volume.attrs


def test_affine_follows_selections(make_series):
    volume = dicomarray.open_series(make_series()[0].parent)
    full = volume.dicom.affine
    part = volume.isel(z=slice(3, None), y=slice(10, None), x=slice(5, None, 2)).dicom.affine
    np.testing.assert_allclose(part @ [0, 0, 0, 1], full @ [3, 10, 5, 1])
    np.testing.assert_allclose(part @ [1, 1, 1, 1], full @ [4, 11, 7, 1])


def test_affine_maps_indices_to_patient_positions(make_series):
    paths = make_series(orientation=(1, 0, 0, 0, 0, -1))  # coronal
    volume = dicomarray.open_series(paths[0].parent)
    for path in paths:
        ds = pydicom.dcmread(path)
        k = int(
            np.argmin(np.abs(volume.image_position_p.values - float(ds.ImagePositionPatient[1])))
        )
        np.testing.assert_allclose(
            (volume.dicom.affine @ [k, 0, 0, 1])[:3], ds.ImagePositionPatient, atol=1e-6
        )
        # pixel (row 3, column 5): IPP + 3 row spacings down the column cosine
        # + 5 column spacings along the row cosine
        expected = (
            np.array(ds.ImagePositionPatient, float)
            + 3 * 3.6 * np.array([0, 0, -1])
            + 5 * 3.6 * np.array([1, 0, 0])
        )
        np.testing.assert_allclose((volume.dicom.affine @ [k, 3, 5, 1])[:3], expected, atol=1e-6)


def test_open_from_scan_rows_and_file_list(make_series, phantom):
    paths = make_series()
    index = dicomarray.scan(paths[0].parent)
    np.testing.assert_array_equal(stored_to_hu(dicomarray.open_series(index)), phantom)
    np.testing.assert_array_equal(stored_to_hu(dicomarray.open_series(paths[::-1])), phantom)


def test_open_study_builds_patient_study_series_tree(tmp_path):
    from dicomarray.sample import make_study

    root = make_study(tmp_path / "study", n_patients=2, rows=64, columns=64)
    tree = dicomarray.open_study(root)
    assert sorted(tree.children) == ["PAT041", "PAT042"]
    series = [node for node in tree.subtree if "image" in node.data_vars]
    assert len(series) == 4  # a head series and a scout for each patient
    head = max(series, key=lambda node: node["image"].sizes["z"])
    assert head["image"].chunks is not None
    files = head["image"].attrs["dicomarray_assembly"]["files"]
    np.testing.assert_array_equal(stored_to_hu(head["image"]), hu_of([Path(f) for f in files]))


@pytest.mark.parametrize(
    ("source", "error"),
    [("missing-folder", dicomarray.SeriesNotFoundError), ("junk", dicomarray.SeriesNotFoundError)],
)
def test_bad_sources_raise_clear_errors(tmp_path, source, error):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    with pytest.raises(error, match=str(tmp_path)):
        dicomarray.open_series(tmp_path / source)


def test_a_source_without_images_says_which_file_was_skipped_and_why(tmp_path):
    # a DICOMDIR alone is DICOM, but not an instance: the message must not call it "not DICOM"
    shutil.copy(pydicom_file("MR_small.dcm").parent / "dicomdirtests" / "DICOMDIR", tmp_path)
    with pytest.raises(dicomarray.SeriesNotFoundError) as caught:
        dicomarray.open_series(tmp_path / "DICOMDIR")
    message = str(caught.value)
    assert f"1 file skipped: {tmp_path / 'DICOMDIR'}: a directory record" in message
    assert "not DICOM" not in message


def test_bad_chunks_are_a_dicomarray_error(make_series):
    folder = make_series()[0].parent
    with pytest.raises(dicomarray.DicomArrayError, match="chunks"):
        dicomarray.open_series(folder, chunks={"t": 3})


def test_engine_guess_can_open_is_cheap_and_never_raises(tmp_path):
    from dicomarray.backend import DicomBackendEntrypoint

    entry = DicomBackendEntrypoint()
    plain = tmp_path / "x.txt"
    plain.write_text("hi")
    assert entry.guess_can_open(pydicom_file("MR_small.dcm"))
    assert not entry.guess_can_open(plain)
    assert not entry.guess_can_open(tmp_path / "nothing-here")
    assert not entry.guess_can_open(12345)
    assert not entry.guess_can_open(tmp_path)


def test_values_read_into_one_array_and_match_the_chunked_compute(make_series, monkeypatch):
    from dicomarray.lazy import FrameStackArray

    volume = dicomarray.open_series(make_series()[0].parent, chunks=5)
    assert isinstance(volume.data, FrameStackArray)
    chunked = volume.data.compute()  # chunk by chunk, then concatenated
    np.testing.assert_array_equal(volume.values, chunked)
    # anything derived is a plain dask array computed the usual way
    derived = volume.isel(z=slice(2, 7)) + 1
    assert not isinstance(derived.data, FrameStackArray)
    np.testing.assert_array_equal(derived.values, chunked[2:7] + 1)


def test_hu_of_a_whole_series_is_rescaled_as_it_is_read(make_series, phantom):
    from dicomarray.lazy import FrameStackArray

    volume = dicomarray.open_series(make_series(per_slice_rescale=True)[0].parent, chunks=4)
    hu = volume.dicom.hu()
    assert isinstance(hu.data, FrameStackArray) and hu.dtype == np.float32
    expected = stored_to_hu(volume).astype(np.float32)
    np.testing.assert_allclose(hu.values, expected, rtol=1e-6)  # one array, filled as read
    np.testing.assert_allclose(hu.data.compute(), expected, rtol=1e-6)  # chunk by chunk
    np.testing.assert_allclose(hu.isel(z=3).values, expected[3], rtol=1e-6)
    # slices selected first still read straight from the files, one or several
    part = volume.isel(z=slice(2, 5)).dicom.hu()
    assert isinstance(part.data, FrameStackArray)
    np.testing.assert_allclose(part.values, expected[2:5], rtol=1e-6)
    one = volume.isel(z=7).dicom.hu()
    assert isinstance(one.data, FrameStackArray) and one.shape == expected.shape[1:]
    np.testing.assert_allclose(one.values, expected[7], rtol=1e-6)
    np.testing.assert_allclose(one.data.compute(), expected[7], rtol=1e-6)
    # any other selection: ordinary dask arithmetic, same values
    rows = volume.isel(y=slice(0, 9)).dicom.hu()
    assert not isinstance(rows.data, FrameStackArray)
    np.testing.assert_allclose(rows.values, expected[:, :9], rtol=1e-6)


def test_a_lazy_volume_computes_on_a_distributed_cluster(make_series):
    distributed = pytest.importorskip("distributed")

    volume = dicomarray.open_series(make_series()[0].parent, chunks=3)
    expected = volume.data.compute(scheduler="threads")
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        distributed.Client(cluster) as client,
    ):
        computed = client.compute(volume.dicom.hu().data).result()
        stored = client.compute(volume.data).result()
    np.testing.assert_array_equal(stored, expected)
    np.testing.assert_allclose(computed, stored_to_hu(volume), rtol=1e-6)


def test_a_list_of_slices_reads_only_those_files(make_series, reads):
    volume = dicomarray.open_series(make_series()[0].parent)
    expected, expected_hu = volume.values, stored_to_hu(volume)
    reads.clear()
    picked = volume.isel(z=[9, 2, 5]).values
    assert sorted(reads) == [2, 5, 9]
    np.testing.assert_array_equal(picked, expected[[9, 2, 5]])
    reads.clear()
    nearest = volume.sel(z=[float(volume.z[1]), float(volume.z[7])], method="nearest")
    np.testing.assert_array_equal(nearest.dicom.hu().values, expected_hu[[1, 7]])
    assert sorted(reads) == [1, 7]


def test_data_warnings_point_at_the_callers_line(make_series):
    folder = make_series(tilt_degrees=10.0)[0].parent
    with pytest.warns(GeometryWarning, match="gantry tilt") as record:
        dicomarray.open_series(folder)
    assert record[0].filename == __file__


def _edit(path: Path, **tags) -> None:
    """Rewrite one test file with some tags changed; a tag given as None is removed."""
    ds = pydicom.dcmread(path)
    for keyword, value in tags.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path)


def test_a_tag_varying_between_headers_is_a_coordinate_never_one_value(make_series, tmp_path):
    """A real GE series has XRayTubeCurrent 160 and 180: no attr may say 180 for all."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    paths = make_series(tags={"XRayTubeCurrent": 180, "KVP": 120})
    for i, path in enumerate(paths):
        item = Dataset()
        item.ReferencedSOPInstanceUID = f"1.2.826.0.1.{i}"
        tags = {"ReferencedImageSequence": Sequence([item])}
        _edit(path, **tags, **({"XRayTubeCurrent": 160} if i < 4 else {}))
    volume = dicomarray.open_series(paths[0].parent)
    assert "XRayTubeCurrent" not in volume.attrs
    assert "ReferencedImageSequence" not in volume.attrs  # a varying sequence: no coordinate
    assert "referenced_image_sequence" not in volume.coords
    assert volume.attrs["KVP"] == 120
    expected = {str(p): int(pydicom.dcmread(p).XRayTubeCurrent) for p in paths}
    files = volume.attrs["dicomarray_assembly"]["files"]
    assert list(volume.x_ray_tube_current.values) == [expected[f] for f in files]
    varying = volume.attrs["dicomarray_assembly"]["varying_tags"]
    assert {"XRayTubeCurrent", "ReferencedImageSequence", "InstanceNumber"} <= set(varying)
    volume.dicom.to_npy(tmp_path / "v.npy")
    sidecar = json.loads((tmp_path / "v.json").read_text())
    assert "XRayTubeCurrent" not in sidecar
    assert sidecar["varying"]["XRayTubeCurrent"] == list(volume.x_ray_tube_current.values)


def test_orientation_rounding_noise_is_one_orientation(make_series, phantom):
    paths = make_series()
    _edit(paths[5], ImageOrientationPatient=[1.0, 6.5e-8, 0.0, 0.0, 1.0, -6.5e-8])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        volume = dicomarray.open_series(paths[0].parent)
    assert "image_orientation_patient" not in volume.coords
    assert volume.attrs["ImageOrientationPatient"] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    np.testing.assert_array_equal(stored_to_hu(volume), phantom)


def test_tied_largest_series_are_refused_with_the_candidates(make_series, tmp_path):
    first = make_series("a", tags={"SeriesNumber": 3, "SeriesDescription": "AX A"})
    second = make_series("b", tags={"SeriesNumber": 4, "SeriesDescription": "AX B"}, seed=1)
    uids = [str(pydicom.dcmread(p[0]).SeriesInstanceUID) for p in (first, second)]
    with pytest.raises(dicomarray.AmbiguousSeriesError) as caught:
        dicomarray.open_series(tmp_path)
    message = str(caught.value)
    for uid, folder in zip(uids, (first[0].parent, second[0].parent), strict=True):
        assert uid in message and str(folder) in message
    assert "number 3" in message and "AX B" in message and "series_uid" in message
    assert isinstance(caught.value, dicomarray.SeriesNotFoundError)
    assert dicomarray.open_series(tmp_path, uids[1]).sizes["z"] == len(second)


def test_same_uid_at_another_position_is_kept_with_a_warning(make_series, phantom):
    paths = make_series()
    other = paths[0].parent / "same_uid_elsewhere.dcm"
    ds = pydicom.dcmread(paths[-1])
    ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], ds.ImagePositionPatient[2] + 12.0]
    ds.SliceLocation = ds.ImagePositionPatient[2]
    ds.save_as(other)
    with pytest.warns(GeometryWarning, match="SOPInstanceUID .* kept them as distinct"):
        volume = dicomarray.open_series(paths[0].parent)
    assert volume.sizes["z"] == len(paths) + 1
    assert str(other) in volume.attrs["dicomarray_assembly"]["files"]
    assert volume.attrs["dicomarray_assembly"]["left_out"] == []


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("ImageOrientationPatient", [1.0]),
        ("ImageOrientationPatient", [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]),
        ("PixelSpacing", [0.5]),
        ("PixelSpacing", [0.0, 0.5]),
        ("ImagePositionPatient", [1.0, 2.0]),
    ],
    ids=["iop-one-value", "iop-parallel", "spacing-one-value", "spacing-zero", "ipp-two-values"],
)
def test_malformed_geometry_values_name_the_file(make_series, keyword, value):
    paths = make_series()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the wrong value multiplicity
        _edit(paths[2], **{keyword: value})
    with pytest.raises(dicomarray.AssemblyError, match=f"{paths[2]}: {keyword}"):
        dicomarray.open_series(paths[0].parent)


def test_malformed_functional_groups_name_the_file(tmp_path):
    path = tmp_path / "enhanced.dcm"
    write_multiframe(path, np.zeros((4, 8, 8), np.int16), z=[0.0, 2.0, 4.0, 6.0])
    raw = bytearray(path.read_bytes())
    # the first per-frame ImagePositionPatient read as FD: 18 bytes is no whole number of
    # doubles, which pydicom only finds when the functional groups are parsed
    at = raw.find(b"\x20\x00\x32\x00DS")
    assert int.from_bytes(raw[at + 6 : at + 8], "little") % 8
    raw[at + 4 : at + 6] = b"FD"
    path.write_bytes(bytes(raw))
    with pytest.raises(
        dicomarray.InvalidDicomError,
        match=f"{path}: malformed header: ImagePositionPatient of 18 bytes is no whole number",
    ):
        dicomarray.open_series(path)


def save_with_nested_sequence(paths: list[Path], levels: int) -> None:
    """Give files a ReferencedImageSequence nested ``levels`` deep (a hostile header)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    inner = Dataset()
    inner.CodeValue = "deep"
    for _ in range(levels):
        outer = Dataset()
        outer.ReferencedImageSequence = Sequence([inner])
        inner = outer
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # pydicom writes nested sequences recursively
    try:
        for path in paths:
            _edit(path, ReferencedImageSequence=inner.ReferencedImageSequence)
    finally:
        sys.setrecursionlimit(limit)


@pytest.fixture
def deep_headers_allowed(monkeypatch):
    """Header limits that let a 300-level sequence through to the layers above the reader."""
    from dicomarray import header

    monkeypatch.setattr(header, "DEFAULT_LIMITS", header.HeaderLimits(max_depth=400))


def test_a_deeply_nested_sequence_is_capped_in_attrs_and_exports(
    make_series, tmp_path, deep_headers_allowed
):
    from dicomarray.attrs import MAX_SEQUENCE_DEPTH

    paths = make_series()
    save_with_nested_sequence(paths, levels=300)
    volume = dicomarray.open_series(paths[0].parent)
    depth, level = 0, volume.attrs["ReferencedImageSequence"]
    while level:
        depth, level = depth + 1, level[0].get("ReferencedImageSequence")
    assert depth == MAX_SEQUENCE_DEPTH
    volume.dicom.to_npy(tmp_path / "deep.npy")
    volume.dicom.to_zarr(tmp_path / "deep.zarr")
    assert json.loads((tmp_path / "deep.json").read_text())["ReferencedImageSequence"]


def test_study_nodes_name_integers_as_integers_whatever_the_column_type(make_series, tmp_path):
    make_series("s", tags={"SeriesNumber": 201, "SeriesDescription": "AX"})
    index = dicomarray.scan(tmp_path).astype({"SeriesNumber": "float64"})
    (node,) = [n for n in dicomarray.open_study(index).subtree if "image" in n.data_vars]
    assert node.name.startswith("201_")


def test_a_slice_in_another_pixel_format_is_named(make_series):
    paths = make_series()
    _edit(paths[7], PixelRepresentation=0)
    with pytest.raises(dicomarray.AssemblyError, match="differ in PixelRepresentation") as caught:
        dicomarray.open_series(paths[0].parent)
    assert f"0 in {paths[7]}" in str(caught.value)


def test_slices_of_another_pixel_spacing_are_another_stack(make_series, phantom):
    paths = make_series()
    _edit(paths[0], PixelSpacing=[1.8, 1.8])
    _edit(paths[1], PixelSpacing=[3.6000001, 3.6])  # rounding noise: the same stack
    with pytest.warns(GeometryWarning, match=r"PixelSpacing \[1.8, 1.8\] differs"):
        volume = dicomarray.open_series(paths[0].parent)
    assert volume.sizes["z"] == len(paths) - 1
    (left,) = volume.attrs["dicomarray_assembly"]["left_out"]
    assert left["path"] == str(paths[0])


def test_missing_pixel_spacing_is_said(make_series):
    paths = make_series()
    for path in paths:
        _edit(path, PixelSpacing=None)
    with pytest.warns(GeometryWarning, match="no PixelSpacing"):
        volume = dicomarray.open_series(paths[0].parent)
    assert any("no PixelSpacing" in w for w in volume.attrs["dicomarray_assembly"]["warnings"])


def test_enhanced_multiframe_attrs_hold_the_functional_group_geometry(tmp_path):
    """Orientation and spacing live in the shared functional groups, not at the top level."""
    path = tmp_path / "enhanced.dcm"
    write_multiframe(path, np.zeros((3, 8, 8), np.int16), z=[0.0, 2.0, 4.0])
    volume = dicomarray.open_series(path)
    assert volume.attrs["ImageOrientationPatient"] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert volume.attrs["PixelSpacing"] == [3.6, 3.6]
    assert volume.attrs["SliceThickness"] == 12.0


def test_a_series_without_images_names_its_files(make_series, tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    make_series()
    report = Dataset()
    report.file_meta = FileMetaDataset()
    report.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.67"
    report.SOPInstanceUID = report.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.77.1"
    report.SeriesInstanceUID, report.Modality = "1.2.826.0.1.77", "SR"
    report.save_as(tmp_path / "dose.dcm", enforce_file_format=True)
    with pytest.raises(
        dicomarray.SeriesNotFoundError, match="dose.dcm: series 1.2.826.0.1.77 holds 1"
    ):
        dicomarray.open_series(tmp_path, "1.2.826.0.1.77")


def test_a_mosaic_says_it_is_not_cut_into_slices(make_series):
    paths = make_series(tags={"ImageType": ["ORIGINAL", "PRIMARY", "M", "MOSAIC"]})
    with pytest.warns(GeometryWarning, match="MOSAIC"):
        dicomarray.open_series(paths[0].parent)
