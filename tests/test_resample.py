"""resample, equalize, detilt: values against analytic phantoms and SimpleITK, laziness."""

from __future__ import annotations

import gzip
import pickle
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

import dicomarray
from dicomarray.errors import ResampleError
from dicomarray.geometry import POSITION_COORDS
from dicomarray.resample import CUBIC_MARGIN, RESAMPLED_ATTR
from dicomarray.sample import head_phantom, write_series

from .nd_volumes import rgb_volume, stack_volumes

# the phantoms are uneven or tilted on purpose: opening them warns, as it should
pytestmark = pytest.mark.filterwarnings("ignore::dicomarray.errors.GeometryWarning")

#: The ramp phantom: value = RAMP . (L, P, S) + 10, exact under linear interpolation.
RAMP = np.array([0.5, 0.3, 0.2])
#: Stored ramp values are rounded to the slope, 0.01.
STORED_ROUNDING = 0.006
PIXEL_SPACING, SLICE_SPACING = (2.0, 3.0), 4.0
_a, _b = np.radians(20), np.radians(25)
#: An oblique orientation, exactly orthonormal (ITK refuses directions that are not).
OBLIQUE = (
    np.cos(_a),
    np.sin(_a),
    0.0,
    -np.sin(_a) * np.cos(_b),
    np.cos(_a) * np.cos(_b),
    -np.sin(_b),
)
#: A GE-like uneven head CT: 14 slices 4 mm apart, then 14 slices 7 mm apart.
GE_POSITIONS = [4.0 * i for i in range(14)] + [52.0 + 7.0 * i for i in range(1, 15)]


def _pixel_world(ds: pydicom.Dataset) -> np.ndarray:
    """(rows, columns, 3) LPS mm of every pixel of one file, by pydicom (PS3.3 C.7.6.2.1.1)."""
    cosines = np.asarray(ds.ImageOrientationPatient, dtype=float)
    row_spacing, column_spacing = map(float, ds.PixelSpacing)
    i, j = np.mgrid[0 : ds.Rows, 0 : ds.Columns]
    return (
        np.asarray(ds.ImagePositionPatient, dtype=float)
        + i[..., None] * row_spacing * cosines[3:]
        + j[..., None] * column_spacing * cosines[:3]
    )


def _ramp(world: np.ndarray) -> np.ndarray:
    return world @ RAMP + 10.0


def _write_ramp(folder: Path, n: int = 10, rows: int = 12, columns: int = 14, **kwargs) -> list:
    """A series whose value at every pixel is the ramp at its DICOM position (pydicom's)."""
    kwargs = {"pixel_spacing": PIXEL_SPACING, "slice_spacing": SLICE_SPACING, **kwargs}
    paths = write_series(folder, np.zeros((n, rows, columns)), intercept=0.0, **kwargs)
    world = np.stack([_pixel_world(pydicom.dcmread(p, stop_before_pixels=True)) for p in paths])
    shutil.rmtree(folder)
    kwargs.setdefault("intercept", 0.0)
    return write_series(folder, _ramp(world), slope=0.01, **kwargs)


def _open_ramp(folder: Path, chunks=None, **kwargs):
    _write_ramp(folder, **kwargs)
    return dicomarray.open_series(folder, chunks=chunks)


def _world(volume) -> np.ndarray:
    """LPS mm of every voxel of a volume, through its own geometry (array dim order)."""
    axes = np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij")
    return volume.dicom.geometry.world(np.stack(axes, axis=-1))


def _source_index(source, world: np.ndarray) -> np.ndarray:
    """Fractional (z, y, x) indices of LPS points in a regular (maybe tilted) source."""
    affine = source.dicom.affine
    return np.linalg.solve(affine[:3, :3], (world - affine[:3, 3]).reshape(-1, 3).T).T.reshape(
        world.shape
    )


