"""scan: one row per instance from headers only, junk recorded as skipped, DICOMDIR used."""

from __future__ import annotations

import numbers
from pathlib import Path

import pydicom
import pytest

import dicomarray
from dicomarray.index import INDEX_COLUMNS

from .conftest import pydicom_file

DICOMDIR_TREE = pydicom_file("MR_small.dcm").parent / "dicomdirtests"


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    from dicomarray.sample import make_study

    return make_study(tmp_path_factory.mktemp("study"), n_patients=3, rows=64, columns=64)


def test_one_row_per_dicom_file_and_junk_skipped(study):
    index = dicomarray.scan(study)
    files = [p for p in study.rglob("*") if p.is_file()]
    dicom = [p for p in files if _is_dicom(p)]
    assert sorted(index["path"]) == sorted(map(str, dicom))
    skipped = {Path(path).name for path, _reason in index.attrs["skipped"]}
    assert {"README.txt", "Thumbs.db"} <= skipped
    assert list(index.columns) == list(INDEX_COLUMNS)


def _is_dicom(path: Path) -> bool:
    try:
        pydicom.dcmread(path, stop_before_pixels=True)
        return True
    except Exception:  # noqa: BLE001
        return False


def test_values_are_plain_python_and_match_pydicom(study):
    index = dicomarray.scan(study)
    for row in index.head(8).itertuples():
        ds = pydicom.dcmread(row.path, stop_before_pixels=True)
        assert row.PatientID == ds.PatientID
        assert row.PatientName == str(ds.PatientName)
        assert row.InstanceNumber == int(ds.InstanceNumber)
        assert row.ImagePositionPatient == [float(v) for v in ds.ImagePositionPatient]
        assert row.Rows == ds.Rows
        assert row.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
        for value in row[1:]:
            assert value is None or isinstance(value, str | numbers.Number | list)
            if isinstance(value, list):
                assert all(isinstance(v, str | numbers.Number) for v in value)


def test_single_file_and_list_of_files(study):
    index = dicomarray.scan(study)
    one = dicomarray.scan(index["path"].iloc[0])
    assert len(one) == 1
    some = dicomarray.scan(list(index["path"].iloc[:5]))
    assert list(some["path"]) == sorted(index["path"].iloc[:5])


def test_non_recursive_scan_stays_in_the_folder(study):
    assert dicomarray.scan(study, recursive=False).empty


def test_threads_do_not_change_the_result(study):
    one = dicomarray.scan(study, workers=1)
    two = dicomarray.scan(study, workers=2)
    assert one.equals(two)


def test_dicomdir_lists_the_files(tmp_path):
    index = dicomarray.scan(DICOMDIR_TREE)
    ds = pydicom.dcmread(DICOMDIR_TREE / "DICOMDIR")
    referenced = {
        str(DICOMDIR_TREE.joinpath(*r.ReferencedFileID))
        for r in ds.DirectoryRecordSequence
        if "ReferencedFileID" in r
    }
    assert set(index["path"]) == referenced
    assert not any(p.endswith("DICOMDIR") for p in index["path"])


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(dicomarray.SeriesNotFoundError, match="no such file"):
        dicomarray.scan(tmp_path / "absent")


def test_truncated_pixel_data_still_indexes(tmp_path):
    data = pydicom_file("CT_small.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: len(data) - 5000])
    index = dicomarray.scan(path)
    assert len(index) == 1 and index["Rows"].iloc[0] == 128
