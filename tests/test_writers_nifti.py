"""The NIfTI export: values, sform and qform, checked by nibabel, SimpleITK and dcm2niix."""

from __future__ import annotations

import gzip
import itertools
import json
import shutil
import subprocess
import warnings

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

import dicomarray
from dicomarray import GeometryWarning, WriteError
from dicomarray.writers import nifti_affine, to_nifti

from .conftest import UNEVEN_POSITIONS
from .export_helpers import (
    PATIENT_TAGS,
    SERIES_KINDS,
    head_and_feet_first,
    leaked,
    series_uids,
    sitk_series,
    stacked,
    temporaries,
    two_echo_folder,
)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
TILT = 18.5
#: An oblique orientation, rows along L, columns rotated 20 degrees from P toward S; its
#: normal (row x column), worked out by hand: (0, -sin 20, cos 20).
OBLIQUE = (1.0, 0.0, 0.0, 0.0, np.cos(np.radians(20)), np.sin(np.radians(20)))
OBLIQUE_NORMAL = (0.0, -np.sin(np.radians(20)), np.cos(np.radians(20)))


def corners(shape):
    """Index corners of a volume."""
    return list(itertools.product(*[(0, n - 1) for n in shape]))


def open_quietly(folder, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeometryWarning)
        return dicomarray.open_series(folder, **kwargs)


def write_tilted(volume, path, **kwargs):
    with pytest.warns(GeometryWarning, match="ITK-based readers .* use the qform.*detilt=True"):
        return volume.dicom.to_nifti(path, **kwargs)


def voxels_at(image, ras):
    """The NIfTI indices whose voxel centres lie at the (N, 3) RAS points, within 0.01 mm."""
    ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(image.affine), ras)).astype(int)
    np.testing.assert_allclose(nib.affines.apply_affine(image.affine, ijk), ras, atol=0.01)
    return tuple(ijk.T)


def dicom_plane_corners(path):
    """The stored values and RAS mm of the four corner pixels of a DICOM file, by pydicom."""
    ds = pydicom.dcmread(path)
    row, column = np.reshape(np.asarray(ds.ImageOrientationPatient, float), (2, 3))
    dy, dx = (float(s) for s in ds.PixelSpacing)
    rc = np.array(corners((ds.Rows, ds.Columns)))
    lps = np.asarray(ds.ImagePositionPatient, float) + np.outer(rc[:, 0] * dy, column)
    lps += np.outer(rc[:, 1] * dx, row)
    return ds.pixel_array[rc[:, 0], rc[:, 1]], lps * [-1, -1, 1]


@pytest.mark.parametrize("kind", ["axial", "sagittal", "per-slice-rescale"])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nibabel_reads_our_values_and_affine_as_stored(make_series, tmp_path, kind, suffix):
    volume = open_quietly(make_series(**SERIES_KINDS[kind])[0].parent, chunks=5)
    path = volume.dicom.to_nifti(tmp_path / f"ct{suffix}", orientation=None)
    image = nib.load(path)
    assert image.shape == (64, 64, 12)  # (i, j, k) = (x, y, z)
    np.testing.assert_array_equal(np.asarray(image.dataobj).transpose(2, 1, 0), volume.values)
    assert image.get_data_dtype() == volume.dtype
    ours = volume.dicom.affine
    for z, y, x in corners(volume.shape):
        ras = image.affine @ [x, y, z, 1]
        np.testing.assert_allclose(ras, LPS_TO_RAS @ ours @ [z, y, x, 1], atol=1e-4)
    np.testing.assert_allclose(image.header.get_zooms(), (3.6, 3.6, 12.0), rtol=1e-6)
    assert image.header["sform_code"] == 1 and image.header["qform_code"] == 1
    np.testing.assert_allclose(image.header.get_qform(), image.header.get_sform(), atol=1e-4)
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize("orientation", [None, "RAS", "LPS"])
@pytest.mark.parametrize("kind", ["axial", "sagittal"])
def test_simpleitk_finds_the_dicom_series_voxel_at_each_nifti_voxel(
    make_series, tmp_path, kind, orientation
):
    folder = make_series(**SERIES_KINDS[kind])[0].parent
    hu = dicomarray.open_series(folder).dicom.hu()  # SimpleITK reads modality values
    reference = sitk_series(folder)
    image = sitk.ReadImage(str(hu.dicom.to_nifti(tmp_path / "ct.nii", orientation=orientation)))
    ours, theirs = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(reference)
    for index in corners(image.GetSize()):
        point = image.TransformIndexToPhysicalPoint(index)
        found = reference.TransformPhysicalPointToIndex(point)
        np.testing.assert_allclose(reference.TransformIndexToPhysicalPoint(found), point, atol=1e-3)
        assert ours[index[::-1]] == theirs[found[::-1]]
    np.testing.assert_allclose(sorted(image.GetSpacing()), sorted(reference.GetSpacing()), 1e-5)
    if orientation is None:  # as stored: the same grid as the DICOM series
        np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)


