"""Tests of the synthetic head CT generator in dicomarray.sample."""

from __future__ import annotations

import hashlib
import math
import pathlib
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from dicomarray import sample
from dicomarray.sample import (
    head_phantom,
    make_series,
    make_study,
    write_localizer,
    write_series,
)

ROWS, COLUMNS = 48, 56


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _read(paths: list[pathlib.Path]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in paths]


def _tree_hashes(root: pathlib.Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small_hu() -> np.ndarray:
    return head_phantom(6, ROWS, COLUMNS, slice_spacing=20.0, pixel_spacing=(4.0, 3.5), seed=5)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return make_study(tmp_path_factory.mktemp("study"), n_patients=3)


# --------------------------------------------------------------------------------------------
# head_phantom
# --------------------------------------------------------------------------------------------


def _centre(n: int, spacing: float, mm: float) -> int:
    return int(round(mm / spacing + (n - 1) / 2))


def test_phantom_shape_dtype_and_tissues() -> None:
    hu = head_phantom(40, 256, 256, slice_spacing=5.0, pixel_spacing=(0.9, 0.9))
    assert hu.shape == (40, 256, 256) and hu.dtype == np.int16
    assert hu[0, 0, 0] == -1000 and hu[20, 0, 0] == -1000
    middle = hu[20]
    assert 25 <= np.median(middle[120:136, 120:136]) <= 45
    row = middle[128]
    assert 900 <= row.max() <= 1200  # skull crossed twice along the middle row
    skull = np.flatnonzero(row > 500)
    # The skull's outer edge lies 5 mm inside the 75 mm half-width.
    assert abs((skull[0] - 127.5) * 0.9 + 70.0) < 2.0
    k = _centre(40, 5.0, 12.0)
    ventricle = hu[k, _centre(256, 0.9, -8.0), _centre(256, 0.9, 11.0)]
    assert -10 <= ventricle <= 20


def test_phantom_is_deterministic_and_seeded() -> None:
    a = head_phantom(8, 64, 64, slice_spacing=10.0, pixel_spacing=(3.0, 3.0), seed=1)
    b = head_phantom(8, 64, 64, slice_spacing=10.0, pixel_spacing=(3.0, 3.0), seed=1)
    c = head_phantom(8, 64, 64, slice_spacing=10.0, pixel_spacing=(3.0, 3.0), seed=2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_phantom_anatomy_is_in_millimetres() -> None:
    coarse = head_phantom(5, 64, 64, slice_spacing=10.0, pixel_spacing=(4.0, 4.0))
    fine = head_phantom(9, 128, 128, slice_spacing=5.0, pixel_spacing=(2.0, 2.0))
    # Head width along the middle row, in mm, agrees within a coarse voxel.
    width_coarse = np.count_nonzero(coarse[2, 32] > -500) * 4.0
    width_fine = np.count_nonzero(fine[4, 64] > -500) * 2.0
    assert abs(width_coarse - 150.0) <= 8.0 and abs(width_fine - 150.0) <= 4.0


def test_phantom_haemorrhage_changes_only_a_bright_blob() -> None:
    clean = head_phantom(40, 128, 128, slice_spacing=5.0, pixel_spacing=(1.8, 1.8), seed=4)
    bleed = head_phantom(
        40, 128, 128, slice_spacing=5.0, pixel_spacing=(1.8, 1.8), haemorrhage=True, seed=4
    )
    changed = clean != bleed
    assert changed.any()
    assert 60 <= np.median(bleed[changed]) <= 80
    columns = np.flatnonzero(changed.any(axis=(0, 1)))
    # One hemisphere only: the blob does not cross the midline.
    assert columns.max() < 64 or columns.min() >= 64


def test_phantom_is_fast() -> None:
    import time

    head_phantom(4, 64, 64)
    start = time.perf_counter()
    head_phantom(40, 512, 512)
    assert time.perf_counter() - start < 2.0  # generous: CI machines vary


# --------------------------------------------------------------------------------------------
# write_series
# --------------------------------------------------------------------------------------------


def test_write_series_header_and_round_trip(tmp_path: pathlib.Path, small_hu: np.ndarray) -> None:
    paths = write_series(tmp_path, small_hu, pixel_spacing=(4.0, 3.5), slice_spacing=20.0)
    assert len(paths) == 6 and all(p.parent == tmp_path for p in paths)
    datasets = _read(paths)
    for i, ds in enumerate(datasets):
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
        assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
        assert ds.Modality == "CT" and ds.PatientPosition == "HFS"
        assert ds.StudyDescription == "CT HEAD WO CONTRAST"
        assert ds.BitsAllocated == 16 and ds.PixelRepresentation == 1
        assert [float(v) for v in ds.PixelSpacing] == [4.0, 3.5]
        assert ds.InstanceNumber == i + 1
        np.testing.assert_array_equal(_hu(ds), small_hu[i])
    assert len({ds.SOPInstanceUID for ds in datasets}) == 6
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    # Default origin: image centre at x = y = 0, middle of the stack at z = 0.
    first = np.array(datasets[0].ImagePositionPatient, dtype=float)
    np.testing.assert_allclose(first, [-(COLUMNS - 1) * 3.5 / 2, -(ROWS - 1) * 4.0 / 2, -50.0])
    assert [p.name for p in paths] != sorted(p.name for p in paths)


def test_write_series_is_deterministic(tmp_path: pathlib.Path, small_hu: np.ndarray) -> None:
    a = write_series(tmp_path / "a", small_hu, seed=3)
    b = write_series(tmp_path / "b", small_hu, seed=3)
    c = write_series(tmp_path / "c", small_hu, seed=4)
    assert [p.name for p in a] == [p.name for p in b]
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert pydicom.dcmread(a[0]).SOPInstanceUID != pydicom.dcmread(c[0]).SOPInstanceUID


def test_write_series_tilt_gaps_and_signs(tmp_path: pathlib.Path, small_hu: np.ndarray) -> None:
    steps = [0.0, 5.0, 10.0, 20.0, 25.0, 30.0]
    origin = (1.0, 2.0, 3.0)
    paths = write_series(
        tmp_path,
        small_hu,
        origin=origin,
        tilt_degrees=15.0,
        positions=steps,
        slice_location_sign=-1,
        instance_numbers="reversed",
    )
    t = math.radians(15.0)
    step_dir = np.array([0.0, -math.sin(t), math.cos(t)])
    for i, ds in enumerate(_read(paths)):
        ipp = np.array(ds.ImagePositionPatient, dtype=float)
        np.testing.assert_allclose(ipp, np.array(origin) + steps[i] * step_dir, atol=1e-5)
        assert float(ds.SliceLocation) == pytest.approx(-ipp[2], abs=1e-5)
        assert ds.InstanceNumber == 6 - i
        assert float(ds.GantryDetectorTilt) == 15.0


def test_write_series_oblique_step_is_tilted_normal(
    tmp_path: pathlib.Path, small_hu: np.ndarray
) -> None:
    orientation = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # coronal: normal is +y
    paths = write_series(tmp_path, small_hu[:2], orientation=orientation, tilt_degrees=10.0)
    a, b = (np.array(ds.ImagePositionPatient, dtype=float) for ds in _read(paths))
    step = (b - a) / 5.0
    normal = np.cross(orientation[:3], orientation[3:])
    assert step @ np.array(orientation[:3]) == pytest.approx(0.0, abs=1e-6)
    assert math.degrees(math.acos(step @ normal)) == pytest.approx(10.0, abs=1e-4)


def test_per_slice_rescale_round_trips(tmp_path: pathlib.Path, small_hu: np.ndarray) -> None:
    paths = write_series(tmp_path, small_hu, per_slice_rescale=True)
    datasets = _read(paths)
    assert len({float(ds.RescaleSlope) for ds in datasets}) > 1
    assert len({float(ds.RescaleIntercept) for ds in datasets}) > 1
    for ds, expected in zip(datasets, small_hu, strict=True):
        error = np.abs(_hu(ds) - expected)
        assert error.max() <= float(ds.RescaleSlope)


def test_unsigned_12_bit_round_trips(tmp_path: pathlib.Path, small_hu: np.ndarray) -> None:
    paths = write_series(tmp_path, small_hu, bits_stored=12, signed=False, intercept=-1024)
    for ds, expected in zip(_read(paths), small_hu, strict=True):
        assert (ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (12, 11, 0)
        assert ds.pixel_array.dtype == np.uint16
        assert ds.pixel_array.max() < 4096
        np.testing.assert_array_equal(_hu(ds), expected)


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, RLELossless]
)
def test_transfer_syntaxes_decode_to_the_same_values(
    tmp_path: pathlib.Path, small_hu: np.ndarray, syntax: str
) -> None:
    paths = write_series(tmp_path, small_hu, transfer_syntax=syntax, names="ordered")
    assert [p.name for p in paths] == [f"IM_{i:04d}.dcm" for i in range(1, 7)]
    for ds, expected in zip(_read(paths), small_hu, strict=True):
        assert ds.file_meta.TransferSyntaxUID == syntax
        assert ds.Rows == ROWS and ds.Columns == COLUMNS
        np.testing.assert_array_equal(_hu(ds), expected)


def test_uid_file_names(tmp_path: pathlib.Path, small_hu: np.ndarray) -> None:
    paths = write_series(tmp_path, small_hu, names="uid", instance_numbers="random")
    datasets = _read(paths)
    assert [p.name for p in paths] == [f"{ds.SOPInstanceUID}.dcm" for ds in datasets]
    assert sorted(ds.InstanceNumber for ds in datasets) == list(range(1, 7))


def test_first_instance_numbers_a_series_written_in_parts(
    tmp_path: pathlib.Path, small_hu: np.ndarray
) -> None:
    # the volumes of a 4-D series: one call each, instance numbers running on
    paths = write_series(tmp_path, small_hu, instance_numbers="reversed", first_instance=13)
    assert [ds.InstanceNumber for ds in _read(paths)] == list(range(18, 12, -1))


def test_tags_override_defaults(tmp_path: pathlib.Path, small_hu: np.ndarray) -> None:
    tags = {"PatientID": "X1", "SeriesNumber": 7, "SeriesDescription": "MY SERIES"}
    ds = pydicom.dcmread(write_series(tmp_path, small_hu, tags=tags)[0])
    assert (ds.PatientID, ds.SeriesNumber, ds.SeriesDescription) == ("X1", 7, "MY SERIES")
    with pytest.raises(ValueError, match="not DICOM keywords"):
        write_series(tmp_path, small_hu, tags={"NotAKeyword": 1})


def test_simpleitk_reads_the_series(tmp_path: pathlib.Path, small_hu: np.ndarray) -> None:
    sitk = pytest.importorskip("SimpleITK")
    write_series(tmp_path, small_hu, pixel_spacing=(4.0, 3.5), slice_spacing=20.0)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    image = reader.Execute()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), small_hu)
    np.testing.assert_allclose(image.GetSpacing(), (3.5, 4.0, 20.0))
    np.testing.assert_allclose(image.GetOrigin(), (-(COLUMNS - 1) * 1.75, -(ROWS - 1) * 2, -50))


