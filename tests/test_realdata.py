"""Real scanner data: the ``neurolabusc/dcm_qa_*`` sets that dcm2niix is validated on.

Two groups of tests:

* always run: a few small real files copied into ``tests/data/realdata`` (see its README:
  a Siemens XA10 enhanced multi-frame series, 12 bits stored, and the JPEG-LS copy of the
  ``dcm_qa_ts`` image), checked against pydicom, against the raw file's values and against
  the affine dcm2niix gives them;
* with the whole sets (``../shared/realdata`` beside the repository, or
  ``$DICOMARRAY_REALDATA``; skipped when absent): ``scan``, ``list_series``,
  ``open_series`` and a batch over every set end normally, every failure is a
  ``DicomArrayError`` naming a file, and series that match dcm2niix today keep matching
  (skipped when dcm2niix is not installed).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import xarray as xr

import dicomarray
from benchmarks import compare_dcm2niix as cmp
from dicomarray.batch import convert
from dicomarray.geometry import POSITION_COORDS

from .conftest import XA10_FILES, gunzip

JPEGLS_FILE = "dcm_qa_ts_7_jpegls.dcm.gz"
#: sha256 of the stored values (uint16, little endian) of dcm_qa_ts/In/1.dcm, the raw
#: (Explicit VR Little Endian) file every other file of the set was compressed from.
RAW_TS_SHA256 = "e4943a308aba1b659425d0d0d21e08b38ff690731184b6d7574834b39bccb81a"
#: The affine dcm2niix v1.0.20220720 writes for the two XA10 files (64 x 64 x 6 x 2).
DCM2NIIX_XA10_AFFINE = np.array(
    [
        [-3.375, -1.6875e-12, 2.4e-06, 109.79000091552734],
        [1.6875e-12, 3.375, 2.4e-06, -154.147705078125],
        [3.375e-06, -3.375e-06, 2.4000000953674316, -5.403347492218018],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
#: The set folders of ../shared/realdata.
SETS = (
    "dcm_qa_12bit",
    "dcm_qa_agfa",
    "dcm_qa_enh",
    "dcm_qa_mosaic",
    "dcm_qa_nih",
    "dcm_qa_philips_enh",
    "dcm_qa_ts",
)
needs_dcm2niix = pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="no dcm2niix")


def stored_sha256(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values, dtype="<u2").tobytes()).hexdigest()


# -- the small real files, always ---------------------------------------------------------


def test_real_jpegls_file_decodes_to_the_raw_files_values(tmp_path: Path) -> None:
    (path,) = gunzip([JPEGLS_FILE], tmp_path)
    volume = dicomarray.open_series(path)  # a mosaic of 35 slices, 6 x 6 tiles of 64 x 64
    assert volume.shape == (35, 64, 64)
    np.testing.assert_array_equal(volume.values, raw_ts_slices(path))


def raw_ts_slices(path: Path) -> np.ndarray:
    """The 35 slices of a dcm_qa_ts mosaic as pydicom decodes it, checked to be the raw
    file's values: its 6 x 6 tiles of 64 x 64, row by row (numbered F>>H: z order)."""
    mosaic = pydicom.dcmread(path).pixel_array
    assert stored_sha256(mosaic) == RAW_TS_SHA256
    return mosaic.reshape(6, 64, 6, 64).transpose(0, 2, 1, 3).reshape(36, 64, 64)[:35]


def test_real_enhanced_multiframe_time_points_open_as_one_4d_volume(tmp_path: Path) -> None:
    first, second = gunzip(XA10_FILES, tmp_path)
    volume = dicomarray.open_series(tmp_path)
    assert volume.dims == ("t", "z", "y", "x") and volume.shape == (2, 6, 64, 64)
    references = [pydicom.dcmread(path) for path in (first, second)]
    assert references[0].BitsStored == 12
    values = volume.values
    for t, reference in enumerate(references):
        np.testing.assert_array_equal(values[t], reference.pixel_array)
    assert values.max() < 2**12
    assert not np.array_equal(values[0], values[1])
    # one time point opens from its own file alone
    np.testing.assert_array_equal(dicomarray.open_series([second]).values, values[1])