@pytest.mark.parametrize(
    ("orientation", "normal"), [((1, 0, 0, 0, 1, 0), (0, 0, 1)), (OBLIQUE, OBLIQUE_NORMAL)]
)
def test_simpleitk_reads_the_dicom_directions_of_a_tilted_stack(
    make_series, tmp_path, orientation, normal
):
    paths = make_series(tilt_degrees=TILT, orientation=orientation)
    volume = open_quietly(paths[0].parent)
    image = sitk.ReadImage(str(write_tilted(volume, tmp_path / "ct.nii", orientation=None)))
    row, column = np.reshape(orientation, (2, 3))
    directions = np.stack([row, column, normal], axis=1)  # ITK: one column per (i, j, k)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), directions, atol=1e-3)
    reference = sitk_series(paths[0].parent)  # SimpleITK's reading of the DICOM files
    np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-3)
    first = pydicom.dcmread(paths[0]).ImagePositionPatient
    np.testing.assert_allclose(image.GetOrigin(), first, atol=0.01)
    # the planes are 12 mm apart along the tilted step: 12 cos(tilt) along the normal
    plane_spacing = 12.0 * np.cos(np.radians(TILT))
    np.testing.assert_allclose(image.GetSpacing(), (3.6, 3.6, plane_spacing), rtol=1e-5)


@pytest.mark.parametrize("orientation", [None, "RAS"])
def test_nibabel_finds_every_dicom_pixel_of_a_tilted_stack_through_the_sform(
    make_series, tmp_path, orientation
):
    paths = make_series(tilt_degrees=TILT, orientation=OBLIQUE)
    volume = open_quietly(paths[0].parent)
    image = nib.load(write_tilted(volume, tmp_path / "ct.nii", orientation=orientation))
    assert image.header["sform_code"] == 1
    values = np.asarray(image.dataobj)
    for path in paths:
        expected, ras = dicom_plane_corners(path)
        np.testing.assert_array_equal(values[voxels_at(image, ras)], expected)
    sform = image.header.get_sform()
    assert not np.allclose(sform, image.header.get_qform(), atol=0.5)  # only the sform shears
    written = volume if orientation is None else volume.dicom.reorient(orientation)
    np.testing.assert_allclose(sform, nifti_affine(written.dicom.affine), atol=1e-4)


@pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix is not installed")
def test_every_voxel_lies_where_dcm2niix_puts_it_with_the_same_value(make_series, tmp_path):
    # axial, as the tilted CTs dcm2niix is built for: for an oblique tilted stack its slice
    # step (v1.0.20220720) misses the DICOM positions by mm, where ours meets them (above)
    folder = make_series(tilt_degrees=TILT)[0].parent
    ours = nib.load(write_tilted(open_quietly(folder), tmp_path / "ours.nii"))
    out = tmp_path / "dcm2niix"
    out.mkdir()
    command = ["dcm2niix", "-z", "n", "-f", "out", "-o", str(out), str(folder)]
    subprocess.run(command, check=True, capture_output=True)
    theirs = nib.load(out / "out.nii")  # the uncorrected stack (out_Tilt_1.nii is resampled)
    assert theirs.shape == ours.shape
    ijk = np.indices(ours.shape).reshape(3, -1).T
    found = voxels_at(theirs, nib.affines.apply_affine(ours.affine, ijk))
    np.testing.assert_array_equal(
        theirs.dataobj.get_unscaled()[found], np.asarray(ours.dataobj)[tuple(ijk.T)]
    )
    assert nib.aff2axcodes(ours.affine) == ("R", "A", "S")


def test_head_first_and_feet_first_series_come_out_alike_in_ras(make_series, phantom, tmp_path):
    images = []
    for folder in head_and_feet_first(make_series, phantom):
        volume = dicomarray.open_series(folder)
        images.append(nib.load(volume.dicom.to_nifti(tmp_path / f"{folder.name}.nii")))
    assert [nib.aff2axcodes(image.affine) for image in images] == [("R", "A", "S")] * 2
    np.testing.assert_allclose(images[0].affine, images[1].affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(images[0].dataobj), np.asarray(images[1].dataobj))


@pytest.mark.parametrize("kind", ["axial", "sagittal"])
def test_ras_is_what_nibabel_makes_canonical(make_series, tmp_path, kind):
    volume = dicomarray.open_series(make_series(**SERIES_KINDS[kind])[0].parent)
    stored = nib.load(volume.dicom.to_nifti(tmp_path / "stored.nii", orientation=None))
    ras = nib.load(volume.dicom.to_nifti(tmp_path / "ras.nii"))
    canonical = nib.as_closest_canonical(stored)
    np.testing.assert_allclose(ras.affine, canonical.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(ras.dataobj), np.asarray(canonical.dataobj))


