"""The synthetic CT perfusion series of dicomarray.sample_perfusion, read back with pydicom."""

from __future__ import annotations

import datetime as dt
import math
import pathlib
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
import xarray as xr
from PIL import Image

from dicomarray import open_series
from dicomarray.batch import convert
from dicomarray.curves import COLOURS, region_curve, write_curves_picture
from dicomarray.demo import DEMO_CONFIG, write_sample_curves
from dicomarray.errors import RenderError, WriteError
from dicomarray.sample import make_study
from dicomarray.sample_perfusion import (
    PERFUSION_CURVES,
    PERFUSION_REGIONS,
    BolusCurve,
    make_perfusion_series,
    perfusion_phantom,
    perfusion_times,
)
from dicomarray.writers import open_npy

N_TIMES, N_SLICES = 24, 3


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> list[pydicom.Dataset]:
    """The default series but with 3 slices, read back in written order."""
    folder = tmp_path_factory.mktemp("perfusion")
    paths = make_perfusion_series(folder, n_slices=N_SLICES, seed=3)
    assert len(paths) == len(set(paths)) == N_TIMES * N_SLICES
    return [pydicom.dcmread(p) for p in paths]


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _seconds(tm: str) -> float:
    return int(tm[:2]) * 3600 + int(tm[2:4]) * 60 + float(tm[4:])


def _gamma(s: np.ndarray, alpha: float) -> np.ndarray:
    # g(s) = s**alpha * exp(alpha * (1 - s)) for s > 0, as BolusCurve's docstring writes it
    s = np.asarray(s, dtype=float)
    out = np.zeros_like(s)
    out[s > 0] = s[s > 0] ** alpha * np.exp(alpha * (1 - s[s > 0]))
    return out


#: The documented curves, spelled out again here: (arrival, peak time, peak, recirculation).
DOCUMENTED = {
    "artery": (6.0, 12.0, 350.0, 0.1),
    "vein": (9.0, 18.0, 250.0, 0.1),
    "white matter": (8.0, 16.0, 20.0, 0.0),
}


def _expected(name: str, t: np.ndarray) -> np.ndarray:
    arrival, peak_time, peak, recirculation = DOCUMENTED[name]
    rise = peak_time - arrival
    first = _gamma((t - arrival) / rise, 3.0)
    return peak * (first + recirculation * _gamma((t - peak_time) / (2 * rise), 3.0))


def _region_mask(ds: pydicom.Dataset, name: str) -> np.ndarray:
    """The pixels whose centres lie in the region's square, from the file's own geometry."""
    region = PERFUSION_REGIONS[name]
    x0, y0, _ = (float(v) for v in ds.ImagePositionPatient)
    row_mm, column_mm = (float(v) for v in ds.PixelSpacing)
    x = x0 + np.arange(ds.Columns) * column_mm  # ImageOrientationPatient is 1/0/0/0/1/0
    y = y0 + np.arange(ds.Rows) * row_mm
    inside_x = np.abs(x - region.x) <= region.half_width
    inside_y = np.abs(y - region.y) <= region.half_width
    return inside_y[:, None] & inside_x[None, :]


def _region_means(datasets: list[pydicom.Dataset], name: str) -> np.ndarray:
    """Mean HU of the region per time point (the files come time point by time point)."""
    means = [_hu(ds)[_region_mask(ds, name)].mean() for ds in datasets]
    return np.asarray(means).reshape(N_TIMES, N_SLICES).mean(axis=1)


# --------------------------------------------------------------------------------------------
# The files
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools' dciodvfy not installed")
def test_perfusion_file_passes_dciodvfy(tmp_path: pathlib.Path) -> None:
    """Warnings only: the temporal tags are outside the CT IOD, as in real CTP exports."""
    path = make_perfusion_series(tmp_path, n_times=2, n_slices=1)[1]
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    lines = (result.stdout + result.stderr).splitlines()
    assert [line for line in lines if "Error" in line] == []
    assert any("Temporal Position Identifier" in line for line in lines)  # it did check