def _within_centres(source, world: np.ndarray) -> np.ndarray:
    """Points inside the box of the source's voxel centres (where interpolation is exact)."""
    index = _source_index(source, world)
    return np.all((index > -1e-6) & (index < np.asarray(source.shape) - 1 + 1e-6), axis=-1)


def _assert_ramp_inside(source, result) -> tuple[np.ndarray, np.ndarray]:
    """``result`` holds the ramp wherever its voxels lie between the source's voxel centres
    (beyond, within half a voxel, it holds the edge's values); returns that mask and the
    values."""
    world, values = _world(result), result.dicom.hu().values
    inside = _within_centres(source, world)
    assert inside.sum() > result.size / 3
    np.testing.assert_allclose(values[inside], _ramp(world[inside]), atol=STORED_ROUNDING)
    return inside, values


def _assert_rotation_only(volume, spacing) -> None:
    columns = volume.dicom.affine[:3, :3]
    np.testing.assert_allclose(
        columns.T @ columns, np.diag(np.square(spacing)), atol=1e-5
    )  # DS cosines: 6 decimals
    assert not volume.dicom.geometry.is_sheared


# -- resample ---------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", [(1, 0, 0, 0, 1, 0), OBLIQUE], ids=["axial", "oblique"])
def test_linear_resample_reproduces_a_ramp_at_the_result_s_own_voxel_positions(
    tmp_path, orientation
):
    source = _open_ramp(tmp_path / "ramp", orientation=orientation)
    result = source.dicom.resample((2.5, 1.7, 1.3))
    assert result.dtype == np.float32 and result.chunks is not None
    np.testing.assert_allclose(
        result.dicom.hu().values, _ramp(_world(result)), atol=STORED_ROUNDING
    )
    assert result.dicom.geometry.spacing == {"z": 2.5, "y": 1.7, "x": 1.3}
    _assert_rotation_only(result, (2.5, 1.7, 1.3))
    # the same extent: from the first voxel to as far as whole steps reach
    np.testing.assert_allclose(_world(result)[0, 0, 0], _world(source)[0, 0, 0], atol=1e-5)
    assert result.shape == (int(36 / 2.5) + 1, int(22 / 1.7) + 1, int(39 / 1.3) + 1)
    record = result.attrs[RESAMPLED_ATTR]
    assert record["operation"] == "resample" and record["method"] == "linear"
    assert record["source"]["spacing"] == pytest.approx([4.0, 2.0, 3.0])
    assert record["values"] == "stored" and record["voxels_outside_source"] == 0
    assert result.attrs["PixelSpacing"] == [1.7, 1.3]
    assert (result.attrs["Rows"], result.attrs["Columns"]) == result.shape[1:]
    for keyword in ("SeriesInstanceUID", "PatientID", "ImageOrientationPatient", "RescaleSlope"):
        assert result.attrs[keyword] == source.attrs[keyword]
    assert result.attrs["SpacingBetweenSlices"] == 2.5
    # new slices mix source slices: the per-slice provenance no longer applies
    assert not {"source_file", "frame", "sop_instance_uid", "instance_number"} & set(result.coords)


def test_a_resample_keeping_the_slice_step_keeps_each_slice_s_provenance_and_rescale(tmp_path):
    source = _open_ramp(tmp_path / "ramp", per_slice_rescale=True)
    result = source.dicom.resample((SLICE_SPACING, 1.0, 1.5))
    # no slices mixed: stored values, each with its own slice's rescale, still apply
    assert result.attrs[RESAMPLED_ATTR]["values"] == "stored"
    for name in ("source_file", "sop_instance_uid", "frame", "rescale_slope", "rescale_intercept"):
        np.testing.assert_array_equal(result[name].values, source[name].values)
    np.testing.assert_allclose(
        result.dicom.hu().values, _ramp(_world(result)), atol=STORED_ROUNDING
    )