def test_any_dim_order_is_written_with_its_last_dim_fastest(make_series, tmp_path):
    volume = dicomarray.open_series(make_series(**SERIES_KINDS["sagittal"])[0].parent)
    turned = volume.transpose("y", "x", "z")
    image = nib.load(turned.dicom.to_nifti(tmp_path / "ct.nii", orientation=None))
    assert image.shape == (12, 64, 64)  # (i, j, k) = (z, x, y)
    np.testing.assert_array_equal(np.asarray(image.dataobj).transpose(2, 1, 0), turned.values)
    for y, x, z in corners(turned.shape):
        ras = image.affine @ [z, x, y, 1]
        np.testing.assert_allclose(ras, LPS_TO_RAS @ volume.dicom.affine @ [z, y, x, 1], atol=1e-4)


def test_an_uneven_stack_is_refused_naming_the_series_and_its_steps(make_series, tmp_path):
    hu = np.zeros((len(UNEVEN_POSITIONS), 8, 8))
    paths = make_series(
        hu=hu, positions=UNEVEN_POSITIONS, origin=(0, 0, 0), tags={"SeriesDescription": "GE"}
    )
    volume = open_quietly(paths[0].parent)
    out = tmp_path / "out"
    steps = r"two blocks: 14 slices at 4 mm, then 14 at 7 mm after slice 13 \(z = 52 mm\)"
    with pytest.raises(WriteError, match=rf'NIfTI holds one slice step.*"GE".*{steps}'):
        to_nifti(volume, out / "ct.nii", json_path=out / "ct.json")
    assert not out.exists()


def test_equalize_writes_an_uneven_stack_on_its_finest_step(make_series, tmp_path):
    # HU = the slice's S position in mm: linear interpolation gives every new slice its own S
    hu = np.broadcast_to(np.array(UNEVEN_POSITIONS)[:, None, None], (28, 8, 8))
    paths = make_series(hu=hu, positions=UNEVEN_POSITIONS, origin=(0, 0, 0))
    volume = open_quietly(paths[0].parent)
    path = volume.dicom.to_nifti(tmp_path / "ct.nii", equalize=True, json_path=tmp_path / "c.json")
    image = nib.load(path)
    assert image.header.get_zooms()[2] == pytest.approx(4.0)
    ijk = np.indices(image.shape).reshape(3, -1).T
    s = nib.affines.apply_affine(image.affine, ijk)[:, 2]
    assert s.min() == pytest.approx(0.0) and s.max() == pytest.approx(150.0, abs=4.0)
    stored = np.asarray(image.dataobj)[tuple(ijk.T)]
    np.testing.assert_allclose(stored - 1024, s, atol=1e-3)  # intercept -1024
    assert json.loads((tmp_path / "c.json").read_text())["geometry"]["spacing"][0] == 4.0


def test_detilt_writes_one_grid_that_every_reader_places_alike(make_series, tmp_path):
    probe = make_series(hu=np.zeros((12, 64, 64)), tilt_degrees=TILT)
    first_rows = [pydicom.dcmread(p).ImagePositionPatient[1] for p in probe]  # P of row 0
    # HU = the pixel's P position in mm, so any in-plane shift shows in the values
    hu = np.array(first_rows)[:, None, None] + 3.6 * np.arange(64)[None, :, None]
    paths = make_series(hu=np.broadcast_to(hu, (12, 64, 64)), tilt_degrees=TILT)
    volume = open_quietly(paths[0].parent)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeometryWarning)  # no shear left to warn of
        path = volume.dicom.to_nifti(tmp_path / "ct.nii", detilt=True)
    image = nib.load(path)
    np.testing.assert_allclose(image.header.get_qform(), image.header.get_sform(), atol=1e-4)
    values = np.asarray(image.dataobj) - 1024.0  # stored values, intercept -1024
    # the grid grows by the shear (NaN outside the field); leave out the field's edge rows,
    # where a sample lies up to half a pixel beyond the last source row
    finite = np.isfinite(values)
    inside = finite & np.roll(finite, 1, axis=1) & np.roll(finite, -1, axis=1)
    ijk = np.argwhere(inside)
    assert len(ijk) >= 12 * 64 * 60  # of the 64 rows of each slice, all but the edges
    ras = nib.affines.apply_affine(image.affine, ijk)
    np.testing.assert_allclose(values[tuple(ijk.T)], -ras[:, 1], atol=0.51)  # P = -A
    # each slice stays on its DICOM plane (S of the axial planes)
    planes = sorted(float(pydicom.dcmread(p).ImagePositionPatient[2]) for p in paths)
    s = [float((image.affine @ [0, 0, k, 1])[2]) for k in range(image.shape[2])]
    np.testing.assert_allclose(s, planes, atol=0.01)
    itk = sitk.ReadImage(str(path))
    np.testing.assert_allclose(itk.GetOrigin(), LPS_TO_RAS[:3, :3] @ image.affine[:3, 3], 1e-4)


