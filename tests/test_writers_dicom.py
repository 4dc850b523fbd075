"""numpy -> DICOM over a template: values within one step, geometry, identity, the template kept."""

from __future__ import annotations

import random
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import xarray as xr
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, RLELossless

import dicomarray
import dicomarray.writers
from dicomarray import GeometryWarning, WriteError
from dicomarray.header import read_dataset
from dicomarray.writers.dicom import Rescale, SlicePlane, StoredType, choose_rescale

from .conftest import XA10_FILES, gunzip
from .export_helpers import (
    SERIES_KINDS,
    digests,
    lazy_hu,
    modality_values,
    sitk_series,
    temporaries,
)
from .nd_series import expected_values, open_time_series, write_time_series

TEMPLATES = {
    **SERIES_KINDS,
    "rle": {"transfer_syntax": RLELossless},
    "big-endian": {"transfer_syntax": ExplicitVRBigEndian},
}


def open_quietly(source, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeometryWarning)
        return dicomarray.open_series(source, **kwargs)


def smooth_values(shape) -> np.ndarray:
    """Float values with a fractional part everywhere, over a CT-like range."""
    z, y, x = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    return -1000.0 + 2500.0 * (0.6 * x + 0.3 * y + 0.1 * z) + 0.3137


@pytest.mark.filterwarnings("ignore::dicomarray.GeometryWarning")
@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_values_read_back_within_one_step_in_the_template_geometry(make_series, tmp_path, kind):
    paths = make_series(**TEMPLATES[kind])
    template = open_quietly(paths[0].parent)
    before = digests(paths)
    values = smooth_values(template.shape)
    written = dicomarray.to_dicom(values, paths[0].parent, tmp_path / "out")
    assert digests(paths) == before
    assert [p.name for p in written] == [f"IM_{i:04d}.dcm" for i in range(1, 13)]
    back = open_quietly(tmp_path / "out")
    step = float(back.attrs["RescaleSlope"])
    assert np.abs(modality_values(back) - values).max() <= step
    assert step <= 2500.0 / (2 ** int(back.attrs["BitsStored"]) - 1) * 1.0001
    np.testing.assert_allclose(back["z"].values, template["z"].values)
    for name in ("image_position_l", "image_position_p", "image_position_s"):
        np.testing.assert_allclose(back[name].values, template[name].values)
    np.testing.assert_allclose(back.dicom.affine, template.dicom.affine)
    for key in ("ImageOrientationPatient", "PixelSpacing", "FrameOfReferenceUID"):
        assert back.attrs[key] == template.attrs[key]
    for path, expected in zip(written, values, strict=True):
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert not ds["PixelData"].is_undefined_length
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert np.abs(hu - expected).max() <= step


@pytest.mark.parametrize("kind", ["axial", "sagittal", "uint12", "rle"])
def test_simpleitk_reads_the_values_and_the_template_geometry(make_series, tmp_path, kind):
    folder = make_series(**TEMPLATES[kind])[0].parent
    values = smooth_values((12, 64, 64))
    written = dicomarray.to_dicom(values, folder, tmp_path / "out")
    image, reference = sitk_series(tmp_path / "out"), sitk_series(folder)
    step = float(pydicom.dcmread(written[0]).RescaleSlope)
    assert np.abs(sitk.GetArrayFromImage(image) - values).max() <= step
    np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)


def test_integer_values_that_fit_are_written_exactly_with_the_template_rescale(
    make_series, tmp_path
):
    paths = make_series()
    template = dicomarray.open_series(paths[0].parent)
    dicomarray.to_dicom(lazy_hu(template), template, tmp_path / "out")
    back = dicomarray.open_series(tmp_path / "out")
    assert (back.attrs["RescaleSlope"], back.attrs["RescaleIntercept"]) == (1.0, -1024.0)
    np.testing.assert_array_equal(back.values, template.values)