def test_nearest_resample_of_a_sphere_keeps_its_labels(tmp_path):
    # a labelled ball of radius 17 mm: 100 inside, 0 outside
    n, rows, columns = 12, 20, 18
    z, y, x = np.mgrid[0:n, 0:rows, 0:columns] * np.array([4.0, 2.0, 3.0])[:, None, None, None]
    centre, radius = np.array([22.0, 19.0, 25.0]), 17.0
    distance = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
    labels = np.where(distance <= radius, 100, 0).astype(np.int16)
    write_series(tmp_path, labels, pixel_spacing=PIXEL_SPACING, slice_spacing=4.0, intercept=0.0)
    source = dicomarray.open_series(tmp_path)
    result = source.dicom.resample((1.1, 0.9, 1.3), method="nearest")
    assert result.dtype == np.int16
    assert set(np.unique(result.values)) == {0, 100}
    # distance of each output voxel from the ball's centre, in the source's (z, y, x) mm
    where = _source_index(source, _world(result)) * np.array([4.0, 2.0, 3.0])
    from_centre = np.linalg.norm(where - centre, axis=-1)
    half_diagonal = np.linalg.norm([2.0, 1.0, 1.5])  # the nearest voxel is at most this far
    assert (result.values[from_centre < radius - half_diagonal] == 100).all()
    assert (result.values[from_centre > radius + half_diagonal] == 0).all()