def test_a_gap_is_refused_too(make_series, tmp_path):
    volume = open_quietly(make_series(**SERIES_KINDS["gap"])[0].parent)
    with pytest.raises(
        WriteError,
        match="three blocks: 6 slices at 12 mm, then 1 at 24 mm.*; equalize=True writes it",
    ):
        volume.dicom.to_nifti(tmp_path / "ct.nii")


def test_steps_regular_within_the_tolerance_warn_of_the_slice_they_misplace(make_series, tmp_path):
    positions = [12.0 * i for i in range(12)]
    positions[4] += 0.3  # within 5 % of the step: one step, but slice 4 is 0.3 mm off it
    volume = open_quietly(make_series(positions=positions)[0].parent)
    with pytest.warns(
        GeometryWarning, match=r"slice 4 \(as written\) lies 0\.3 mm from its own position"
    ):
        image = nib.load(volume.dicom.to_nifti(tmp_path / "ct.nii", orientation=None))
    np.testing.assert_allclose(image.header.get_zooms()[2], 12.0, rtol=1e-6)


def test_sidecar_beside_the_nifti_describes_the_array_written(make_series, tmp_path):
    paths = make_series(tags=PATIENT_TAGS)
    volume = dicomarray.open_series(paths[0].parent)
    out = tmp_path / "out"
    volume.dicom.to_nifti(out / "ct.nii.gz", json_path=out / "ct.json", deidentify=True)
    meta = json.loads((out / "ct.json").read_text())
    assert meta["Manufacturer"] == "DICOMARRAY" and "PatientName" not in meta
    assert leaked(out, series_uids(paths)) == []
    assert meta["geometry"]["axis_codes"] == "SAR"  # slowest first: the RAS array
    assert meta["array"]["attrs"]["dicomarray_orientation"] == {
        "code": "RAS",
        "source_code": "LPS",
        "dims": ["z", "y", "x"],
    }


def test_wrong_dims_names_and_existing_files_are_refused(make_series, tmp_path):
    volume = dicomarray.open_series(make_series()[0].parent)
    out = tmp_path / "out"
    for wrong in (volume.isel(z=0), volume.isel(x=0).expand_dims("time")):
        with pytest.raises(WriteError, match="three dims z, y and x"):
            wrong.dicom.to_nifti(out / "ct.nii")
    with pytest.raises(WriteError, match=".nii"):
        volume.dicom.to_nifti(out / "ct.img")
    volume.dicom.to_nifti(out / "ct.nii")
    with pytest.raises(WriteError, match="already exists"):
        volume.dicom.to_nifti(out / "ct.nii")
    assert sorted(p.name for p in out.iterdir()) == ["ct.nii"]


def test_an_orientation_that_is_no_code_is_refused_naming_the_series(make_series, tmp_path):
    volume = dicomarray.open_series(make_series()[0].parent)
    with pytest.raises(WriteError, match=r"series 2 .*cannot reorient: orientation code 'RAA'"):
        to_nifti(volume, tmp_path / "out.nii.gz", orientation="RAA")
    assert list(tmp_path.glob("out*")) == []


# --------------------------------------------------------------------------------------------
# n-D volumes: one dim beyond z, y and x is NIfTI's 4th (built as the assembly will build
# them: 3-D volumes concatenated along the contract's dims, with its coords)
# --------------------------------------------------------------------------------------------


def test_a_time_series_is_written_4d_with_its_repetition_time(make_series, tmp_path):
    volume = open_quietly(make_series(tags={"RepetitionTime": "2500"})[0].parent, chunks=5)
    series = stacked(volume, "t", [0.0, 2.5, 5.0])
    image = nib.load(series.dicom.to_nifti(tmp_path / "bold.nii.gz"))
    three_d = nib.load(volume.dicom.to_nifti(tmp_path / "one.nii"))
    assert image.shape == (64, 64, 12, 3) and image.header["dim"][0] == 4
    np.testing.assert_allclose(image.header.get_zooms(), (3.6, 3.6, 12.0, 2.5), rtol=1e-6)
    assert image.header.get_xyzt_units() == ("mm", "sec")
    np.testing.assert_allclose(image.affine, three_d.affine)
    values = np.asarray(image.dataobj)
    for t in range(3):  # each volume is the 3-D export, plus t
        np.testing.assert_array_equal(values[..., t], np.asarray(three_d.dataobj) + t)