def test_every_time_point_repeats_the_slice_positions(series: list[pydicom.Dataset]) -> None:
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in series])
    by_time = positions.reshape(N_TIMES, N_SLICES, 3)
    assert np.array_equal(by_time, np.broadcast_to(by_time[0], by_time.shape))
    assert np.allclose(np.diff(by_time[0, :, 2]), 5.0)  # inferior first, 5 mm apart
    assert {ds.SOPClassUID for ds in series} == {pydicom.uid.CTImageStorage}
    assert len({ds.SOPInstanceUID for ds in series}) == len(series)
    assert len({ds.SeriesInstanceUID for ds in series}) == 1


def test_temporal_tags_and_times_increase_per_time_point(series: list[pydicom.Dataset]) -> None:
    temporal = np.array([int(ds.TemporalPositionIdentifier) for ds in series])
    assert np.array_equal(temporal, np.repeat(np.arange(1, N_TIMES + 1), N_SLICES))
    assert {int(ds.NumberOfTemporalPositions) for ds in series} == {N_TIMES}
    assert [int(ds.InstanceNumber) for ds in series] == list(range(1, N_TIMES * N_SLICES + 1))
    start = _seconds(series[0].SeriesTime)
    for name in ("AcquisitionTime", "ContentTime"):
        seconds = np.array([_seconds(getattr(ds, name)) for ds in series]) - start
        assert np.allclose(seconds, np.repeat(np.arange(N_TIMES) * 2.0, N_SLICES))
    stamps = [dt.datetime.strptime(ds.AcquisitionDateTime, "%Y%m%d%H%M%S.%f") for ds in series]
    assert stamps[0].strftime("%Y%m%d") == series[0].StudyDate
    assert (stamps[-1] - stamps[0]).total_seconds() == (N_TIMES - 1) * 2.0


def test_stored_values_are_rescaled_int16(series: list[pydicom.Dataset]) -> None:
    ds = series[0]
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
    assert ds.pixel_array.dtype == np.int16 and ds.RescaleType == "HU"


# --------------------------------------------------------------------------------------------
# The HU follow the documented curves
# --------------------------------------------------------------------------------------------


def test_baseline_hu_before_the_bolus(series: list[pydicom.Dataset]) -> None:
    hu = _hu(series[N_SLICES - 1])  # the first time point, top slice (z = 5 mm)
    assert hu[0, 0] == -1000  # air
    assert 25 <= _region_means(series, "white matter")[0] <= 35
    row = hu[64]
    assert row.max() > 800  # the skull, crossed along the middle row
    # The left ventricle, centred 12 mm up, 8 mm anterior and 11 mm left: CSF.
    column, line = int(round((11.0 + 101.6) / 1.6)), int(round((-8.0 + 101.6) / 1.6))
    assert -10 <= hu[line - 1 : line + 2, column - 1 : column + 2].mean() <= 20


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_region_follows_its_documented_curve(series: list[pydicom.Dataset], name: str) -> None:
    measured = _region_means(series, name)
    added = measured - measured[0]  # nothing has arrived at 0 s
    expected = _expected(name, np.arange(N_TIMES) * 2.0)
    # the noise is 3 HU per pixel, averaged over 3 slices of 9 to 25 pixels; rounding 0.5
    assert np.abs(added - expected).max() < 2.5, np.round(added - expected, 1)


def test_artery_peaks_at_12_s_with_350_hu(series: list[pydicom.Dataset]) -> None:
    added = _region_means(series, "artery")
    added = added - added[0]
    assert np.argmax(added) * 2.0 == 12.0
    assert abs(added.max() - 350.0) < 2.5
    # and the vein later, the brain later still than the artery
    assert np.argmax(_region_means(series, "vein")) * 2.0 == 18.0


def test_bolus_curve_peaks_where_documented() -> None:
    for curve in PERFUSION_CURVES.values():
        t = np.linspace(0.0, 60.0, 60001)
        values = curve(t)
        assert math.isclose(t[np.argmax(values)], curve.peak_time, abs_tol=1e-3)
        assert math.isclose(values.max(), curve.peak, rel_tol=1e-9)
        assert curve(curve.arrival) == 0.0 and np.all(values[t <= curve.arrival] == 0)


def test_bolus_curve_refuses_a_peak_before_the_arrival() -> None:
    with pytest.raises(ValueError, match="peak_time"):
        BolusCurve(arrival=5.0, peak_time=5.0, peak=10.0)