def _sitk_resampled(files: list[Path], result, interpolator) -> np.ndarray:
    """SimpleITK's reading of the DICOM files, resampled onto ``result``'s grid, in the
    result's dim order (ITK's index order is numpy's reversed)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in files])
    image = sitk.Cast(reader.Execute(), sitk.sitkFloat64)
    geometry = result.dicom.geometry
    fastest_first = list(reversed(result.dims))
    directions = np.stack([geometry.direction(dim) for dim in fastest_first], axis=1)
    out = sitk.Resample(
        image,
        [result.sizes[dim] for dim in fastest_first],
        sitk.Transform(),
        interpolator,
        tuple(geometry.slice_positions[0]),  # the voxel at index 0 of every dim
        tuple(geometry.spacing[dim] for dim in fastest_first),
        tuple(directions.ravel()),
        float("nan"),
        sitk.sitkFloat64,
    )
    return sitk.GetArrayFromImage(out)


@pytest.mark.parametrize(
    ("method", "interpolator", "tolerance"),
    [
        ("nearest", sitk.sitkNearestNeighbor, 0.0),
        # ITK's slice spacing is from rounded positions: 5.00000008 mm
        ("linear", sitk.sitkLinear, 0.1),
        ("cubic", sitk.sitkBSpline, 0.1),
    ],
)
def test_resample_matches_simpleitk_on_the_same_grid(tmp_path, method, interpolator, tolerance):
    hu = head_phantom(12, 40, 44, slice_spacing=5.0, pixel_spacing=(4.0, 4.0))
    write_series(tmp_path, hu, pixel_spacing=(4.0, 4.0), slice_spacing=5.0, orientation=OBLIQUE)
    # one slice per chunk: a cubic chunk's spline is computed on its own block of slices
    source = dicomarray.open_series(tmp_path, chunks=1)
    # no spacing whose samples fall halfway between voxels, where nearest may go either way
    result = source.dicom.resample((2.2913, 1.6893, 3.0719), method=method)
    ours = result.dicom.hu().values.astype(np.float64)
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path))  # sorted by ITK
    reference = _sitk_resampled(files, result, interpolator)
    assert np.isfinite(reference).all() and np.isfinite(ours).all()
    np.testing.assert_allclose(ours, reference, rtol=0, atol=tolerance)


def test_resample_of_a_tilted_stack_has_no_shear_and_is_exact_inside(tmp_path):
    source = _open_ramp(tmp_path / "tilted", tilt_degrees=15.0)
    result = source.dicom.resample((3.0, 2.0, 2.0))
    _assert_rotation_only(result, (3.0, 2.0, 2.0))
    inside, values = _assert_ramp_inside(source, result)
    # the box around a sheared stack has corners with no source: NaN, and counted
    outside = np.isnan(values)
    assert outside.any() and not outside[inside].any()
    assert result.attrs[RESAMPLED_ATTR]["voxels_outside_source"] == outside.sum()


# -- equalize ---------------------------------------------------------------------------------


def test_equalize_puts_an_uneven_ge_like_stack_on_its_finest_step(tmp_path):
    source = _open_ramp(tmp_path / "ge", n=28, positions=GE_POSITIONS)
    assert source.dicom.geometry.slice_step is None
    result = source.dicom.equalize()
    geometry = result.dicom.geometry
    assert geometry.slice_step == pytest.approx(4.0) and geometry.is_regular
    assert result.sizes["z"] == 38  # 0 to 148 mm of the 150 mm stack, every 4 mm
    np.testing.assert_array_equal(result.y.values, source.y.values)  # in-plane unchanged
    np.testing.assert_array_equal(result.x.values, source.x.values)
    np.testing.assert_allclose(
        result.dicom.hu().values, _ramp(_world(result)), atol=STORED_ROUNDING
    )
    record = result.attrs[RESAMPLED_ATTR]
    assert record["operation"] == "equalize"
    assert record["source"]["slice_steps"] == [{"steps": 13, "mm": 4.0}, {"steps": 14, "mm": 7.0}]
    assert record["spacing"] == {"z": pytest.approx(4.0), "y": 2.0, "x": 3.0}
    assert result.dicom.geometry.voxel_volume() == pytest.approx(4.0 * 2.0 * 3.0)
    # the assembly report's slice figures are the result's; its files still the source's
    report, read = result.attrs["dicomarray_assembly"], source.attrs["dicomarray_assembly"]
    assert report["slice_spacing"] == pytest.approx(4.0) and read["slice_spacing"] is None
    assert [run["steps"] for run in report["slice_steps"]] == [37]
    assert report["slice_steps"][0]["mm"] == pytest.approx(4.0)
    assert report["files"] == read["files"]


def test_equalize_mixes_per_slice_rescales_as_modality_values(tmp_path):
    source = _open_ramp(tmp_path / "ge", n=28, positions=GE_POSITIONS, per_slice_rescale=True)
    assert "rescale_slope" in source.coords
    result = source.dicom.equalize()
    assert result.attrs["dicomarray_values"] == "modality"
    assert result.attrs[RESAMPLED_ATTR]["values"] == "modality"
    assert not {"rescale_slope", "rescale_intercept"} & set(result.coords)
    np.testing.assert_allclose(result.values, _ramp(_world(result)), atol=STORED_ROUNDING)


def test_equalize_and_detilt_return_a_regular_untilted_series_unchanged(make_series):
    volume = dicomarray.open_series(make_series()[0].parent)
    assert volume.dicom.equalize() is volume
    assert volume.dicom.detilt() is volume


# -- detilt -----------------------------------------------------------------------------------


def test_detilt_keeps_each_dicom_slice_plane_and_removes_the_shear(tmp_path):
    paths = _write_ramp(tmp_path / "tilted", tilt_degrees=15.0)
    source = dicomarray.open_series(tmp_path / "tilted")
    assert source.dicom.geometry.is_sheared
    result = source.dicom.detilt()
    # the slices step 4 mm at 15 degrees: each is 1.035 mm further along the columns,
    # so the rows grow by ceil(9 x 1.035 / 2) = 5 and no slice loses a pixel
    assert result.shape == (10, 12 + 5, 14)
    # the tag says no tilt now: a reader correcting tilt by it would shear the result back
    assert float(source.attrs["GantryDetectorTilt"]) == pytest.approx(15.0)
    assert result.attrs["GantryDetectorTilt"] == 0.0
    _assert_rotation_only(result, (SLICE_SPACING * np.cos(np.radians(15)), *PIXEL_SPACING))
    # every voxel of output slice k lies on the plane of DICOM file k (pydicom's reading)
    world = _world(result)
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        normal = np.cross(*np.reshape(np.asarray(ds.ImageOrientationPatient, float), (2, 3)))
        off_plane = (world[k] - np.asarray(ds.ImagePositionPatient, float)) @ normal
        assert np.abs(off_plane).max() < 1e-6  # well within half a voxel
    _, values = _assert_ramp_inside(source, result)
    assert result.attrs[RESAMPLED_ATTR]["voxels_outside_source"] == np.isnan(values).sum() > 0
    # each slice comes from its own source slice alone: its provenance still applies
    np.testing.assert_array_equal(result.source_file.values, source.source_file.values)
    np.testing.assert_allclose(result.z.values, source.z.values, rtol=0, atol=1e-9)


def _dcm2niix(folder: Path, suffix: str):
    """dcm2niix's NIfTI of the series in ``folder`` with ``suffix`` ("_Tilt_1", "_Eq_1")."""
    dcm2niix = shutil.which("dcm2niix")
    if dcm2niix is None:
        pytest.skip("dcm2niix is not installed")
    nibabel = pytest.importorskip("nibabel")
    out = folder.parent / f"{folder.name}-nifti"
    out.mkdir()
    command = [dcm2niix, "-z", "n", "-b", "n", "-f", "s", "-o", str(out), str(folder)]
    subprocess.run(command, check=True, capture_output=True)
    return nibabel.load(out / f"s{suffix}.nii")