def test_without_a_repetition_time_the_time_step_is_the_t_coordinate_step(make_series, tmp_path):
    volume = open_quietly(make_series()[0].parent)
    image = nib.load(stacked(volume, "t", [0.0, 1.5]).dicom.to_nifti(tmp_path / "t.nii"))
    assert image.header.get_zooms()[3] == pytest.approx(1.5)


def test_an_echo_dim_is_the_4th_without_a_time_unit_and_the_sidecar_names_it(make_series, tmp_path):
    volume = open_quietly(make_series(tags={"RepetitionTime": "2500"})[0].parent)
    series = stacked(volume, "echo", [10.0, 20.0], echo_number=[1, 2])
    series["echo"].attrs["units"] = "ms"
    path = series.dicom.to_nifti(tmp_path / "me.nii", json_path=tmp_path / "me.json")
    image = nib.load(path)
    assert image.shape == (64, 64, 12, 2)
    assert image.header.get_zooms()[3] == 1.0
    assert image.header.get_xyzt_units() == ("mm", "unknown")
    array = json.loads((tmp_path / "me.json").read_text())["array"]
    assert array["dims"] == ["echo", "z", "y", "x"]
    assert array["coords"]["echo"] == {
        "dims": ["echo"],
        "values": [10.0, 20.0],
        "attrs": {"units": "ms"},
    }
    assert array["coords"]["echo_number"]["values"] == [1, 2]


def test_equalize_and_detilt_leave_a_regular_nd_series_as_it_is(make_series, tmp_path):
    # batch writes every NIfTI with equalize=True: an n-D series needing neither is written
    volume = open_quietly(make_series()[0].parent)
    series = stacked(volume, "t", [0.0, 1.0])
    path = series.dicom.to_nifti(tmp_path / "t.nii", equalize=True, detilt=True)
    values = np.asarray(nib.load(path).dataobj)
    np.testing.assert_array_equal(values.transpose(3, 2, 1, 0), series.dicom.reorient().values)


def test_an_extra_dim_anywhere_is_written_as_the_4th(make_series, tmp_path):
    volume = open_quietly(make_series()[0].parent)
    series = stacked(volume, "volume", [0, 1]).transpose("z", "volume", "y", "x")
    image = nib.load(series.dicom.to_nifti(tmp_path / "v.nii", orientation=None))
    np.testing.assert_array_equal(
        np.asarray(image.dataobj).transpose(3, 2, 1, 0), series.transpose("volume", ...).values
    )


def test_an_opened_echo_series_is_written_4d(make_series, phantom, tmp_path):
    volume = open_quietly(two_echo_folder(make_series, phantom, tmp_path / "echoes"))
    path = volume.dicom.to_nifti(tmp_path / "me.nii.gz", json_path=tmp_path / "me.json")
    image = nib.load(path)
    assert image.shape == (64, 64, 12, 2) and image.header.get_zooms()[3] == 1.0
    values = np.asarray(image.dataobj)
    np.testing.assert_array_equal(values[..., 1] - values[..., 0], np.full((64, 64, 12), 5))
    coords = json.loads((tmp_path / "me.json").read_text())["array"]["coords"]
    assert coords["echo_time"]["values"] == [10.0, 20.0]
    assert coords["source_file"]["dims"] == ["echo", "z"]


def test_two_extra_dims_are_refused_naming_them_and_the_way_out(make_series, tmp_path):
    volume = open_quietly(make_series()[0].parent)
    series = stacked(stacked(volume, "t", [0.0, 2.0]), "echo", [10.0, 20.0])
    for dims in (("echo", "t"), ("t", "echo")):
        with pytest.raises(
            WriteError, match=rf"series 2 .* has 2: {', '.join(dims)}; .*isel\(echo=0\)"
        ):
            series.transpose(*dims, ...).dicom.to_nifti(tmp_path / "x.nii")
    with pytest.raises(WriteError, match="not a colour channel"):
        volume.expand_dims(channel=3, axis=-1).dicom.to_nifti(tmp_path / "x.nii")
    assert not (tmp_path / "x.nii").exists()
    image = nib.load(series.isel(echo=0).dicom.to_nifti(tmp_path / "e1.nii"))
    assert image.shape == (64, 64, 12, 2)


def test_a_4d_volume_is_stored_chunk_by_chunk(make_series, tmp_path, monkeypatch):
    from dicomarray.writers.common import MemmapTarget

    volume = open_quietly(make_series()[0].parent, chunks=4)
    series = stacked(volume, "t", [0.0, 1.0, 2.0])
    shapes = []
    original = MemmapTarget.__setitem__
    monkeypatch.setattr(
        MemmapTarget,
        "__setitem__",
        lambda self, k, v: (shapes.append(v.shape), original(self, k, v)),
    )
    series.dicom.to_nifti(tmp_path / "t.nii", orientation=None)
    assert sorted(shapes) == [(1, 4, 64, 64)] * 9  # 3 volumes x 3 chunks of 4 slices