def test_out_of_range_values_raise(tmp_path: pathlib.Path, small_hu: np.ndarray) -> None:
    too_bright = small_hu.copy()
    too_bright[2, 0, 0] = 32000
    with pytest.raises(ValueError, match="slice 2"):
        write_series(tmp_path, too_bright)
    with pytest.raises(ValueError, match="12 bits unsigned"):
        write_series(tmp_path, small_hu, bits_stored=12, signed=False, intercept=0.0)
    assert not list(tmp_path.iterdir())


def test_unsupported_arguments_raise(tmp_path: pathlib.Path, small_hu: np.ndarray) -> None:
    with pytest.raises(ValueError, match="RLE Lossless"):
        write_series(tmp_path, small_hu, transfer_syntax=JPEGBaseline8Bit)
    with pytest.raises(ValueError, match="names"):
        write_series(tmp_path, small_hu, names="sorted")
    with pytest.raises(ValueError, match="positions"):
        write_series(tmp_path, small_hu, positions=[0.0, 1.0])
    with pytest.raises(ValueError, match="3-D"):
        write_series(tmp_path, small_hu[0])


# --------------------------------------------------------------------------------------------
# write_localizer, make_series
# --------------------------------------------------------------------------------------------


def test_write_localizer(tmp_path: pathlib.Path) -> None:
    tags = {"PatientID": "P9", "StudyInstanceUID": "1.2.3.4"}
    ds = pydicom.dcmread(write_localizer(tmp_path, tags=tags, rows=128, columns=160))
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    assert [float(v) for v in ds.ImageOrientationPatient] == [0, 1, 0, 0, 0, -1]
    assert (ds.PatientID, ds.StudyInstanceUID) == ("P9", "1.2.3.4")
    assert ds.pixel_array.shape == (128, 160)
    assert ds.pixel_array[64, 80] > 1000 and ds.pixel_array[0, 0] < 100