_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def _nifti_index(image, world: np.ndarray) -> np.ndarray:
    """(3, n) fractional NIfTI voxel indices of (..., 3) LPS points."""
    ras = world.reshape(-1, 3) @ _RAS_TO_LPS
    return np.linalg.solve(image.affine[:3, :3], (ras - image.affine[:3, 3]).T)


def _assert_same_directions(image, result) -> None:
    """The NIfTI's axes and the result's run along the same lines (dcm2niix flips rows)."""
    theirs = _RAS_TO_LPS @ image.affine[:3, :3] / np.linalg.norm(image.affine[:3, :3], axis=0)
    ours = result.dicom.geometry.rotation()[:, ::-1]  # NIfTI axes: x, y, z
    np.testing.assert_allclose(np.abs(theirs), np.abs(ours), atol=1e-6)


def test_detilt_grows_the_grid_as_dcm2niix_tilt_and_agrees_with_its_values(tmp_path):
    _write_ramp(tmp_path / "in", rows=40, columns=44, tilt_degrees=15.0)
    image = _dcm2niix(tmp_path / "in", "_Tilt_1")
    source = dicomarray.open_series(tmp_path / "in")
    result = source.dicom.detilt()
    assert image.shape == result.shape[::-1]
    _assert_same_directions(image, result)
    # dcm2niix's values, interpolated at our voxels: equal wherever both have data, but for
    # a few rows at the shifted edges, where dcm2niix has filled in
    index = _nifti_index(image, _world(result))
    inside = _within_centres(source, _world(result)).reshape(-1)
    inside &= np.all((index >= 0) & (index <= np.array(image.shape)[:, None] - 1), axis=0)
    from scipy import ndimage

    reference = ndimage.map_coordinates(image.get_fdata(), index[:, inside], order=1)
    agree = np.abs(result.dicom.hu().values.reshape(-1)[inside] - reference) < 0.02
    assert agree.mean() > 0.95


def test_equalize_agrees_with_dcm2niix_eq(tmp_path):
    _write_ramp(tmp_path / "in", n=28, positions=GE_POSITIONS)
    image = _dcm2niix(tmp_path / "in", "_Eq_1")
    result = dicomarray.open_series(tmp_path / "in").dicom.equalize()
    _assert_same_directions(image, result)
    # dcm2niix stops at 144 mm of the 150 mm stack; we keep the slice at 148 mm
    assert image.shape == (14, 12, 37) and result.shape == (38, 12, 14)
    index = _nifti_index(image, _world(result.isel(z=slice(0, 37))))
    np.testing.assert_allclose(index, np.rint(index), atol=1e-6)  # the same voxels
    theirs = image.get_fdata()[tuple(np.rint(index).astype(int))]
    ours = result.isel(z=slice(0, 37)).dicom.hu().values.reshape(-1)
    np.testing.assert_allclose(ours, theirs, atol=STORED_ROUNDING)