def test_a_single_slice_is_one_slice_thickness_thick(make_series, tmp_path):
    volume = open_quietly(make_series(tags={"SpacingBetweenSlices": "7.5"})[0].parent)
    image = nib.load(volume.isel(z=[4]).dicom.to_nifti(tmp_path / "one.nii"))
    assert image.shape == (64, 64, 1)
    np.testing.assert_allclose(image.header.get_zooms(), (3.6, 3.6, 7.5), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(image.affine[:3, 2]), 7.5, rtol=1e-6)
    volume.attrs.pop("SpacingBetweenSlices")  # then (0018,0050) Slice Thickness: 12 mm
    image = nib.load(volume.isel(z=[4]).dicom.to_nifti(tmp_path / "thick.nii"))
    np.testing.assert_allclose(image.header.get_zooms()[2], 12.0, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# DWI: .bval and .bvec beside the NIfTI
# --------------------------------------------------------------------------------------------

#: Gradients in patient LPS: none (b = 0), toward L, toward P, toward S, and oblique.
GRADIENTS_LPS = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.6, -0.8, 0]], float)


def dwi(volume):
    return stacked(
        volume,
        "diffusion",
        np.arange(5),
        b_value=[0.0, 1000.0, 1000.0, 1000.0, 2000.0],
        **{f"gradient_{c}": GRADIENTS_LPS[:, i] for i, c in enumerate("lps")},
    )


def test_bval_and_bvec_are_written_in_fsl_voxel_axes(make_series, tmp_path):
    volume = open_quietly(make_series(tags={"RepetitionTime": "4000"})[0].parent)
    path = dwi(volume).dicom.to_nifti(tmp_path / "dwi.nii.gz")
    assert (tmp_path / "dwi.bval").read_text() == "0 1000 1000 1000 2000\n"
    # worked by hand: the RAS image's i runs toward R, j toward A, k toward S; its
    # determinant is positive, so FSL's i is negated: L -> +i, P -> -j, S -> +k
    assert (tmp_path / "dwi.bvec").read_text() == ("0 1 0 0 0.6\n0 0 -1 0 0.8\n0 0 0 1 0\n")
    image = nib.load(path)
    assert image.header.get_zooms()[3] == pytest.approx(4.0)  # TR, as dcm2niix
    assert image.header.get_xyzt_units() == ("mm", "sec")


def test_bvec_follows_the_voxel_axes_of_any_orientation(make_series, tmp_path):
    """Through the image's own axes (FSL's rule undone) each bvec is its LPS gradient."""
    volume = open_quietly(make_series(**SERIES_KINDS["sagittal"])[0].parent)
    for code in ("RAS", "LPS", "PIR", None):
        path = dwi(volume).dicom.to_nifti(tmp_path / f"{code}.nii", orientation=code)
        rotation = nib.load(path).affine[:3, :3]
        rotation = rotation / np.linalg.norm(rotation, axis=0)
        bvec = np.loadtxt(tmp_path / f"{code}.bvec").T
        if np.linalg.det(rotation) > 0:
            bvec[:, 0] *= -1
        np.testing.assert_allclose((rotation @ bvec.T).T * [-1, -1, 1], GRADIENTS_LPS, atol=1e-6)


def test_no_bval_without_b_values(make_series, tmp_path):
    volume = open_quietly(make_series()[0].parent)
    stacked(volume, "diffusion", [0, 1]).dicom.to_nifti(tmp_path / "out" / "d.nii")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["d.nii"]


def test_an_existing_bval_is_not_replaced_nor_the_nifti_written(make_series, tmp_path):
    volume = open_quietly(make_series()[0].parent)
    out = tmp_path / "out"
    out.mkdir()
    (out / "dwi.bval").write_text("mine\n")
    with pytest.raises(WriteError, match="already exists"):
        dwi(volume).dicom.to_nifti(out / "dwi.nii")
    assert sorted(p.name for p in out.iterdir()) == ["dwi.bval"]
    assert (out / "dwi.bval").read_text() == "mine\n"


# --------------------------------------------------------------------------------------------
# The BIDS fields of the sidecar beside a NIfTI
# --------------------------------------------------------------------------------------------