def test_make_series_forwards_arguments(tmp_path: pathlib.Path) -> None:
    paths = make_series(
        tmp_path, 5, rows=32, columns=32, slice_spacing=2.5, transfer_syntax=RLELossless
    )
    datasets = _read(paths)
    assert len(datasets) == 5 and float(datasets[0].SliceThickness) == 2.5
    expected = head_phantom(5, 32, 32, slice_spacing=2.5)
    np.testing.assert_array_equal(np.stack([_hu(ds) for ds in datasets]), expected)


# --------------------------------------------------------------------------------------------
# make_study
# --------------------------------------------------------------------------------------------


def test_study_tree_layout(study: pathlib.Path) -> None:
    assert sorted(p.name for p in study.iterdir() if p.is_dir()) == ["041", "042", "043"]
    assert (study / "README.txt").read_text().startswith("Synthetic brain CT study")
    assert (study / ".DS_Store").is_file()
    assert len(list(study.rglob("Thumbs.db"))) == 1
    for patient in ("041", "042", "043"):
        (study_dir,) = (study / patient).iterdir()
        assert study_dir.name.startswith("CT_HEAD_2024")
        series = sorted(p.name for p in study_dir.iterdir() if p.is_dir())
        assert series[0] == "1_SCOUT" and series[1].startswith("2_HEAD_")
        (scout,) = (study_dir / "1_SCOUT").iterdir()
        scout_ds = pydicom.dcmread(scout)
        assert "LOCALIZER" in scout_ds.ImageType
        axial = pydicom.dcmread(next((study_dir / series[1]).iterdir()))
        assert scout_ds.StudyInstanceUID == axial.StudyInstanceUID
        assert scout_ds.SeriesInstanceUID != axial.SeriesInstanceUID
        assert axial.PatientID == f"PAT{patient}" and str(axial.PatientName).endswith(patient)