def test_identity_is_new_and_the_derived_tags_are_set(make_series, tmp_path):
    paths = make_series(instance_numbers="reversed")
    template = dicomarray.open_series(paths[0].parent)
    values = smooth_values(template.shape)
    written = dicomarray.to_dicom(values, paths, tmp_path / "out", series_description="SMOOTH")
    source = [
        pydicom.dcmread(p, stop_before_pixels=True)
        for p in template.attrs["dicomarray_assembly"]["files"]
    ]
    new = [pydicom.dcmread(p) for p in written]
    assert len({ds.SeriesInstanceUID for ds in new}) == 1
    assert new[0].SeriesInstanceUID != source[0].SeriesInstanceUID
    uids = {ds.SOPInstanceUID for ds in new}
    assert len(uids) == 12 and not uids & {ds.SOPInstanceUID for ds in source}
    for i, (ds, old) in enumerate(zip(new, source, strict=True)):
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID == old.SOPClassUID
        assert ds.StudyInstanceUID == old.StudyInstanceUID
        assert ds.FrameOfReferenceUID == old.FrameOfReferenceUID
        assert ds.ImagePositionPatient == old.ImagePositionPatient
        assert ds.InstanceNumber == i + 1
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == old.SOPInstanceUID
        assert ds.SeriesDescription == "SMOOTH"
        assert ds.SeriesNumber == old.SeriesNumber + 1000
        assert ds.PatientName == old.PatientName
        assert ds.SmallestImagePixelValue == ds.pixel_array.min()
        assert ds.LargestImagePixelValue == ds.pixel_array.max()
        assert float(ds.WindowCenter) == pytest.approx((values.min() + values.max()) / 2)
        assert float(ds.WindowWidth) == pytest.approx(values.max() - values.min())
        assert ds.WindowCenterWidthExplanation == "DATA RANGE"


def test_window_and_description_defaults_can_be_overridden(make_series, tmp_path):
    folder = make_series()[0].parent
    written = dicomarray.to_dicom(
        smooth_values((12, 64, 64)), folder, tmp_path / "out", window=(40, 80), series_number=7
    )
    ds = pydicom.dcmread(written[0])
    assert (float(ds.WindowCenter), float(ds.WindowWidth), ds.SeriesNumber) == (40.0, 80.0, 7)
    assert "WindowCenterWidthExplanation" not in ds
    assert ds.SeriesDescription.endswith("(derived)")


def test_a_mask_of_zeros_and_ones_gets_an_exact_window(make_series, tmp_path):
    template = dicomarray.open_series(make_series()[0].parent)
    mask = lazy_hu(template) > 500
    written = mask.dicom.to_dicom(tmp_path / "out", template=template)
    back = dicomarray.open_series(tmp_path / "out")
    np.testing.assert_array_equal(modality_values(back), mask.values.astype(float))
    ds = pydicom.dcmread(written[0])
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (0.5, 1.0)


def test_the_template_can_be_a_folder_a_list_of_files_or_an_opened_series(make_series, tmp_path):
    paths = make_series()
    shuffled = random.Random(1).sample(paths, len(paths))
    template = dicomarray.open_series(paths[0].parent)
    values = smooth_values(template.shape)
    pixels = []
    for i, form in enumerate((paths[0].parent, shuffled, template)):
        written = dicomarray.to_dicom(values, form, tmp_path / f"out{i}")
        pixels.append([pydicom.dcmread(p).pixel_array for p in written])
    np.testing.assert_array_equal(pixels[0], pixels[1])
    np.testing.assert_array_equal(pixels[0], pixels[2])