def test_equalize_keeps_the_shear_and_detilt_then_removes_it(tmp_path):
    source = _open_ramp(tmp_path / "both", n=28, positions=GE_POSITIONS, tilt_degrees=12.0)
    equalized = source.dicom.equalize()
    assert equalized.dicom.geometry.is_sheared and equalized.dicom.geometry.is_regular
    np.testing.assert_allclose(
        equalized.dicom.hu().values, _ramp(_world(equalized)), atol=STORED_ROUNDING
    )
    # detilt alone keeps the uneven planes; after equalize, one step
    uneven = source.dicom.detilt()
    assert not uneven.dicom.geometry.is_sheared and not uneven.dicom.geometry.is_regular
    np.testing.assert_allclose(uneven.z.values, source.z.values, rtol=0, atol=1e-9)
    result = equalized.dicom.detilt()
    assert result.dicom.geometry.is_regular and not result.dicom.geometry.is_sheared
    assert result.attrs[RESAMPLED_ATTR]["previous"]["operation"] == "equalize"
    _assert_ramp_inside(equalized, result)


def test_a_real_oblique_sagittal_series_reoriented_matches_simpleitk(tmp_path):
    # 40 slices of Philips' ADNI sagittal MPRAGE (dcm_qa_philips_enh, BSD 2-Clause):
    # a few degrees oblique, dims (y, x, z) once reoriented to RAS
    from benchmarks.compare_dcm2niix import default_realdata

    root = default_realdata()
    folder = None if root is None else root / "dcm_qa_philips_enh" / "In" / "cl"
    if folder is None or not (folder / "1301_0060.dcm.gz").is_file():
        pytest.skip("the realdata folder (dcm_qa_philips_enh) is absent")
    for number in range(60, 100):
        with gzip.open(folder / f"1301_{number:04d}.dcm.gz") as packed:
            (tmp_path / f"{number}.dcm").write_bytes(packed.read())
    source = dicomarray.open_series(tmp_path).dicom.reorient("RAS")
    assert source.dims == ("y", "x", "z")
    result = source.dicom.resample((2.1, 1.9, 1.7))
    assert result.dims == ("y", "x", "z")
    reference = _sitk_resampled(sorted(tmp_path.glob("*.dcm")), result, sitk.sitkLinear)
    assert np.isfinite(reference).all()
    np.testing.assert_allclose(result.dicom.hu().values, reference, rtol=0, atol=0.1)


# -- all three: dims, laziness, pickling, clusters, refusals ------------------------------------


def test_dims_in_any_order_come_back_in_that_order(tmp_path):
    sagittal = (0, 1, 0, 0, 0, -1)
    source = _open_ramp(tmp_path / "sagittal", orientation=sagittal, tilt_degrees=10.0)
    reoriented = source.dicom.reorient("RAS")
    assert reoriented.dims == ("y", "x", "z")
    # slices in reverse order: z runs against the normal
    reversed_slices = reoriented.isel(z=slice(None, None, -1))
    for volume in (reoriented, reversed_slices):
        for result in (volume.dicom.resample((3.0, 1.5, 2.5)), volume.dicom.detilt()):
            assert result.dims == ("y", "x", "z")
            _assert_ramp_inside(volume, result)
    assert reversed_slices.dicom.detilt().z.values[0] == pytest.approx(source.z.values[-1])


def test_a_volume_in_memory_resamples_as_the_lazy_one(tmp_path):
    source = _open_ramp(tmp_path / "ramp", chunks=2)
    lazy = source.dicom.resample((3.0, 1.5, 2.5))
    loaded = source.load().dicom.resample((3.0, 1.5, 2.5))
    assert loaded.chunks is not None  # still lazy: the task graph holds the loaded values
    np.testing.assert_array_equal(loaded.values, lazy.values)