def test_study_pixels_reproduce_the_phantom(study: pathlib.Path) -> None:
    plans = sample._plan_study(3, 0)
    assert plans[2].signed is False and plans[2].bits_stored == 12
    for plan in plans:
        (series_dir,) = (study / plan.folder).glob("CT_HEAD_*/2_HEAD_*")
        datasets = sorted(_read(list(series_dir.iterdir())), key=lambda d: d.SliceLocation)
        names = [p.name for p in series_dir.iterdir()]
        assert len(datasets) == plan.n_slices
        volume = np.stack([_hu(ds) for ds in datasets])
        expected = head_phantom(
            plan.n_slices,
            slice_spacing=plan.slice_spacing,
            pixel_spacing=(plan.pixel_spacing, plan.pixel_spacing),
            haemorrhage=plan.haemorrhage,
            seed=plan.seed,
        )
        np.testing.assert_array_equal(volume, expected)
        assert volume[0, 0, 0] == -1000
        middle = volume[plan.n_slices // 2]
        assert 900 <= middle[256].max() <= 1200
        assert 25 <= np.median(middle[246:266, 246:266]) <= 45
        assert sorted(names) != [f"IM_{i:04d}.dcm" for i in range(1, len(names) + 1)]


def test_study_plan_varies_between_patients() -> None:
    plans = sample._plan_study(10, 0)
    assert sum(p.haemorrhage for p in plans) >= 2
    assert len({p.slice_spacing for p in plans}) > 1
    assert len({p.n_slices for p in plans}) > 1
    assert len({p.study_date for p in plans}) > 1
    assert all(0.40 <= p.pixel_spacing <= 0.49 for p in plans)
    assert all(24 <= p.n_slices <= 40 for p in plans)
    assert {(p.slope, p.intercept) for p in plans} > {(1.0, -1024.0)}


def test_study_is_byte_identical_for_the_same_seed(tmp_path: pathlib.Path) -> None:
    kwargs = {"n_patients": 4, "n_slices": (3, 5), "rows": 40, "columns": 40}
    first = _tree_hashes(make_study(tmp_path / "a", seed=7, **kwargs))
    second = _tree_hashes(make_study(tmp_path / "b", seed=7, **kwargs))
    other = _tree_hashes(make_study(tmp_path / "c", seed=8, **kwargs))
    assert first == second
    assert first != other
    assert len(first) == len(second) > 4 * 4


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools' dciodvfy not installed")
def test_sample_files_pass_dciodvfy(tmp_path):
    """dicom3tools checks the files against the standard's module definitions: no errors."""
    root = make_study(tmp_path / "study", n_patients=1, rows=64, columns=64)
    head = sorted(root.glob("*/*/2_*/*.dcm"))[0]
    scout = sorted(root.glob("*/*/1_*/*.dcm"))[0]
    for path in (head, scout):
        result = subprocess.run(
            ["dciodvfy", str(path)], capture_output=True, text=True, check=False
        )
        errors = [line for line in (result.stdout + result.stderr).splitlines() if "Error" in line]
        assert errors == [], (path.name, errors)
