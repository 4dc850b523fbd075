"""Pure geometry: normals, projections, spacing checks, tilt and affines on known values."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest

import dicomarray
from dicomarray.errors import DicomArrayError, GeometryWarning
from dicomarray.geometry import (
    DEFAULT_ORIENTATION,
    DEFAULT_PIXEL_SPACING,
    POSITION_COORDS,
    VolumeGeometry,
    describe_steps,
    orientation_of,
    pixel_spacing_of,
    positions_along_normal,
    regular_step,
    slice_normal,
    step_runs,
    tilt_degrees,
)
from dicomarray.sample import write_series


@pytest.mark.parametrize(
    ("orientation", "normal"),
    [
        ((1, 0, 0, 0, 1, 0), (0, 0, 1)),  # axial
        ((1, 0, 0, 0, 0, -1), (0, 1, 0)),  # coronal
        ((0, 1, 0, 0, 0, -1), (-1, 0, 0)),  # sagittal
    ],
)
def test_slice_normal_is_row_cross_column(orientation, normal):
    np.testing.assert_allclose(slice_normal(orientation), normal, atol=1e-12)


def test_parallel_cosines_are_refused():
    with pytest.raises(ValueError, match="parallel"):
        slice_normal((1, 0, 0, 1, 0, 0))


def test_positions_project_onto_the_normal():
    positions = np.array([[0, 0, 10], [5, 5, 12.5], [1, -1, 15]])
    np.testing.assert_allclose(positions_along_normal(positions, [0, 0, 1]), [10, 12.5, 15])


def test_a_gap_makes_the_steps_irregular_and_is_described_as_a_run():
    assert regular_step([0, 2, 4, 6, 10, 12]) is None
    assert step_runs([0, 2, 4, 6, 10, 12]) == [(3, 2.0), (1, 4.0), (1, 2.0)]
    assert describe_steps([0, 2, 4, 6, 10, 12]) == (
        "three blocks: 4 slices at 2 mm, then 1 at 4 mm after slice 3 (z = 6 mm), "
        "then 1 at 2 mm after slice 4 (z = 10 mm)"
    )
    assert regular_step([0, 2, 4, 6]) == 2.0
    assert regular_step([0, 2.05, 4.0], rtol=0.05) == 2.0
    assert regular_step([6, 4, 2]) == -2.0
    assert regular_step([0, 2, 1]) is None  # steps change sign
    assert regular_step([3.0]) is None


def test_tilt_angle_of_a_sheared_stack():
    angle = np.radians(20)
    steps = np.arange(5)[:, None] * np.array([0, np.sin(angle), np.cos(angle)]) * 3
    assert tilt_degrees(steps, np.array([0, 0, 1.0])) == pytest.approx(20)
    assert tilt_degrees(steps[:1], np.array([0, 0, 1.0])) == 0.0


def test_affine_columns_follow_dims_z_y_x():
    geometry = VolumeGeometry(
        dims=("z", "y", "x"),
        shape=(2, 4, 4),
        orientation=np.array([1, 0, 0, 0, 1, 0.0]),
        slice_positions=np.array([[-100, -120, 30], [-100, -120, 32.5]]),
        row_step=0.8,
        column_step=0.5,
        positions_known=True,
        fallback_step=None,
    )
    affine = geometry.affine()
    # index (z=1, y=2, x=3): second slice, row 2 down the column cosine, column 3 along the row
    np.testing.assert_allclose(affine @ [1, 2, 3, 1], [-100 + 3 * 0.5, -120 + 2 * 0.8, 32.5, 1])


# -- geometry tags read from attrs ----------------------------------------------------------


def test_orientation_and_spacing_of_attrs_are_checked_numbers():
    attrs = {"ImageOrientationPatient": ["1", 0, 0, 0, 0.6, -0.8], "PixelSpacing": [0.5, "0.7"]}
    np.testing.assert_array_equal(orientation_of(attrs), [1, 0, 0, 0, 0.6, -0.8])
    assert pixel_spacing_of(attrs) == (0.5, 0.7)
    # missing tags: axial, 1 mm
    np.testing.assert_array_equal(orientation_of({}), DEFAULT_ORIENTATION)
    assert pixel_spacing_of({}) == DEFAULT_PIXEL_SPACING


@pytest.mark.parametrize(
    ("keyword", "value", "message"),
    [
        ("ImageOrientationPatient", [1.0], "must be 6 finite numbers"),
        ("ImageOrientationPatient", 1.0, "must be 6 finite numbers"),
        ("ImageOrientationPatient", [1, 0, 0, 0, 1, "x"], "must be 6 finite numbers"),
        ("ImageOrientationPatient", [1, 0, 0, 0, 1, float("nan")], "must be 6 finite numbers"),
        ("ImageOrientationPatient", [1, 0, 0, 1, 0, 0], "parallel"),
        ("PixelSpacing", [0.5], "must be 2 finite numbers"),
        ("PixelSpacing", "0.5", "must be 2 finite numbers"),
        ("PixelSpacing", [0.5, 0.0], "greater than 0"),
        ("PixelSpacing", [0.5, float("inf")], "must be 2 finite numbers"),
    ],
)
def test_malformed_geometry_tags_raise_a_dicomarray_error(keyword, value, message):
    read = orientation_of if keyword == "ImageOrientationPatient" else pixel_spacing_of
    with pytest.raises(DicomArrayError, match=message):
        read({keyword: value})


# -- VolumeGeometry: one owner, built from a DataArray's coords and attrs ------------------


def _true_world(volume, k, j, i):
    """LPS mm of voxel (k, j, i) of a (z, y, x) volume from the DICOM tags alone."""
    ps_row, ps_col = volume.attrs["PixelSpacing"]
    cos = np.asarray(volume.attrs["ImageOrientationPatient"], dtype=float)
    ipp = np.array([float(volume[n][k]) for n in POSITION_COORDS])
    return ipp + cos[3:] * ps_row * j + cos[:3] * ps_col * i


def test_uneven_ge_like_stack_reports_no_single_spacing_anywhere(tmp_path):
    hu = np.zeros((28, 16, 16), dtype=np.int16)
    positions = [4.0 * k for k in range(14)] + [52.0 + 7.0 * k for k in range(1, 15)]
    write_series(tmp_path, hu, pixel_spacing=(0.5, 0.5), positions=positions)
    with pytest.warns(GeometryWarning, match="two blocks: 14 slices at 4 mm, then 14 at 7 mm"):
        volume = dicomarray.open_series(tmp_path)
    report = volume.attrs["dicomarray_assembly"]
    assert report["slice_spacing"] is None
    assert report["slice_steps"] == [{"steps": 13, "mm": 4.0}, {"steps": 14, "mm": 7.0}]
    geometry = volume.dicom.geometry
    assert geometry.spacing == {"z": None, "y": 0.5, "x": 0.5}
    assert not geometry.is_regular
    with pytest.raises(DicomArrayError, match="no single voxel volume"):
        geometry.voxel_volume()
    # each half on its own is regular, with its own spacing
    assert volume.isel(z=slice(0, 14)).dicom.geometry.spacing["z"] == pytest.approx(4.0)
    assert volume.isel(z=slice(14, None)).dicom.geometry.spacing["z"] == pytest.approx(7.0)
    # world positions of every slice are the true ones, whatever the affine says
    world = geometry.world(np.array([[k, 3, 5] for k in range(28)]))
    expected = np.array([_true_world(volume, k, 3, 5) for k in range(28)])
    np.testing.assert_allclose(world, expected, atol=1e-6)


@pytest.mark.parametrize(
    "select",
    [
        lambda v: v,
        lambda v: v.isel(z=slice(None, None, -1)),
        lambda v: v.isel(y=slice(None, None, -1), x=slice(3, None, 2)),
        lambda v: v.isel(z=[5, 2, 9], y=slice(10, 20)),
        lambda v: v.transpose("x", "z", "y"),
        lambda v: v.sortby("z", ascending=False).transpose("y", "x", "z"),
    ],
    ids=["as-opened", "z-flipped", "y-flipped-x-strided", "z-picked", "transposed", "sorted"],
)
@pytest.mark.parametrize("tilt", [0.0, 15.0])
def test_affine_maps_every_selection_to_the_dicom_positions(make_series, select, tilt):
    folder = make_series(tilt_degrees=tilt, orientation=(1, 0, 0, 0, 0.8, -0.6))[0].parent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeometryWarning)
        source = dicomarray.open_series(folder)
    chosen = select(source)
    affine = chosen.dicom.affine
    # a voxel of the selection, traced back to its source indices through the coords
    for index in [(0, 0, 0), (1, 2, 3), tuple(n - 1 for n in chosen.shape)]:
        where = dict(zip(chosen.dims, index, strict=True))
        voxel = chosen.isel(where)
        k = int(np.flatnonzero(source.sop_instance_uid.values == voxel.sop_instance_uid.item())[0])
        j = int(np.flatnonzero(np.isclose(source.y.values, voxel.y.item()))[0])
        i = int(np.flatnonzero(np.isclose(source.x.values, voxel.x.item()))[0])
        expected = _true_world(source, k, j, i)
        np.testing.assert_allclose(
            chosen.dicom.geometry.world(np.array(index)), expected, atol=1e-6
        )
        if chosen.dicom.geometry.is_regular:  # slices 5, 2, 9 have no one step
            np.testing.assert_allclose((affine @ [*index, 1])[:3], expected, atol=1e-6)


def test_directions_codes_and_superior_follow_flips(make_series):
    source = dicomarray.open_series(make_series()[0].parent)
    geometry = source.dicom.geometry
    assert geometry.axis_codes() == ("S", "P", "L")  # LPS letters, (z, y, x)
    assert geometry.superior_is_ascending("z")
    flipped = source.isel(z=slice(None, None, -1), x=slice(None, None, -1)).dicom.geometry
    assert flipped.axis_codes() == ("I", "P", "R")
    assert not flipped.superior_is_ascending("z")
    np.testing.assert_allclose(flipped.rotation() @ flipped.rotation().T, np.eye(3), atol=1e-12)
    assert source.transpose("x", "y", "z").dicom.geometry.axis_codes() == ("L", "P", "S")


def test_tilted_stack_rotation_is_the_dicom_directions_and_the_affine_keeps_the_shear(make_series):
    folder = make_series(tilt_degrees=15.0)[0].parent
    with pytest.warns(GeometryWarning, match="gantry tilt"):
        volume = dicomarray.open_series(folder)
    geometry = volume.dicom.geometry
    assert geometry.is_sheared and geometry.tilt_degrees == pytest.approx(15.0, abs=1e-3)
    cos = np.asarray(volume.attrs["ImageOrientationPatient"], dtype=float)
    np.testing.assert_allclose(
        geometry.rotation(), np.stack([np.cross(cos[:3], cos[3:]), cos[3:], cos[:3]], 1)
    )
    column = geometry.affine()[:3, 0]
    assert np.degrees(np.arccos(column @ geometry.normal / np.linalg.norm(column))) == (
        pytest.approx(15.0, abs=1e-3)
    )
    assert geometry.spacing["z"] == pytest.approx(12.0 * np.cos(np.radians(15.0)), rel=1e-3)


@pytest.mark.parametrize("tilt", [0.0, 15.0])
def test_rotation_affine_is_the_affine_without_its_shear(make_series, tilt):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeometryWarning)  # the tilt is the point
        volume = dicomarray.open_series(make_series(tilt_degrees=tilt)[0].parent)
    geometry = volume.isel(y=slice(None, None, -1)).transpose("x", "z", "y").dicom.geometry
    rigid, affine = geometry.rotation_affine(), geometry.affine()
    plane_spacing = 12.0 * np.cos(np.radians(tilt))  # along the normal
    np.testing.assert_allclose(np.linalg.norm(rigid[:3, :3], axis=0), [3.6, plane_spacing, 3.6])
    np.testing.assert_allclose(rigid[:3, :3] / [3.6, plane_spacing, 3.6], geometry.rotation())
    np.testing.assert_allclose(rigid[:, 3], affine[:, 3])
    # only the slice column differs, and only when the gantry was tilted
    assert np.allclose(rigid, affine) == (tilt == 0.0)
    np.testing.assert_allclose(rigid[:, [0, 2]], affine[:, [0, 2]])


def test_an_orientation_assumed_for_dropped_attrs_is_known_as_assumed(make_series):
    volume = dicomarray.open_series(make_series(orientation=(0, 1, 0, 0, 0, -1))[0].parent)
    assert VolumeGeometry.of(volume).orientation_known
    bare = volume.copy()
    bare.attrs = {}  # as arithmetic leaves it
    geometry = VolumeGeometry.of(bare)
    assert not geometry.orientation_known
    np.testing.assert_array_equal(geometry.orientation, DEFAULT_ORIENTATION)


def test_a_volume_without_spatial_dims_or_with_picked_rows_has_no_geometry(make_series):
    volume = dicomarray.open_series(make_series()[0].parent)
    with pytest.raises(DicomArrayError, match="needs dims z, y and x"):
        _ = volume.isel(z=0).dicom.geometry
    with pytest.raises(DicomArrayError, match="y coordinate is not evenly spaced"):
        _ = volume.isel(y=[0, 1, 5]).dicom.affine


def test_provenance_coords_follow_selections(make_series):
    paths = make_series()
    volume = dicomarray.open_series(paths[0].parent)
    shuffled = volume.isel(z=[7, 2, 11]).sortby("z", ascending=False)
    for k in range(shuffled.sizes["z"]):
        header = pydicom.dcmread(shuffled.source_file.values[k], stop_before_pixels=True)
        assert header.SOPInstanceUID == shuffled.sop_instance_uid.values[k]
    assert (shuffled.frame.values == 0).all()