def test_real_enhanced_multiframe_positions_are_the_per_frame_ones(tmp_path: Path) -> None:
    first, _ = gunzip(XA10_FILES, tmp_path)
    volume = dicomarray.open_series([first])
    frames = pydicom.dcmread(first).PerFrameFunctionalGroupsSequence
    positions = np.array(
        [[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] for f in frames]
    )
    orientation = np.array(
        [float(v) for v in frames[0].PlaneOrientationSequence[0].ImageOrientationPatient]
    )
    along_normal = positions @ np.cross(orientation[:3], orientation[3:])
    ours = np.stack([volume[name].values for name in POSITION_COORDS], axis=1)
    np.testing.assert_allclose(ours, positions[np.argsort(along_normal)], atol=1e-4)
    np.testing.assert_allclose(volume["z"].values, np.sort(along_normal), atol=1e-4)


def test_real_enhanced_multiframe_corners_agree_with_dcm2niix_affine(tmp_path: Path) -> None:
    first, _ = gunzip(XA10_FILES, tmp_path)
    volume = dicomarray.open_series([first])
    ours = volume.dicom.affine
    mapping = cmp.axis_map(ours, DCM2NIIX_XA10_AFFINE)
    assert mapping is not None
    assert [(64, 64, 6)[a] for a in mapping.axes] == list(volume.shape)
    assert cmp.corner_distance(ours, DCM2NIIX_XA10_AFFINE, mapping, volume.shape) < 0.01


# -- the comparison script on data written in the test ----------------------------------


def test_axis_map_finds_permuted_and_flipped_axes() -> None:
    ours = np.array([[0, 0, 0.5, -10], [0, -0.8, 0, 20], [3.0, 0, 0, 5], [0, 0, 0, 1]], dtype=float)
    shape = (4, 5, 6)  # (z, y, x)
    # the same voxels stored (x, y reversed, z) in RAS, as dcm2niix does
    theirs = cmp.LPS_FROM_RAS @ ours @ _index_change(shape)
    mapping = cmp.axis_map(ours, theirs)
    assert mapping == cmp.AxisMap(axes=(2, 1, 0), flipped=(False, True, False))
    assert cmp.corner_distance(ours, theirs, mapping, shape) < 1e-9
    data = np.arange(np.prod(shape)).reshape(shape)
    nifti = np.flip(data, axis=1).transpose(2, 1, 0)
    for k in range(shape[0]):
        np.testing.assert_array_equal(mapping.nifti_slice(nifti, k, shape), data[k])


def _index_change(shape: tuple[int, int, int]) -> np.ndarray:
    """(i, j, k) NIfTI index (x, reversed y, z) to (z, y, x, 1) dicomarray index."""
    change = np.zeros((4, 4))
    change[2, 0] = 1  # i -> x
    change[1, 1], change[1, 3] = -1, shape[1] - 1  # j -> reversed y
    change[0, 2] = 1  # k -> z
    change[3, 3] = 1
    return change


def _volume_set(make_series) -> xr.DataArray:
    """A (t, z, y, x) set of 3 volumes as the n-D core builds it, each with its own values."""
    volume = dicomarray.open_series(make_series()[0].parent)
    volumes = [volume.copy(data=volume.data + 7 * t) for t in range(3)]
    return xr.concat(volumes, dim="t")


def _write_nifti(volume_set: xr.DataArray, order: list[int], path: Path, shift_mm: float = 0):
    """The volumes ``order`` of ``volume_set`` as dcm2niix stores them: (x, y, z, t), RAS,
    float32 modality values; the affine ``shift_mm`` off along x."""
    import nibabel

    slope = float(volume_set.attrs["RescaleSlope"])
    intercept = float(volume_set.attrs["RescaleIntercept"])
    data = volume_set.values[order] * slope + intercept
    # NIfTI index (i, j, k) = dicomarray's (x, y, z)
    to_ours = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
    affine = cmp.LPS_FROM_RAS @ volume_set.dicom.affine @ to_ours
    affine[0, 3] += shift_mm
    stored = data.transpose(3, 2, 1, 0).astype(np.float32)
    nibabel.Nifti1Image(stored if len(order) > 1 else stored[..., 0], affine).to_filename(path)
    return cmp.NiftiOutput(path, "uid", 1)