@pytest.mark.parametrize(
    ("tilt", "operation", "output_slice", "expected_reads"),
    [
        (0.0, lambda v: v.dicom.resample((2.5, 2.0, 3.0)), 3, [1, 2]),  # 7.5 mm: slices 1, 2
        (0.0, lambda v: v.dicom.resample((2.0, 2.0, 3.0)), 4, [2]),  # 8 mm: on slice 2
        (0.0, lambda v: v.dicom.resample((2.5, 2.0, 3.0), method="nearest"), 3, [2]),
        # cubic: the two slices each side of 7.5 mm (0 to 3), and CUBIC_MARGIN more above
        (
            0.0,
            lambda v: v.dicom.resample((2.5, 2.0, 3.0), method="cubic"),
            3,
            [*range(4 + CUBIC_MARGIN)],
        ),
        (15.0, lambda v: v.dicom.detilt(), 3, [3]),
        (15.0, lambda v: v.dicom.detilt(method="cubic"), 3, [3]),
    ],
    ids=["linear", "on-plane", "nearest", "cubic", "detilt", "detilt-cubic"],
)
def test_one_output_slice_reads_only_the_source_slices_it_needs(
    tmp_path, reads, tilt, operation, output_slice, expected_reads
):
    source = _open_ramp(tmp_path / "t", n=16, chunks=1, tilt_degrees=tilt)
    result = operation(source)
    assert reads == []
    assert result.isel(z=output_slice).values.shape == result.shape[1:]
    assert sorted(set(reads)) == expected_reads


def test_equalize_reads_only_the_slices_around_an_output_slice(tmp_path, reads):
    source = _open_ramp(tmp_path / "ge", n=28, positions=GE_POSITIONS, chunks=1)
    result = source.dicom.equalize()
    assert reads == []
    assert result.isel(z=16).values.ndim == 2  # 64 mm: between slices 14 (59 mm) and 15 (66 mm)
    assert sorted(set(reads)) == [14, 15]
    reads.clear()
    assert result.isel(z=20).values.ndim == 2  # 80 mm: on slice 17
    assert sorted(set(reads)) == [17]


def test_the_four_grid_operations_pickle_and_compute_on_a_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    source = _open_ramp(tmp_path / "s", n=28, positions=GE_POSITIONS, tilt_degrees=10.0, chunks=4)
    results = [
        source.dicom.resample((5.0, 2.5, 2.5)),
        source.dicom.equalize(),
        source.dicom.detilt(method="cubic"),
        source.dicom.reorient("RAS"),
    ]
    expected = [result.values for result in results]
    for result, values in zip(results, expected, strict=True):
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(result)).values, values)
    with (
        distributed.LocalCluster(
            n_workers=1, processes=False, threads_per_worker=1, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster),
    ):
        for result, values in zip(results, expected, strict=True):
            np.testing.assert_array_equal(result.compute().values, values)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda v: v.dicom.resample((1.0, 1.0)), "three millimetres above 0"),
        (lambda v: v.dicom.resample((1.0, -1.0, 1.0)), "three millimetres above 0"),
        (lambda v: v.dicom.resample({"z": 1.0, "y": 1.0, "t": 1.0}), "three millimetres"),
        (lambda v: v.dicom.resample((1.0, 1.0, 1.0), method="bicubic"), "is not one of"),
        # a grid of 1e-4 mm voxels would take terabytes: refused before any allocation
        (lambda v: v.dicom.resample((1e-4, 1e-4, 1e-4)), "ask for a coarser spacing"),
        (lambda v: dicomarray.resample.resample(v, (1e-9, 1.0, 1.0)), "coarser spacing"),
        (lambda v: v.isel(z=0).dicom.resample((1.0, 1.0, 1.0)), "needs dims z, y and x"),
        (
            lambda v: (
                v.drop_vars(list(POSITION_COORDS))
                .assign_coords(z=("z", np.arange(12.0), {"units": "1"}))
                .dicom.resample((1.0, 1.0, 1.0))
            ),
            "no positions",
        ),
        (
            lambda v: (
                v.sortby("instance_number", ascending=False)
                .isel(z=[0, 2, 1])
                .dicom.resample((1.0, 1.0, 1.0))
            ),
            "not in order of position",
        ),
    ],
)
def test_bad_requests_are_refused_naming_the_series(make_series, call, message):
    volume = dicomarray.open_series(make_series()[0].parent)
    with pytest.raises(ResampleError, match=message) as caught:
        call(volume)
    assert 'series 2 "HEAD 12mm H30s"' in str(caught.value)