def test_phantom_is_deterministic_and_seeded() -> None:
    times = perfusion_times(3, 4.0)
    a = perfusion_phantom(times, 2, 32, 32, seed=1)
    assert a.shape == (3, 2, 32, 32) and a.dtype == np.int16
    assert np.array_equal(a, perfusion_phantom(times, 2, 32, 32, seed=1))
    assert not np.array_equal(a, perfusion_phantom(times, 2, 32, 32, seed=2))
    assert not np.array_equal(a[0], a[1])  # each time point its own noise


# --------------------------------------------------------------------------------------------
# In the sample study
# --------------------------------------------------------------------------------------------


def test_sample_study_holds_the_perfusion_series_only_when_asked(tmp_path: pathlib.Path) -> None:
    plain = make_study(tmp_path / "plain", n_patients=2, rows=32, columns=32)
    assert list(plain.glob("*/*/3_PERFUSION")) == []
    root = make_study(tmp_path / "with", n_patients=2, rows=32, columns=32, perfusion=True)
    (folder,) = root.glob("*/*/3_PERFUSION")
    assert folder.parent.parent.name == "041"  # the first patient's study
    head = pydicom.dcmread(next(folder.parent.glob("2_*/*.dcm")))
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == 24 * 8
    ds = pydicom.dcmread(files[0])
    assert ds.StudyInstanceUID == head.StudyInstanceUID and ds.PatientID == head.PatientID
    assert ds.SeriesInstanceUID != head.SeriesInstanceUID
    assert _seconds(ds.SeriesTime) > _seconds(head.SeriesTime)


# --------------------------------------------------------------------------------------------
# Curves of regions, and their picture
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def volume(series: list[pydicom.Dataset]) -> xr.DataArray:
    """The module's series opened by dicomarray."""
    return open_series(pathlib.Path(series[0].filename).parent)


def test_open_series_gives_t_z_y_x_with_t_the_acquisition_seconds(
    series: list[pydicom.Dataset], volume: xr.DataArray
) -> None:
    assert volume.dims == ("t", "z", "y", "x")
    assert volume.shape == (N_TIMES, N_SLICES, 128, 128)
    first = {int(ds.TemporalPositionIdentifier): ds for ds in reversed(series)}
    acquired = [_seconds(first[i].AcquisitionTime) for i in sorted(first)]
    assert np.array_equal(volume["t"].values, np.asarray(acquired) - acquired[0])
    assert volume["t"].attrs["units"] == "s"
    assert volume["temporal_position"].values.tolist() == list(range(1, N_TIMES + 1))
    # each (t, z) frame is the file of that time point and slice, as pydicom reads it
    ds = series[9 * N_SLICES + 1]
    assert volume["source_file"][9, 1].item() == ds.filename
    assert np.array_equal(volume[9, 1].values, ds.pixel_array)


def test_region_curve_is_the_mean_pydicom_reads(
    series: list[pydicom.Dataset], volume: xr.DataArray
) -> None:
    region = PERFUSION_REGIONS["artery"]
    curve = region_curve(volume, x=region.x, y=region.y, half_width=region.half_width)
    assert curve.dims == ("t",) and curve.chunks is not None  # lazy until asked
    assert np.allclose(curve["t"], np.arange(N_TIMES) * 2.0)
    assert np.allclose(curve.values, _region_means(series, "artery"), atol=1e-4)


def test_region_curve_outside_the_volume_names_the_series(volume: xr.DataArray) -> None:
    with pytest.raises(RenderError, match=volume.attrs["SeriesInstanceUID"]):
        region_curve(volume, x=500.0, y=0.0, half_width=2.0)
    with pytest.raises(RenderError, match="'echo'"):
        region_curve(volume, x=0.0, y=0.0, half_width=2.0, dim="echo")


def _documented_curve(name: str) -> xr.DataArray:
    t = np.arange(N_TIMES) * 2.0
    return xr.DataArray(30.0 + _expected(name, t), dims=("t",), coords={"t": t})