def test_volume_set_matches_a_4d_nifti_in_another_order(make_series, tmp_path) -> None:
    volume_set = _volume_set(make_series)
    output = _write_nifti(volume_set, [2, 0, 1], tmp_path / "a.nii")
    row = cmp.compare_volume_set(cmp.Comparison("s", cmp.DICOMARRAY_ERROR), volume_set, [output])
    assert row.category == cmp.MATCH, row
    assert (row.volumes, row.nifti_volumes, row.nifti_shapes) == (3, 3, [[64, 64, 12, 3]])
    assert row.volume_order == [1, 2, 0]
    assert row.differing_voxels == 0 and row.geometry_mm < 1e-4


def test_volume_set_matches_volumes_split_over_files(make_series, tmp_path) -> None:
    # dcm2niix writes one file per echo or image type (_e2, _ph): one 4-D, one 3-D here
    volume_set = _volume_set(make_series)
    outputs = [
        _write_nifti(volume_set, [0, 1], tmp_path / "a.nii"),
        _write_nifti(volume_set, [2], tmp_path / "a_e2.nii"),
    ]
    row = cmp.compare_volume_set(cmp.Comparison("s", cmp.DICOMARRAY_ERROR), volume_set, outputs)
    assert row.category == cmp.MATCH, row
    assert row.nifti == "a.nii, a_e2.nii" and row.volume_order == [0, 1, 2]


@pytest.mark.parametrize(
    ("order", "shift_mm", "category"),
    [
        ([0, 1], 0.0, cmp.SHAPE_DIFFERS),  # a volume missing
        ([0, 1, 2, 2], 0.0, cmp.SHAPE_DIFFERS),  # one too many
        ([0, 1, 2], 0.05, cmp.GEOMETRY_OFF),
        ([0, 1, 1], 0.0, cmp.VALUES_DIFFER),  # volume 2 has other values
    ],
)
def test_volume_set_differences_are_found(make_series, tmp_path, order, shift_mm, category):
    volume_set = _volume_set(make_series)
    output = _write_nifti(volume_set, order, tmp_path / "a.nii", shift_mm)
    row = cmp.compare_volume_set(cmp.Comparison("s", cmp.DICOMARRAY_ERROR), volume_set, [output])
    assert row.category == category, row
    if category == cmp.GEOMETRY_OFF:
        assert row.geometry_mm == pytest.approx(0.05, abs=1e-4)
    if category == cmp.VALUES_DIFFER:
        assert row.differing_voxels == 12 * 64 * 64  # every voxel of volume 2, by 7
        assert row.max_abs_diff == pytest.approx(7.0)


class _Panic(BaseException):
    """Like pyo3's PanicException: not an Exception."""