# -- README -----------------------------------------------------------------------------------


def test_the_readme_geometry_and_new_grids_example_runs(tmp_path, monkeypatch):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### Geometry, provenance and new grids", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 1
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


# -- n-D volumes (issue 13): every volume resampled alike -------------------------------------


def test_each_volume_of_a_4d_series_is_resampled_as_it_would_be_alone(tmp_path):
    volumes = [_open_ramp(tmp_path / f"v{k}", chunks=2) for k in range(2)]
    volumes[1] = volumes[1].copy(data=volumes[1].data * 2)  # two different volumes
    stacked = stack_volumes(volumes, "t", [0.0, 2.5])
    for operation in (
        lambda v: v.dicom.resample((2.5, 1.7, 1.3)),
        lambda v: v.dicom.resample((SLICE_SPACING, 1.0, 1.5), method="nearest"),
    ):
        result = operation(stacked)
        assert result.dims == ("t", "z", "y", "x")
        np.testing.assert_array_equal(result["t"].values, [0.0, 2.5])
        for k, volume in enumerate(volumes):
            alone = operation(volume)
            np.testing.assert_array_equal(result.isel(t=k).values, alone.values)
            assert result.dicom.geometry.spacing == alone.dicom.geometry.spacing
        assert result.attrs[RESAMPLED_ATTR] == operation(volumes[0]).attrs[RESAMPLED_ATTR]
    # on the source's slice planes each frame keeps its own provenance, now on (t, z)
    kept = stacked.dicom.resample((SLICE_SPACING, 1.0, 1.5))
    assert kept["source_file"].dims == ("t", "z")
    np.testing.assert_array_equal(kept["source_file"].values, stacked["source_file"].values)


def test_resampling_a_4d_series_reads_only_the_frames_an_output_slice_needs(tmp_path, reads):
    from .test_split import grid_of, write_frames

    write_frames(tmp_path / "s", grid_of(3, 4, lambda v, s: {"TemporalPositionIdentifier": v + 1}))
    volume = dicomarray.open_series(tmp_path / "s", chunks={"t": 1, "z": 1})
    result = volume.dicom.resample((1.5, 1.0, 1.0))  # slices at 0, 1.5, 3, ... mm: 3 mm apart
    assert reads == [] and result.sizes["t"] == 3
    values = result.isel(t=2, z=1).values  # 1.5 mm: halfway between slices 0 and 1
    assert sorted(reads) == [8, 9]  # frames (t=2, z=0) and (t=2, z=1) only
    np.testing.assert_allclose(values, 200.5)


def test_a_colour_channel_passes_through_resample_and_reorient():
    rgb = rgb_volume((4, 6, 8))
    result = rgb.dicom.resample((1.0, 1.0, 1.0), method="nearest")
    assert result.dims == ("z", "y", "x", "channel")
    np.testing.assert_array_equal(result.values, rgb.values)
    flipped = rgb.dicom.reorient("RAS")
    assert flipped.dims == ("z", "y", "x", "channel")  # LPS stored: y and x reversed
    np.testing.assert_array_equal(flipped.values, rgb.values[:, ::-1, ::-1])