def test_curves_picture_draws_each_curve_in_its_colour(tmp_path: pathlib.Path) -> None:
    curves = {"artery": _documented_curve("artery"), "white": _documented_curve("white matter")}
    path = write_curves_picture(curves, tmp_path / "curves.png", title="CTP")
    picture = np.asarray(Image.open(path))
    assert Image.open(path).format == "PNG" and picture.shape[2] == 3
    red = np.argwhere(np.all(picture == COLOURS[0], axis=2))
    blue = np.argwhere(np.all(picture == COLOURS[1], axis=2))
    assert len(red) and len(blue)
    # The plot box is the black frame; the artery's highest point lies at 12 of 0-50 s.
    middle_row = picture[picture.shape[0] // 2]
    frame = np.flatnonzero(np.all(middle_row == 0, axis=1))
    left, right = frame.min(), frame.max()
    top_red = red[red[:, 0] < red[:, 0].min() + 2]  # the marker at the peak, minus legend
    peak_column = np.median(top_red[top_red[:, 1] < right - 180][:, 1])
    assert abs((peak_column - left) / (right - left) * 50.0 - 12.0) < 1.0
    assert red[:, 0].min() < blue[blue[:, 1] < right - 180][:, 0].min()  # artery higher


def test_curves_picture_refuses_bad_requests(tmp_path: pathlib.Path) -> None:
    curve = _documented_curve("artery")
    with pytest.raises(RenderError, match=r"\.png"):
        write_curves_picture({"a": curve}, tmp_path / "curves.jpg")
    with pytest.raises(RenderError, match="not 1-D"):
        write_curves_picture({"a": curve.expand_dims(z=2)}, tmp_path / "curves.png")
    (tmp_path / "mine.png").write_bytes(b"mine")
    with pytest.raises(WriteError, match="overwrite"):
        write_curves_picture({"a": curve}, tmp_path / "mine.png")
    assert (tmp_path / "mine.png").read_bytes() == b"mine"


def test_demo_draws_the_sample_curves_beside_the_exports(tmp_path: pathlib.Path) -> None:
    study = make_study(tmp_path / "study", n_patients=1, rows=32, columns=32, perfusion=True)
    out = tmp_path / "out"
    report = convert(study, out, config=DEMO_CONFIG, formats=("npy",), workers=0)
    assert list(report["status"]) == ["ok", "ok"]
    path = write_sample_curves(study, out, report)
    assert path is not None and path.parent.name.startswith("3_PERFUSION")
    assert (path.parent / "image.npy").is_file()
    assert np.load(path.parent / "image.npy", mmap_mode="r").shape == (24, 8, 128, 128)
    before = path.stat().st_mtime_ns
    assert write_sample_curves(study, out, report) == path  # kept
    assert path.stat().st_mtime_ns == before
    assert (
        write_sample_curves(make_study(tmp_path / "plain", 1, rows=32, columns=32), out, report)
        is None
    )


@pytest.mark.parametrize("writer", ["npy", "zarr"])
def test_series_round_trips_through_the_writers(
    series: list[pydicom.Dataset], volume: xr.DataArray, tmp_path: pathlib.Path, writer: str
) -> None:
    """HU written and read back: every (t, z) frame equals the file's HU by pydicom."""
    hu = volume.dicom.hu()
    if writer == "npy":
        hu.dicom.to_npy(tmp_path / "v.npy")
        back = open_npy(tmp_path / "v.npy")
    else:
        hu.dicom.to_zarr(tmp_path / "v.zarr")
        back = xr.open_zarr(tmp_path / "v.zarr")[hu.name or "image"]
    assert back.dims == ("t", "z", "y", "x")
    assert np.array_equal(back["t"].values, volume["t"].values)
    expected = np.stack([_hu(ds) for ds in series]).reshape(back.shape)
    assert np.array_equal(back.values, expected)


def test_series_is_a_4d_nifti_with_the_time_step(
    series: list[pydicom.Dataset], volume: xr.DataArray, tmp_path: pathlib.Path
) -> None:
    """nibabel reads (x, y, z, t) in RAS: the files' HU with x and y reversed, 2 s apart."""
    nib = pytest.importorskip("nibabel")
    volume.dicom.hu().dicom.to_nifti(tmp_path / "v.nii.gz")
    image = nib.load(tmp_path / "v.nii.gz")
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
    assert image.header.get_zooms()[3] == 2.0 and image.header.get_xyzt_units()[1] == "sec"
    hu = np.stack([_hu(ds) for ds in series]).reshape(N_TIMES, N_SLICES, 128, 128)
    expected = hu.transpose(3, 2, 1, 0)[::-1, ::-1]  # LPS rows and columns to RAS
    assert np.array_equal(np.asarray(image.dataobj), expected)