def test_a_shape_that_does_not_match_the_template_is_a_clear_error(make_series, tmp_path):
    folder = make_series()[0].parent
    with pytest.raises(WriteError, match=r"volume shape \(11, 64, 64\) does not match"):
        dicomarray.to_dicom(np.zeros((11, 64, 64)), folder, tmp_path / "out")
    with pytest.raises(WriteError, match="12 slices of 64 x 64"):
        dicomarray.to_dicom(np.zeros((12, 32, 64)), folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_values_and_destinations_are_refused(make_series, tmp_path):
    folder = make_series()[0].parent
    values = smooth_values((12, 64, 64))
    values[3, 4, 5] = np.nan
    with pytest.raises(WriteError, match="NaN"):
        dicomarray.to_dicom(values, folder, tmp_path / "out")
    assert not (tmp_path / "out").exists() and temporaries(tmp_path) == []
    with pytest.raises(WriteError, match="template's files"):
        dicomarray.to_dicom(np.zeros((12, 64, 64)), folder, folder, overwrite=True)
    dicomarray.to_dicom(np.zeros((12, 64, 64)), folder, tmp_path / "out")
    with pytest.raises(WriteError, match="already exists"):
        dicomarray.to_dicom(np.ones((12, 64, 64)), folder, tmp_path / "out")
    dicomarray.to_dicom(np.ones((12, 64, 64)), folder, tmp_path / "out", overwrite=True)
    np.testing.assert_array_equal(modality_values(dicomarray.open_series(tmp_path / "out")), 1.0)


def test_a_failure_while_writing_leaves_no_series(make_series, tmp_path):
    template = dicomarray.open_series(make_series()[0].parent, chunks=4)
    calls = []

    def explode(block):
        calls.append(1)
        if len(calls) > 4:  # the value range pass succeeds, the writing pass fails
            raise RuntimeError("disk on fire")
        return block

    hu = lazy_hu(template)
    failing = hu.copy(data=hu.data.map_blocks(explode, meta=hu.data._meta))
    with pytest.raises(dicomarray.DicomArrayError, match="RuntimeError: disk on fire"):
        failing.dicom.to_dicom(tmp_path / "out", template=template)
    assert not (tmp_path / "out").exists() and temporaries(tmp_path) == []


def test_compute_false_returns_a_delayed_export(make_series, tmp_path):
    template = dicomarray.open_series(make_series()[0].parent, chunks=5)
    delayed = lazy_hu(template).dicom.to_dicom(tmp_path / "out", template=template, compute=False)
    assert not (tmp_path / "out").exists()
    written = delayed.compute()
    assert len(written) == 12 and all(p.is_file() for p in written)


@pytest.mark.parametrize("rescale", ["one", "per-slice"])
def test_stored_values_are_written_through_the_rescale_that_describes_them(
    make_series, tmp_path, rescale
):
    options = {"per_slice_rescale": True} if rescale == "per-slice" else {"intercept": -1024.0}
    template = open_quietly(make_series(**options)[0].parent)
    expected = modality_values(template)  # the test's own arithmetic on the stored values
    # a DataArray of stored values says so itself (rescale attrs, no units); a numpy array
    # of them needs values="stored" and takes the template's rescale
    template.dicom.to_dicom(tmp_path / "from-xarray")
    dicomarray.to_dicom(template.values, template, tmp_path / "from-numpy", values="stored")
    for out in ("from-xarray", "from-numpy"):
        back = modality_values(open_quietly(tmp_path / out))
        if rescale == "one":  # integers that fit are written exactly
            np.testing.assert_array_equal(back, expected)
        else:
            step = float(pydicom.dcmread(next((tmp_path / out).iterdir())).RescaleSlope)
            np.testing.assert_allclose(back, expected, atol=step / 2 + 1e-6)


def test_values_that_contradict_the_volume_or_are_unknown_are_refused(make_series, tmp_path):
    template = open_quietly(make_series()[0].parent)
    with pytest.raises(WriteError, match="values='stored', but the volume records"):
        dicomarray.to_dicom(lazy_hu(template), template, tmp_path / "a", values="stored")
    with pytest.raises(WriteError, match="values must be one of"):
        dicomarray.to_dicom(template.values, template, tmp_path / "b", values="raw")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_volume_of_another_series_with_the_same_geometry_is_refused(make_series, tmp_path):
    # two reconstructions of one acquisition: same shape and positions, other instances
    first = open_quietly(make_series("first", seed=1)[0].parent)
    second = open_quietly(make_series("second", seed=2)[0].parent)
    np.testing.assert_allclose(first["z"], second["z"])
    with pytest.raises(WriteError, match=r"volume frame 0 is instance .* another series"):
        lazy_hu(first).dicom.to_dicom(tmp_path / "mixed", template=second)
    assert not (tmp_path / "mixed").exists()
    unlinked = lazy_hu(first).drop_vars("sop_instance_uid")
    assert len(unlinked.dicom.to_dicom(tmp_path / "over-second", template=second)) == 12


def test_a_volume_at_other_positions_is_refused(make_series, tmp_path):
    template = open_quietly(make_series()[0].parent)
    moved = lazy_hu(template).assign_coords(z=template["z"] + 5.0)
    with pytest.raises(WriteError, match=r"volume slice 0 is at z = .* \(12 of 12 slices differ\)"):
        moved.dicom.to_dicom(tmp_path / "moved", template=template)
    assert not (tmp_path / "moved").exists()


def slice_numbers(count: int) -> np.ndarray:
    """HU 100 x i everywhere in slice i, so that each slice's value tells where it came from."""
    return np.broadcast_to(100.0 * np.arange(count)[:, None, None], (count, 8, 8)).copy()


@pytest.mark.parametrize("with_uids", [True, False], ids=["by-sop-uid", "by-z"])
@pytest.mark.parametrize("order", ["reversed", "permuted"])
def test_a_reordered_volume_is_written_at_its_own_positions(
    make_series, tmp_path, order, with_uids
):
    source = dicomarray.open_series(make_series(hu=slice_numbers(6))[0].parent)
    expected = dict(zip(source["z"].values, lazy_hu(source).values[:, 0, 0], strict=True))
    if order == "reversed":
        volume = source.sortby("z", ascending=False)
    else:
        volume = source.isel(z=[3, 0, 5, 1, 4, 2])
    if not with_uids:  # no per-slice UIDs: the files are matched on z
        volume = volume.drop_vars("sop_instance_uid")
    lazy_hu(volume).dicom.to_dicom(tmp_path / "out")
    back = dicomarray.open_series(tmp_path / "out")
    np.testing.assert_array_equal(back["z"].values, source["z"].values)
    for z, values in zip(back["z"].values, modality_values(back), strict=True):
        np.testing.assert_array_equal(values, expected[z])


def test_a_volume_in_another_order_than_its_template_is_refused(make_series, tmp_path):
    source = dicomarray.open_series(make_series(hu=slice_numbers(6))[0].parent)
    reversed_hu = lazy_hu(source.sortby("z", ascending=False))
    for template in (source, source.attrs["dicomarray_assembly"]["files"]):
        with pytest.raises(WriteError, match="volume slice 0 is at z = .* but its template file"):
            reversed_hu.dicom.to_dicom(tmp_path / "out", template=template)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools' dciodvfy not installed")
@pytest.mark.parametrize("kind", ["axial", "uint12"])
def test_dciodvfy_finds_no_errors(make_series, tmp_path, kind):
    folder = make_series(**TEMPLATES[kind])[0].parent
    written = dicomarray.to_dicom(smooth_values((12, 64, 64)), folder, tmp_path / "out")
    report = subprocess.run(["dciodvfy", str(written[0])], capture_output=True, text=True)
    assert "Error" not in report.stdout + report.stderr, report.stderr


def test_a_reoriented_export_read_back_is_written_where_it_lies(make_series, tmp_path):
    source = dicomarray.open_series(make_series()[0].parent)
    source.dicom.to_npy(tmp_path / "ras.npy", orientation="RAS")  # rows and columns flipped
    read_back = dicomarray.writers.open_npy(tmp_path / "ras.npy")  # y, x from the sidecar
    written = dicomarray.to_dicom(read_back, source, tmp_path / "out")
    # the same planes as the reoriented volume in memory (checked against SimpleITK below)
    in_memory = source.dicom.reorient("RAS").dicom.to_dicom(tmp_path / "in-memory")
    for path, reference in zip(written, in_memory, strict=True):
        ds, ref = pydicom.dcmread(path), pydicom.dcmread(reference)
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            np.testing.assert_allclose(
                [float(v) for v in ds[keyword].value], [float(v) for v in ref[keyword].value]
            )
        np.testing.assert_array_equal(ds.pixel_array, ref.pixel_array)


def test_a_reoriented_volume_without_geometry_is_refused(make_series, tmp_path):
    source = dicomarray.open_series(make_series()[0].parent)
    source.dicom.to_npy(tmp_path / "ras.npy", orientation="RAS")  # rows and columns flipped
    bare = dicomarray.writers.open_npy(tmp_path / "ras.npy").drop_vars(["y", "x"])
    with pytest.raises(WriteError, match="reoriented from LPS to RAS, and carries no geometry"):
        dicomarray.to_dicom(bare, source, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    source.dicom.to_npy(tmp_path / "lps.npy", orientation="LPS")  # as stored: nothing flipped
    written = dicomarray.to_dicom(
        dicomarray.writers.open_npy(tmp_path / "lps.npy"), source, tmp_path / "lps"
    )
    assert len(written) == 12


def test_a_volume_whose_attrs_were_dropped_keeps_its_template_geometry(make_series, tmp_path):
    paths = make_series(orientation=(0, 1, 0, 0, 0, -1))  # sagittal
    source = dicomarray.open_series(paths[0].parent)
    bare = lazy_hu(source).copy()
    bare.attrs = {}  # as arithmetic leaves it: no orientation to build a geometry from
    written = bare.dicom.to_dicom(tmp_path / "out", template=source)
    for path, template in zip(written, source["source_file"].values, strict=True):
        ds, original = pydicom.dcmread(path), pydicom.dcmread(template)
        assert ds.ImageOrientationPatient == original.ImageOrientationPatient
        assert ds.ImagePositionPatient == original.ImagePositionPatient


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools' dciodvfy not installed")
def test_dciodvfy_finds_no_errors_in_a_reoriented_selection(make_series, tmp_path):
    volume = lazy_hu(dicomarray.open_series(make_series()[0].parent))
    written = volume.dicom.reorient("RAS").isel(z=[7, 3]).dicom.to_dicom(tmp_path / "out")
    for path in written:
        report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        assert "Error" not in report.stdout + report.stderr, report.stderr


def test_rescale_choice():
    int16, uint12 = StoredType(16, 16, True), StoredType(16, 12, False)
    preferred = Rescale(1.0, -1024.0)
    assert choose_rescale(-1000, 2000, integral=True, stored_type=int16, preferred=preferred) == (
        preferred
    )
    assert choose_rescale(-1000, 2000, integral=True, stored_type=uint12) == Rescale(1.0, -1000.0)
    assert choose_rescale(0, 1, integral=True, stored_type=uint12) == Rescale(1.0, 0.0)
    wide = choose_rescale(-1000, 9000, integral=True, stored_type=uint12)
    assert wide.slope > 1 and wide.slope * 4095 >= 10000
    small = choose_rescale(0.0, 1e-3, integral=False, stored_type=int16)
    assert small.slope * 65535 >= 1e-3 and small.slope < 1e-7
    assert choose_rescale(3.5, 3.5, integral=False, stored_type=int16).slope == 1.0


def hu_and_position(path) -> tuple[np.ndarray, list[float]]:
    """A file's HU and (0020,0032) by pydicom, the independent reader."""
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return hu, [float(v) for v in ds.ImagePositionPatient]


SELECTIONS = {
    "isel": lambda volume: volume.isel(z=[5, 2, 9]),
    "sortby": lambda volume: volume.isel(z=[2, 5, 9]).sortby("z", ascending=False),
    "where": lambda volume: volume.where(volume["slice_location"] > 20.0, drop=True),
}


@pytest.mark.parametrize("how", sorted(SELECTIONS))
def test_a_selection_is_written_over_exactly_its_own_files(make_series, tmp_path, monkeypatch, how):
    paths = make_series(hu=slice_numbers(12))
    # one slice per chunk, so that the selection's pixels are read from its own files only
    selection = SELECTIONS[how](lazy_hu(dicomarray.open_series(paths[0].parent, chunks=1)))
    own = [str(p) for p in selection["source_file"].values]
    for other in set(map(str, paths)) - set(own):
        Path(other).unlink()  # a re-scan of the series would miss them
    read = []

    def spy(path, **kwargs):
        read.append(str(path))
        return read_dataset(path, **kwargs)

    monkeypatch.setattr("dicomarray.writers.dicom.read_dataset", spy)
    written = selection.dicom.to_dicom(tmp_path / "out")
    assert len(written) == len(own) == selection.sizes["z"]
    assert set(read) == set(own)  # no other header, and nothing re-read to order them
    for path, source, values in zip(written, own, selection.values, strict=True):
        hu, position = hu_and_position(path)
        source_hu, source_position = hu_and_position(source)
        np.testing.assert_array_equal(hu, source_hu)
        np.testing.assert_array_equal(hu, values)
        assert position == source_position
        assert pydicom.dcmread(path).SourceImageSequence[0].ReferencedSOPInstanceUID == (
            pydicom.dcmread(source).SOPInstanceUID
        )


def test_a_template_without_provenance_is_a_clear_error(make_series, tmp_path):
    source = dicomarray.open_series(make_series()[0].parent)
    source.dicom.to_npy(tmp_path / "anonymous.npy", deidentify=True)
    read_back = dicomarray.writers.open_npy(tmp_path / "anonymous.npy")
    with pytest.raises(WriteError, match="no source_file coordinate along z"):
        dicomarray.to_dicom(lazy_hu(source), read_back, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_resampled_volume_as_its_own_template_says_why_it_has_no_files(make_series, tmp_path):
    # new slices between the source's planes come from no one file: the error says so,
    # rather than pointing at de-identification the user never asked for
    source = dicomarray.open_series(make_series()[0].parent)
    resampled = source.dicom.resample((1.0, 1.0, 1.0))
    with pytest.raises(WriteError, match=r"no source_file .* a resample\(\) or equalize\(\)"):
        resampled.dicom.to_dicom(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_template_file_that_is_gone_or_repeated_is_named(make_series, tmp_path):
    paths = make_series()
    source = lazy_hu(dicomarray.open_series(paths[0].parent))
    with pytest.raises(WriteError, match="holds this file's slice twice"):
        source.isel(z=[1, 1]).dicom.to_dicom(tmp_path / "out")
    gone = Path(str(source["source_file"].values[3]))
    gone.unlink()
    with pytest.raises(WriteError, match=rf"{gone.name}: the template's file is gone \(1 of 12"):
        source.dicom.to_dicom(tmp_path / "out")
    assert not (tmp_path / "out").exists() and temporaries(tmp_path) == []


def test_a_reoriented_volume_is_written_where_it_lies(make_series, tmp_path):
    folder = make_series()[0].parent
    source = dicomarray.open_series(folder)
    assert source.dicom.orientation_code() == "LPS"
    canonical = lazy_hu(source).dicom.reorient("RAS")  # columns and rows flipped
    written = canonical.dicom.to_dicom(tmp_path / "out")
    first, template = pydicom.dcmread(written[0]), pydicom.dcmread(source["source_file"].values[0])
    assert [float(v) for v in first.ImageOrientationPatient] == [-1, 0, 0, 0, -1, 0]
    corner = np.array(template.ImagePositionPatient, float) + [63 * 3.6, 63 * 3.6, 0]
    np.testing.assert_allclose([float(v) for v in first.ImagePositionPatient], corner, atol=1e-4)
    assert float(first.SliceLocation) == float(template.SliceLocation)
    # SimpleITK sees both series as one volume in the patient: flipped indices, same world
    image, reference = sitk_series(tmp_path / "out"), sitk_series(folder)
    step = float(first.RescaleSlope)
    flipped = sitk.GetArrayFromImage(image)[:, ::-1, ::-1]
    assert np.abs(flipped - sitk.GetArrayFromImage(reference)).max() <= step
    np.testing.assert_allclose(image.GetDirection(), [-1, 0, 0, 0, -1, 0, 0, 0, 1], atol=1e-6)
    np.testing.assert_allclose(
        image.GetOrigin(), reference.TransformIndexToPhysicalPoint((63, 63, 0)), atol=1e-4
    )


def test_a_slice_plane_keeps_the_template_text_it_agrees_with_and_moves_the_location():
    def template() -> pydicom.Dataset:
        ds = pydicom.Dataset()
        ds.ImagePositionPatient = ["-12.5", "-12.5", "30"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing = ["0.5", "0.5"]
        ds.SliceLocation = "-30"  # measured the other way: only its change is the plane's
        return ds

    def plane(position, orientation=(1, 0, 0, 0, 1, 0)) -> SlicePlane:
        return SlicePlane(position, orientation, (0.5, 0.5), normal=(0.0, 0.0, 1.0))

    same = template()
    plane((-12.5, -12.5 + 1e-6, 30.0)).set_on(same)
    assert [str(v) for v in same.ImagePositionPatient] == ["-12.5", "-12.5", "30"]
    assert same == template()
    flipped = template()
    plane((12.0, 12.0, 30.0), (-1, 0, 0, 0, -1, 0)).set_on(flipped)
    assert [float(v) for v in flipped.ImagePositionPatient] == [12.0, 12.0, 30.0]
    assert [float(v) for v in flipped.ImageOrientationPatient] == [-1, 0, 0, 0, -1, 0]
    assert float(flipped.SliceLocation) == -30.0  # moved within its plane only
    moved = template()
    plane((-12.5, -12.5, 35.0)).set_on(moved)
    assert float(moved.SliceLocation) == -25.0


PAD_STORED = -2000  # (0028,0120) of the padded template; HU -3024 with the intercept -1024


def padded_series(make_series, phantom, **tags) -> list:
    """The phantom with its first three rows as padding, declared as PixelPaddingValue."""
    hu = phantom.copy()
    hu[:, :3] = PAD_STORED - 1024
    return make_series(hu=hu, tags={"PixelPaddingValue": PAD_STORED, **tags})


def test_nan_from_hu_is_written_as_the_template_padding_value(make_series, phantom, tmp_path):
    paths = padded_series(make_series, phantom)
    hu = dicomarray.open_series(paths[0].parent, chunks=5).dicom.hu()  # padding="nan"
    assert np.isnan(hu.values[:, :3]).all()
    written = dicomarray.to_dicom(hu, paths[0].parent, tmp_path / "out")
    for template, path in zip(paths, written, strict=True):
        original, ds = pydicom.dcmread(template), pydicom.dcmread(path)
        assert ds.PixelPaddingValue == PAD_STORED and "PixelPaddingRangeLimit" not in ds
        np.testing.assert_array_equal(ds.pixel_array[:3], PAD_STORED)
        np.testing.assert_array_equal(ds.pixel_array, original.pixel_array)
    # the window is the data's, not the padding's
    assert float(pydicom.dcmread(written[0]).WindowCenter) > PAD_STORED - 1024 + 1000
    again = dicomarray.open_series(tmp_path / "out").dicom.hu()
    np.testing.assert_array_equal(again.values, hu.values)


def test_nan_over_a_template_without_padding_names_the_series(make_series, tmp_path):
    folder = make_series(tags={"SeriesDescription": "NO PADDING"})[0].parent
    values = dicomarray.open_series(folder).dicom.hu().values
    values[4, 0, 0] = np.nan
    with pytest.raises(WriteError, match="declares no.*PixelPaddingValue") as error:
        dicomarray.to_dicom(values, folder, tmp_path / "out")
    assert '"NO PADDING"' in str(error.value)
    assert not (tmp_path / "out").exists() and temporaries(tmp_path) == []


def test_a_value_that_would_be_stored_as_padding_is_refused(make_series, phantom, tmp_path):
    paths = padded_series(make_series, phantom)
    hu = dicomarray.open_series(paths[0].parent).dicom.hu().values
    hu[0, 10, 10] = PAD_STORED - 1024  # a real pixel at the padding's HU
    with pytest.raises(WriteError, match="read back as padding"):
        dicomarray.to_dicom(hu, paths[0].parent, tmp_path / "out")
    assert not (tmp_path / "out").exists() and temporaries(tmp_path) == []


def test_cli_to_npy_in_hu_then_to_dicom_keeps_the_padding(make_series, phantom, tmp_path):
    from dicomarray.cli import main

    paths = padded_series(make_series, phantom)
    npy, out = tmp_path / "hu.npy", tmp_path / "out"
    flags = ["-i", str(paths[0].parent), "-n", str(npy), "-j", str(npy.with_suffix(".json"))]
    assert main(["to-npy", *flags]) == 0
    assert np.isnan(np.load(npy)[:, :3]).all()
    assert main(["to-dicom", "-n", str(npy), "-d", str(paths[0].parent), "-o", str(out)]) == 0
    for template, path in zip(paths, sorted(out.iterdir()), strict=True):
        np.testing.assert_array_equal(
            pydicom.dcmread(path).pixel_array, pydicom.dcmread(template).pixel_array
        )


# --------------------------------------------------------------------------------------------
# n-D volumes: one instance per frame of the grid, each over its own template frame
# --------------------------------------------------------------------------------------------

#: What tells the volumes of a time series apart: each written frame keeps its template's.
TIME_TAGS = ("TemporalPositionIdentifier", "NumberOfTemporalPositions", "AcquisitionTime")


@pytest.fixture
def time_series(phantom, tmp_path) -> tuple[Path, list[list[Path]]]:
    """Three volumes of the phantom, 2 s apart, volume k holding phantom + 10 k HU."""
    folder = tmp_path / "perfusion"
    return folder, write_time_series(folder, phantom, 3, pixel_spacing=(3.6, 3.6), slice_spacing=12)


def check_written_over(written: list[Path], template: xr.DataArray, expected: np.ndarray) -> None:
    """Each written file holds its expected HU over the template frame at its place in the grid."""
    sources = template["source_file"].transpose("t", "z").values.reshape(-1)
    assert len(written) == len(sources) == len(expected)
    uids = set()
    for number, (path, source, values) in enumerate(
        zip(written, sources, expected, strict=True), start=1
    ):
        ds, original = pydicom.dcmread(path), pydicom.dcmread(source, stop_before_pixels=True)
        assert ds.InstanceNumber == number  # grid order: z fastest
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == original.SOPInstanceUID
        for keyword in TIME_TAGS:
            assert ds[keyword].value == original[keyword].value, keyword
        assert ds.ImagePositionPatient == original.ImagePositionPatient
        np.testing.assert_array_equal(hu_and_position(path)[0], values)
        uids.add(ds.SOPInstanceUID)
        assert ds.SeriesInstanceUID != original.SeriesInstanceUID
    assert len(uids) == len(written)
    assert len({pydicom.dcmread(p).SeriesInstanceUID for p in written}) == 1


def test_a_4d_volume_writes_one_instance_per_frame_over_its_own_template_frame(
    time_series, phantom, tmp_path
):
    folder, volumes = time_series
    template = open_time_series(folder)
    written = dicomarray.to_dicom(lazy_hu(template), template, tmp_path / "out")
    assert [p.name for p in written] == [f"IM_{i:04d}.dcm" for i in range(1, 37)]
    check_written_over(written, template, expected_values(phantom, 3).reshape(36, 64, 64))


SELECTIONS_4D = {
    "t": lambda volume: volume.isel(t=[2, 0]),
    "z": lambda volume: volume.isel(z=slice(3, 7)),
    "t and z": lambda volume: volume.isel(t=[1], z=[9, 4]),
    "transposed": lambda volume: volume.transpose("z", "t", "y", "x"),
}


@pytest.mark.parametrize("how", sorted(SELECTIONS_4D))
def test_a_selection_of_a_4d_volume_writes_only_its_frames(
    time_series, phantom, tmp_path, monkeypatch, how
):
    template = SELECTIONS_4D[how](open_time_series(time_series[0]))
    read = []

    def spy(path, **kwargs):
        read.append(str(path))
        return read_dataset(path, **kwargs)

    monkeypatch.setattr("dicomarray.writers.dicom.read_dataset", spy)
    written = dicomarray.to_dicom(lazy_hu(template), template, tmp_path / "out")
    ordered = template.transpose("t", "z", "y", "x")
    assert set(read) == set(ordered["source_file"].values.reshape(-1))  # its own files only
    every = expected_values(phantom, 3)
    t_index = np.rint(ordered["t"].values / 2.0).astype(int)  # volume k is at 2 k s
    z_index = [
        int(np.argmin(np.abs(open_time_series(time_series[0])["z"].values - z)))
        for z in ordered["z"].values
    ]
    expected = every[np.ix_(t_index, z_index)].reshape(-1, 64, 64)
    check_written_over(written, ordered, expected)


def test_a_4d_volume_of_another_shape_than_its_template_names_the_grid(time_series, tmp_path):
    template = open_time_series(time_series[0])
    with pytest.raises(WriteError, match=r"3 \(t\) x 12 \(z\) frames of 64 x 64"):
        dicomarray.to_dicom(np.zeros((2, 12, 64, 64)), template, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_4d_volume_whose_frames_come_from_other_instances_is_refused(time_series, tmp_path):
    template = open_time_series(time_series[0])
    # the volumes in another order, claiming the template's times and files: only the
    # instance UIDs tell that each frame's values come from another file
    swapped = lazy_hu(template).isel(t=[1, 0, 2])
    swapped = swapped.assign_coords(
        t=template["t"].values, source_file=(("t", "z"), template["source_file"].values)
    )
    with pytest.raises(WriteError, match=r"volume frame 0 is instance .* another series"):
        dicomarray.to_dicom(swapped, template, tmp_path / "out")


@pytest.mark.parametrize("values", ["modality", "stored"])
def test_a_4d_series_round_trips_through_open_series(time_series, phantom, tmp_path, values):
    template = open_time_series(time_series[0])
    volume = lazy_hu(template) if values == "modality" else template  # stored: via its rescale
    dicomarray.to_dicom(volume, template, tmp_path / "out")
    back = open_quietly(tmp_path / "out")
    assert back.dims == template.dims == ("t", "z", "y", "x")
    np.testing.assert_array_equal(lazy_hu(back).values, expected_values(phantom, 3))
    np.testing.assert_allclose(back["t"].values, [0.0, 2.0, 4.0])
    np.testing.assert_allclose(back["z"].values, template["z"].values)
    assert back["t"].attrs["units"] == "s"


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools' dciodvfy not installed")
def test_dciodvfy_finds_no_errors_in_a_frame_of_a_4d_volume(time_series, tmp_path):
    template = open_time_series(time_series[0]).isel(t=[2])
    written = dicomarray.to_dicom(lazy_hu(template) + 0.25, template, tmp_path / "out")
    for path in (written[0], written[-1]):
        report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        assert "Error" not in report.stdout + report.stderr, report.stderr


MULTI_FRAME_TEMPLATES = {
    "every frame": lambda volume: volume,
    "the first frame only": lambda volume: volume.isel(z=[0]),
}


@pytest.mark.parametrize("how", sorted(MULTI_FRAME_TEMPLATES))
def test_a_multi_frame_template_is_refused_naming_its_file(tmp_path, how):
    path = gunzip(XA10_FILES[:1], tmp_path / "enhanced")[0]
    template = MULTI_FRAME_TEMPLATES[how](open_quietly(path))
    assert int(pydicom.dcmread(path, stop_before_pixels=True).NumberOfFrames) > 1
    with pytest.raises(WriteError, match=rf"{path.name}: multi-frame templates are not supported"):
        dicomarray.to_dicom(np.zeros(template.shape), template, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_4d_series_of_an_open_study_tree_is_written_from_its_node(time_series, phantom, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeometryWarning)
        tree = dicomarray.open_study(time_series[0])
    (node,) = [n for n in tree.subtree if "image" in n.data_vars]
    image = node["image"]
    assert image.dims == ("t", "z", "y", "x")
    written = image.dicom.hu().dicom.to_dicom(tmp_path / "out")
    check_written_over(written, image, expected_values(phantom, 3).reshape(36, 64, 64))