@needs_dcm2niix
def test_comparison_matches_written_series_and_survives_a_failing_one(
    make_series, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "set"
    make_series("set/axial", seed=1, tags={"SeriesNumber": 2})
    coronal = (1, 0, 0, 0, 0, -1)
    make_series("set/coronal", seed=2, orientation=coronal, tags={"SeriesNumber": 3})
    failing_files = make_series("set/failing", seed=3, tags={"SeriesNumber": 4})
    failing_uid = pydicom.dcmread(failing_files[0]).SeriesInstanceUID
    opened = dicomarray.open_series

    def failing(source, uid=None, **kwargs):
        if uid == failing_uid:
            raise _Panic("decoder panicked")
        return opened(source, uid, **kwargs)

    monkeypatch.setattr(dicomarray, "open_series", failing)
    rows, summary = cmp.compare_set(root, tmp_path / "work")
    by_number = {row.series_number: row for row in rows}
    assert sorted(by_number) == [2, 3, 4]
    for number in (2, 3):
        assert by_number[number].category == cmp.MATCH, by_number[number]
        assert by_number[number].geometry_mm < cmp.GEOMETRY_TOL_MM
        assert by_number[number].differing_voxels == 0
    assert by_number[4].category == cmp.DICOMARRAY_ERROR
    assert "_Panic: decoder panicked" in by_number[4].error
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{cmp.README_START}\nold counts\n{cmp.README_END}\n\nafter\n")
    counts = cmp.write_results(rows, [summary], tmp_path / "out", readme)
    assert counts[cmp.MATCH] == 2
    assert "| match | 2 |" in (tmp_path / "out" / "dcm2niix_comparison.md").read_text()
    text = readme.read_text()
    assert "old counts" not in text and text.endswith("\n\nafter\n")
    lines = {line.split(" | ")[0]: line for line in text.splitlines()}
    assert lines["| match"].startswith("| match | 2 | set #2 (") and "set #3 (" in lines["| match"]
    assert lines["| dicomarray error"].startswith("| dicomarray error | 1 | set #4 (")
    assert "set #2" in cmp.text_table(rows) and "verdict" in cmp.text_table(rows)


def test_readme_counts_are_those_of_the_committed_results() -> None:
    document = json.loads((cmp.RESULTS / "dcm2niix_comparison.json").read_text())
    rows = [cmp.Comparison(**row) for row in document["series"]]
    assert cmp.readme_block(rows, document) in cmp.README.read_text()


def test_readme_without_the_markers_is_left_alone(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("no block here\n")
    with pytest.raises(ValueError, match="no .* block"):
        cmp.update_readme(readme, "counts")
    assert readme.read_text() == "no block here\n"


# -- the whole sets, when present --------------------------------------------------------


@pytest.fixture(scope="module")
def realdata() -> Path:
    root = cmp.default_realdata()
    if root is None:
        pytest.skip("no realdata folder (../shared/realdata or $DICOMARRAY_REALDATA)")
    return root


class ReadableSets:
    """Each set as dicomarray reads it: gzipped DICOM files gunzipped into a copy, once."""

    def __init__(self, root: Path, work: Path) -> None:
        self.root, self.work = root, work
        self.ready: dict[str, Path] = {}

    def __call__(self, name: str) -> Path:
        if name not in self.ready:
            folder = self.root / name
            if not folder.is_dir():
                pytest.skip(f"{name} is not in the realdata folder")
            zipped = cmp.gzipped_dicom_files(folder)
            self.ready[name] = cmp.gunzipped_copy(folder, zipped, self.work)
        return self.ready[name]


@pytest.fixture(scope="module")
def readable_sets(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> ReadableSets:
    return ReadableSets(realdata, tmp_path_factory.mktemp("realdata"))


@pytest.mark.parametrize("name", SETS)
def test_scan_and_list_series_run_on_every_set(readable_sets, name: str) -> None:
    folder = readable_sets(name)
    index = dicomarray.scan(folder)
    assert len(index) > 0
    for path, reason in index.attrs["skipped"]:
        assert Path(path).is_relative_to(folder) and reason
    table = dicomarray.list_series(index)
    assert sorted(table["SeriesInstanceUID"]) == sorted(index["SeriesInstanceUID"].unique())


@pytest.mark.parametrize("name", SETS)
def test_every_series_opens_or_fails_with_an_error_naming_a_file(readable_sets, name: str) -> None:
    folder = readable_sets(name)
    index = dicomarray.scan(folder)
    for uid, rows in index.groupby("SeriesInstanceUID"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", dicomarray.DicomArrayWarning)
                volume = dicomarray.open_series(index, uid)
                assert volume.isel(z=[0, -1]).values.size  # the first and last slices decode
        except dicomarray.DicomArrayError as exc:
            assert any(str(path) in str(exc) for path in [*rows["path"], folder]), exc


@pytest.mark.parametrize("name", SETS)
def test_batch_over_every_set_ends_with_a_report(readable_sets, name: str, tmp_path) -> None:
    folder = readable_sets(name)
    image_series = dicomarray.scan(folder).dropna(subset=["Rows"])["SeriesInstanceUID"]
    report = convert(folder, tmp_path / "out", formats=("npy",), workers=0, progress=False)
    written = pd.read_csv(tmp_path / "out" / "report.csv")
    assert sorted(written["SeriesInstanceUID"]) == sorted(image_series.unique())
    assert len(report) == len(written)
    errors = written.loc[written["status"] == "failed", "error"]
    assert all(isinstance(error, str) and error for error in errors), errors


def test_every_transfer_syntax_of_dcm_qa_ts_decodes_to_the_raw_values(readable_sets) -> None:
    folder = readable_sets("dcm_qa_ts")
    files = sorted((folder / "In").glob("*.dcm"))
    assert len(files) == 9
    raw = raw_ts_slices(folder / "In" / "1.dcm")
    for path in files:
        np.testing.assert_array_equal(dicomarray.open_series([path]).values, raw, err_msg=path)


SIGNED_12BIT = (
    "dcm2niix v1.0.20220720 does not sign-extend 12 bits stored from the high bit: the set's "
    "README reads its 0x0F0F stripes as -241, dcm2niix as 3855 (test_mosaic checks them)"
)
#: Set by hand to also run the three classic Philips series of 574 to 4725 files (not by
#: default: they take minutes, most of it gunzipping and scanning; the comparison script
#: covers them).
FULL_ENV = "DICOMARRAY_REALDATA_FULL"
_BIG = pytest.mark.skipif(
    not os.environ.get(FULL_ENV), reason=f"hundreds of files: set ${FULL_ENV}=1 to run"
)
#: Every series of ../shared/realdata that dcm2niix converts: its files (a pattern under
#: the realdata folder, gzipped ones gunzipped), its (0020,0011) Series Number (None:
#: the files hold one series), and why it fails today (None: it must pass).
DCM2NIIX_SERIES = [
    # three 12-bit copies of one mosaic, one Series Instance UID: one test each
    *[
        (f"12bit-{name}", f"dcm_qa_12bit/In/{name}.dcm", None, reason)
        for name, reason in (
            ("12bitSigned_0x0F0F", SIGNED_12BIT),
            ("12bitUnsigned", None),
            ("12bitUnsigned_0x0F0F", None),
        )
    ],
    ("agfa-Agfa", "dcm_qa_agfa/Agfa/*.img", 11, None),
    ("agfa-Siemens", "dcm_qa_agfa/Siemens/*.img", 11, None),
    ("enh-Siemens-XA10", "dcm_qa_enh/In/Siemens/XA10/*.dcm", 6, None),
    ("enh-Philips-fMAP", "dcm_qa_enh/In/Philips/*.dcm", 801, None),
    *[
        (f"mosaic-{name}", f"dcm_qa_mosaic/In/{name}/*.dcm", None, None)
        for name in (
            "ep2d_Asc_2",
            "ep2d_Int_4",
            "ep2d_Int_HF_5",
            "cmrr_Asc_6",
            "cmrr_Asc_HF_7",
            "cmrr_Int_8",
            "cmrr_Int_HF_9",
            "ep2d_Asc_HF_10",
        )
    ],
    *[(f"nih-GE-{n}", f"dcm_qa_nih/In/20180918GE/mr_000{n}/*", None, None) for n in (4, 5, 6, 7)],
    *[(f"nih-Si-{n}", f"dcm_qa_nih/In/20180918Si/mr_000{n}/*", None, None) for n in (3, 4, 5, 6)],
    ("philips-cl-1301", "dcm_qa_philips_enh/In/cl/1301_*.dcm.gz", None, None),
    ("philips-cl-1901", "dcm_qa_philips_enh/In/cl/1901_*.dcm.gz", None, None),
    ("philips-cl-1903", "dcm_qa_philips_enh/In/cl/1903_*.dcm.gz", None, None),
    ("philips-cl-2001", "dcm_qa_philips_enh/In/cl/2001_*.dcm.gz", None, None),
    pytest.param(
        "philips-cl-2101", "dcm_qa_philips_enh/In/cl/2101_*.dcm.gz", None, None, marks=_BIG
    ),
    pytest.param(
        "philips-cl-2201", "dcm_qa_philips_enh/In/cl/2201_*.dcm.gz", None, None, marks=_BIG
    ),
    pytest.param(
        "philips-cl-2301", "dcm_qa_philips_enh/In/cl/2301_*.dcm.gz", None, None, marks=_BIG
    ),
    ("philips-enh-1901", "dcm_qa_philips_enh/In/enh/1901_WIP_3DpCASL_real.dcm.gz", None, None),
    ("philips-enh-1903", "dcm_qa_philips_enh/In/enh/1903_WIP_SOURCE_-_3DpCASL.dcm.gz", None, None),
    ("philips-enh-2001", "dcm_qa_philips_enh/In/enh/2001_*_e2_phMag.dcm.gz", None, None),
    # the transfer-syntax copies of one mosaic that dcm2niix decodes (not 7 and 8: JPEG-LS)
    ("ts", "dcm_qa_ts/In/[1234569].dcm", None, None),
]


class Conversions:
    """Each series' files gathered (gunzipped) into a folder and converted by dcm2niix,
    once per test session."""

    def __init__(self, root: Path, work: Path) -> None:
        self.root, self.work = root, work
        self.done: dict[str, tuple[Path, list[cmp.NiftiOutput]]] = {}

    def __call__(self, name: str, pattern: str) -> tuple[Path, list[cmp.NiftiOutput]]:
        if name not in self.done:
            files = sorted(p for p in self.root.glob(pattern) if p.is_file())
            if not files:
                pytest.skip(f"{pattern} is not in the realdata folder")
            source = self.work / name
            gather(files, source)
            cmp.run_dcm2niix(source, self.work / f"{name}-nifti")
            self.done[name] = (source, cmp.nifti_outputs(self.work / f"{name}-nifti"))
        return self.done[name]


def gather(files: list[Path], folder: Path) -> None:
    """Copy ``files`` into ``folder``, gunzipping the ``.gz`` ones."""
    folder.mkdir(parents=True)
    for path in files:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as src, open(folder / path.stem, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            shutil.copyfile(path, folder / path.name)


@pytest.fixture(scope="session")
def conversions(tmp_path_factory: pytest.TempPathFactory) -> Conversions:
    root = cmp.default_realdata()
    if root is None:
        pytest.skip("no realdata folder (../shared/realdata or $DICOMARRAY_REALDATA)")
    return Conversions(root, tmp_path_factory.mktemp("dcm2niix"))


def _xfail_today(params: list) -> list:
    """Each series, an expected failure (strict: it must flip) when it names a reason."""
    marked = []
    for param in params:
        values, marks = (
            (param.values, list(param.marks)) if hasattr(param, "values") else (param, [])
        )
        if values[-1] is not None:
            marks.append(pytest.mark.xfail(strict=True, reason=values[-1]))
        marked.append(pytest.param(*values[:-1], marks=marks, id=values[0]))
    return marked


@needs_dcm2niix
@pytest.mark.parametrize(("name", "pattern", "number"), _xfail_today(DCM2NIIX_SERIES))
def test_series_equals_dcm2niix(conversions, name: str, pattern: str, number) -> None:
    """dicomarray's volume set equals dcm2niix's outputs: shapes up to axis order, every
    corner within 0.01 mm through each file's affine, every volume's values (the stored
    values where dcm2niix used Philips' private precise scale, as the note says)."""
    source, outputs = conversions(name, pattern)
    assert outputs, f"dcm2niix converted nothing in {pattern}"
    index = dicomarray.scan(source)
    table = dicomarray.list_series(index)
    uids = {o.series_uid for o in outputs}
    series = table[table["SeriesInstanceUID"].isin(uids)]
    if number is not None:
        series = series[series["SeriesNumber"] == number]
    assert len(series) == 1, series
    row, _ = cmp.compare_series(name, index, series.iloc[0], outputs)
    assert row.error is None, row.error
    assert row.category in (cmp.MATCH, cmp.VALUES_DIFFER), row
    assert row.volumes == row.nifti_volumes, row
    assert row.geometry_mm is not None and row.geometry_mm <= cmp.GEOMETRY_TOL_MM, row
    assert row.stored_differing_voxels == 0, row
    if row.differing_voxels:
        assert any("Philips' private precise scaling" in note for note in row.notes), row