def test_the_sidecar_has_bids_fields_in_seconds_and_slice_timing(make_series, tmp_path):
    tags = {
        "RepetitionTime": "2000",
        "EchoTime": "30",
        "FlipAngle": "75",
        "MagneticFieldStrength": "3",
        "ManufacturerModelName": "Phantom 1",
    }
    paths = make_series(tags=tags)
    volume = open_quietly(paths[0].parent)
    series = stacked(volume, "t", [0.0, 2.0])
    series.dicom.to_nifti(tmp_path / "bold.nii", json_path=tmp_path / "bold.json")
    meta = json.loads((tmp_path / "bold.json").read_text())
    assert (meta["RepetitionTime"], meta["EchoTime"], meta["FlipAngle"]) == (2.0, 0.03, 75.0)
    assert meta["MagneticFieldStrength"] == 3.0 and meta["ManufacturersModelName"] == "Phantom 1"
    assert meta["dicomarray"]["units"] == "BIDS"
    # by pydicom: each file's acquisition time, in the order of the RAS slices (k toward S)
    headers = sorted(
        (pydicom.dcmread(p, stop_before_pixels=True) for p in paths),
        key=lambda ds: float(ds.ImagePositionPatient[2]),
    )
    seconds = [
        int(t[:2]) * 3600 + int(t[2:4]) * 60 + float(t[4:])
        for t in (str(ds.AcquisitionTime) for ds in headers)
    ]
    np.testing.assert_allclose(meta["SliceTiming"], np.subtract(seconds, min(seconds)), atol=1e-6)
    assert meta["array"]["coords"]["t"]["values"] == [0.0, 2.0]


def slice_timing_by_height(image, timing):
    """{S mm of slice k: its SliceTiming}, through the image's affine (readers' k differ)."""
    heights = [nib.affines.apply_affine(image.affine, [0, 0, k])[2] for k in range(len(timing))]
    return {round(float(h), 3): t for h, t in zip(heights, timing, strict=True)}


@pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix is not installed")
def test_slice_timing_is_what_dcm2niix_finds_in_the_acquisition_times(make_series, tmp_path):
    tags = {"Modality": "MR", "Manufacturer": "SIEMENS", "RepetitionTime": "3000"}
    tags.update(EchoTime="30", FlipAngle="90", MagneticFieldStrength="3")
    paths = make_series(tags=tags)
    # interleaved, odd slices first (by height): 0, 2, 4 ... then 1, 3, 5 ... 0.25 s apart
    by_height = sorted(paths, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    order = [*range(0, 12, 2), *range(1, 12, 2)]
    for rank, index in enumerate(order):
        ds = pydicom.dcmread(by_height[index])
        ds.AcquisitionTime = f"1200{10 + 0.25 * rank:09.6f}"
        ds.save_as(by_height[index])
    volume = open_quietly(paths[0].parent)
    ours = volume.dicom.to_nifti(tmp_path / "ours.nii", json_path=tmp_path / "ours.json")
    out = tmp_path / "dcm2niix"
    out.mkdir()
    command = ["dcm2niix", "-z", "n", "-b", "y", "-ba", "n", "-f", "out", "-o", str(out)]
    subprocess.run([*command, str(paths[0].parent)], check=True, capture_output=True)
    theirs = json.loads((out / "out.json").read_text())
    mine = json.loads((tmp_path / "ours.json").read_text())
    assert sorted(theirs["SliceTiming"]) == [0.25 * r for r in range(12)]
    assert slice_timing_by_height(nib.load(ours), mine["SliceTiming"]) == slice_timing_by_height(
        nib.load(out / "out.nii"), theirs["SliceTiming"]
    )
    # (Manufacturer is the DICOM text; dcm2niix writes its own spelling, "Siemens")
    for field in ("RepetitionTime", "EchoTime", "FlipAngle", "MagneticFieldStrength", "Modality"):
        assert mine[field] == theirs[field], field


# --------------------------------------------------------------------------------------------
# Real 4-D series against dcm2niix (skipped without ../shared/realdata)
# --------------------------------------------------------------------------------------------


def realdata_series(tmp_path_factory, relative, pattern="*"):
    """A gunzipped copy of one real series, and dcm2niix's NIfTI and sidecars of it."""
    from benchmarks import compare_dcm2niix as cmp

    root = cmp.default_realdata()
    if root is None or not (root / relative).is_dir():
        pytest.skip(f"no {relative} in the realdata folder")
    if shutil.which("dcm2niix") is None:
        pytest.skip("dcm2niix is not installed")
    work = tmp_path_factory.mktemp("series")
    source = work / "in"
    source.mkdir()
    for path in sorted((root / relative).glob(pattern)):
        if path.name.endswith(".gz"):
            with gzip.open(path) as zipped:
                (source / path.name.removesuffix(".gz")).write_bytes(zipped.read())
        elif path.suffix == ".dcm":
            shutil.copy(path, source)
    out = work / "dcm2niix"
    out.mkdir()
    command = ["dcm2niix", "-z", "n", "-b", "y", "-ba", "n", "-f", "ref", "-o", str(out)]
    subprocess.run([*command, str(source)], check=True, capture_output=True)
    return source, out


def open_nd(folder, dim, coords_of):
    """The series opened n-D; while the assembly names its extra dim only ``volume``
    (acquisition order), renamed ``dim`` with the coords ``coords_of(first headers)``
    read by pydicom from the first file of each volume: the writer's test either way."""
    volume = open_quietly(folder)
    extra = [d for d in volume.dims if d not in ("z", "y", "x")]
    assert len(extra) == 1, volume.dims
    if extra == [dim]:
        return volume
    headers = [
        pydicom.dcmread(path, stop_before_pixels=True)
        for path in volume["source_file"].isel(z=0).values
    ]
    return volume.rename({extra[0]: dim}).assign_coords(
        {name: (dim, values) for name, values in coords_of(headers).items()}
    )


def diffusion_coords(headers):
    gradients = np.array([[float(g) for g in ds.DiffusionGradientOrientation] for ds in headers])
    coords = {f"gradient_{c}": gradients[:, i] for i, c in enumerate("lps")}
    return {"b_value": [float(ds.DiffusionBValue) for ds in headers], **coords}


def time_coords(headers):
    return {"t": [float(headers[0].RepetitionTime) / 1000 * i for i in range(len(headers))]}


@pytest.fixture(scope="module")
def philips_dti(tmp_path_factory):
    return realdata_series(tmp_path_factory, "dcm_qa_philips_enh/In/cl", "2201_*.dcm.gz")


def test_a_real_dwi_gets_dcm2niix_bval_and_bvec(philips_dti, tmp_path):
    source, reference = philips_dti
    volume = open_nd(source, "diffusion", diffusion_coords)
    theirs = nib.load(reference / "ref.nii")
    for code in ("RAS", "".join(nib.aff2axcodes(theirs.affine))):  # ours, and dcm2niix's
        json_path = tmp_path / f"{code}.json"
        path = volume.dicom.to_nifti(
            tmp_path / f"{code}.nii", orientation=code, json_path=json_path
        )
        ours = nib.load(path)
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours.header.get_zooms(), theirs.header.get_zooms(), rtol=1e-5)
        assert (tmp_path / f"{code}.bval").read_text() == (reference / "ref.bval").read_text()
        world = {}
        for name, image, bvec in (
            ("ours", ours, tmp_path / f"{code}.bvec"),
            ("theirs", theirs, reference / "ref.bvec"),
        ):
            rotation = image.affine[:3, :3] / np.linalg.norm(image.affine[:3, :3], axis=0)
            vectors = np.loadtxt(bvec).T
            if np.linalg.det(rotation) > 0:
                vectors[:, 0] *= -1
            world[name] = vectors @ rotation.T
        np.testing.assert_allclose(world["ours"], world["theirs"], atol=1e-4)
    # in dcm2niix's own orientation, the very numbers it writes
    np.testing.assert_allclose(
        np.loadtxt(tmp_path / f"{code}.bvec"), np.loadtxt(reference / "ref.bvec"), atol=1e-5
    )
    mine, ref = (
        json.loads(p.read_text()) for p in (tmp_path / f"{code}.json", reference / "ref.json")
    )
    for field in ("RepetitionTime", "EchoTime", "FlipAngle", "MagneticFieldStrength"):
        assert mine[field] == pytest.approx(ref[field], rel=1e-6), field


@pytest.fixture(scope="module")
def ge_fmri(tmp_path_factory):
    return realdata_series(tmp_path_factory, "dcm_qa_nih/In/20180918GE/mr_0004", "*.dcm")


def test_a_real_fmri_series_is_written_as_dcm2niix_writes_it(ge_fmri, tmp_path):
    source, reference = ge_fmri
    volume = open_nd(source, "t", time_coords)
    ours = nib.load(volume.dicom.to_nifti(tmp_path / "bold.nii", json_path=tmp_path / "b.json"))
    theirs = nib.load(next(reference.glob("*.nii")))
    assert ours.shape == theirs.shape == (64, 64, 15, 10)
    np.testing.assert_allclose(ours.header.get_zooms(), theirs.header.get_zooms(), rtol=1e-5)
    assert ours.header.get_xyzt_units() == theirs.header.get_xyzt_units() == ("mm", "sec")
    mine = json.loads((tmp_path / "b.json").read_text())
    ref = json.loads(next(reference.glob("*.json")).read_text())
    for field in ("RepetitionTime", "EchoTime", "FlipAngle", "MagneticFieldStrength"):
        assert mine[field] == pytest.approx(ref[field], rel=1e-6), field
    # GE stores one acquisition time per volume: dcm2niix's SliceTiming comes from GE's
    # private tags, which we do not read; ours is left out rather than guessed
    assert "SliceTiming" not in mine and len(ref["SliceTiming"]) == 15
