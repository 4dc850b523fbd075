"""scan: one row per instance from headers only, junk recorded as skipped, DICOMDIR used."""

from __future__ import annotations

import numbers
import os
import shutil
import threading
import warnings
from pathlib import Path

import pandas as pd
import pydicom
import pytest

import dicomarray
import dicomarray.header as header
from dicomarray.index import COLUMN_DTYPES, INDEX_COLUMNS

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
        for column, value in zip(index.columns[1:], row[2:], strict=True):
            if COLUMN_DTYPES[column] == "object":
                assert value is None or isinstance(value, str | list | numbers.Number), column
                if isinstance(value, list):
                    assert all(isinstance(v, str | numbers.Number) for v in value)
            else:
                assert value is pd.NA or isinstance(value, numbers.Number), column
    assert {c: str(t) for c, t in index.dtypes.items()} == COLUMN_DTYPES


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


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(dicomarray.SeriesNotFoundError, match="no such file"):
        dicomarray.scan(tmp_path / "absent")


def test_truncated_pixel_data_still_indexes(tmp_path):
    data = pydicom_file("CT_small.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: len(data) - 5000])
    index = dicomarray.scan(path)
    assert len(index) == 1 and index["Rows"].iloc[0] == 128


# -- DICOMDIR: a hint, never the file list ------------------------------------------------


def instances_by_pydicom(root: Path) -> set[str]:
    """Files pydicom reads as instances (a SOPInstanceUID, not a Media Storage Directory)."""
    found = set()
    for path in root.rglob("*"):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001, S112 - not DICOM: not an instance
            continue
        if "SOPInstanceUID" in ds and ds.file_meta.MediaStorageSOPClassUID != DIRECTORY:
            found.add(str(path))
    return found


DIRECTORY = "1.2.840.10008.1.3.10"


def test_every_file_of_a_dicomdir_tree_is_walked():
    files = [p for p in DICOMDIR_TREE.rglob("*") if p.is_file()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dicomarray.DicomArrayWarning)
        index = dicomarray.scan(DICOMDIR_TREE)
    assert len(files) == 91
    assert set(index["path"]) == instances_by_pydicom(DICOMDIR_TREE)
    assert len(index) + len(index.attrs["skipped"]) == len(files)
    directories = [p for p, reason in index.attrs["skipped"] if "directory record" in reason]
    assert len(directories) == len([p for p in files if p.name.startswith("DICOMDIR")])


def write_file_set(root: Path, n: int) -> list[Path]:
    """A DICOMDIR file set of ``n`` one-slice instances, written by pydicom's FileSet."""
    from pydicom.fileset import FileSet

    from dicomarray.sample import head_phantom, write_series

    staging = root.parent / f"{root.name}-staging"
    hu = head_phantom(n, 8, 8, slice_spacing=5.0, pixel_spacing=(20.0, 20.0))
    paths = write_series(staging, hu, pixel_spacing=(20.0, 20.0))
    file_set = FileSet()
    for path in paths:
        file_set.add(pydicom.dcmread(path))
    file_set.write(root)
    return paths


def test_files_added_after_the_dicomdir_are_indexed_and_warned(tmp_path):
    root = tmp_path / "media"
    paths = write_file_set(root, 3)
    index = dicomarray.scan(root)
    assert len(index) == 3 and index.attrs["notes"] == []
    late = pydicom.dcmread(paths[0])
    late.SOPInstanceUID = pydicom.uid.generate_uid()
    late.save_as(root / "LATE.dcm")
    with pytest.warns(dicomarray.DicomArrayWarning, match="1 instances are not recorded"):
        index = dicomarray.scan(root)
    assert str(root / "LATE.dcm") in set(index["path"]) and len(index) == 4
    assert "records 3 files, the folder holds 4 instances" in index.attrs["notes"][0]


def test_a_dicomdir_given_as_the_path_stands_for_its_folder(tmp_path):
    # users point tools at a CD's DICOMDIR; indexing the directory record alone gave nothing
    root = tmp_path / "media"
    write_file_set(root, 3)
    by_folder = dicomarray.scan(root)
    by_dicomdir = dicomarray.scan(root / "DICOMDIR")
    assert len(by_dicomdir) == 3 and by_dicomdir["path"].tolist() == by_folder["path"].tolist()
    assert by_dicomdir.attrs == by_folder.attrs
    assert len(dicomarray.dicom_filter(root / "DICOMDIR", {})) == 1
    assert dicomarray.open_series(root / "DICOMDIR").sizes["z"] == 3


def test_dicomdir_records_missing_files_are_noted(tmp_path):
    root = tmp_path / "media"
    write_file_set(root, 3)
    victim = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "DICOMDIR")[0]
    victim.unlink()
    with pytest.warns(dicomarray.DicomArrayWarning, match="1 recorded files are missing"):
        index = dicomarray.scan(root)
    assert len(index) == 2


def test_dicomdir_records_outside_the_tree_are_refused_and_never_read(tmp_path, monkeypatch):
    root = tmp_path / "media"
    write_file_set(root, 3)
    outside = tmp_path / "secret.dcm"
    instance = next(p for p in root.rglob("*") if p.is_file() and p.name != "DICOMDIR")
    outside.write_bytes(instance.read_bytes())
    dicomdir = pydicom.dcmread(root / "DICOMDIR")
    images = [r for r in dicomdir.DirectoryRecordSequence if r.DirectoryRecordType == "IMAGE"]
    images[0].ReferencedFileID = ["..", "secret.dcm"]
    images[1].ReferencedFileID = [str(outside)]
    images[2].ReferencedFileID = [".", *images[2].ReferencedFileID]
    dicomdir.save_as(root / "DICOMDIR")
    opened = []
    real_open = header.open_regular
    monkeypatch.setattr(header, "open_regular", lambda p: opened.append(p) or real_open(p))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dicomarray.DicomArrayWarning)
        index = dicomarray.scan(root)
    refused = [(p, r) for p, r in index.attrs["skipped"] if r.startswith("refused")]
    assert len(refused) == 3 and all("outside" in r or "'.'" in r for _, r in refused)
    assert all(Path(p).is_relative_to(root) for p in opened) and opened
    assert str(outside) not in set(index["path"]) and len(index) == 3  # all walked


# -- symbolic links, pipes, devices ---------------------------------------------------------


@pytest.fixture
def linked_tree(tmp_path, study):
    """tree/real/a.dcm; links inside the tree, out of it, in a loop; a file elsewhere."""
    source = next(p for p in study.rglob("*.dcm"))
    tree, elsewhere = tmp_path / "tree", tmp_path / "elsewhere"
    (tree / "real").mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copy(source, tree / "real" / "a.dcm")
    shutil.copy(source, elsewhere / "b.dcm")
    (tree / "inside.dcm").symlink_to(tree / "real" / "a.dcm")
    (tree / "view").symlink_to(tree / "real", target_is_directory=True)
    (tree / "outside.dcm").symlink_to(elsewhere / "b.dcm")
    (tree / "outside_dir").symlink_to(elsewhere, target_is_directory=True)
    (tree / "real" / "loop").symlink_to(tree, target_is_directory=True)
    (tree / "dangling.dcm").symlink_to(tmp_path / "absent.dcm")
    return tree


def reasons(index: pd.DataFrame, tree: Path) -> dict[str, str]:
    return {str(Path(p).relative_to(tree)): r for p, r in index.attrs["skipped"]}


def test_links_inside_the_tree_are_followed_once_links_out_are_not(linked_tree):
    index = dicomarray.scan(linked_tree)
    assert list(index["path"]) == [str(linked_tree / "real" / "a.dcm")]
    why = reasons(index, linked_tree)
    assert "outside the input tree" in why["outside.dcm"]
    assert "outside the input tree" in why["outside_dir"]
    assert "same file" in why["inside.dcm"] and "same folder" in why["view"]
    assert "same folder" in why["real/loop"]
    assert "cannot stat" in why["dangling.dcm"] or "outside" in why["dangling.dcm"]


def test_a_link_inside_the_tree_is_followed(linked_tree):
    index = dicomarray.scan(linked_tree, recursive=False)  # real/ itself is not walked
    assert list(index["path"]) == [str(linked_tree / "inside.dcm")]


def test_symlink_policies_never_and_always(linked_tree):
    never = dicomarray.scan(linked_tree, symlinks="never")
    assert list(never["path"]) == [str(linked_tree / "real" / "a.dcm")]
    assert "not followed" in reasons(never, linked_tree)["inside.dcm"]
    always = dicomarray.scan(linked_tree, symlinks="always")
    assert str(linked_tree / "outside.dcm") in set(always["path"])


def test_a_hard_link_is_read_once(tmp_path, study):
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(next(study.rglob("*.dcm")), tree / "a.dcm")
    os.link(tree / "a.dcm", tree / "b.dcm")
    index = dicomarray.scan(tree)
    assert list(index["path"]) == [str(tree / "a.dcm")]
    assert "same file" in reasons(index, tree)["b.dcm"]


def test_files_named_explicitly_are_read_as_named(linked_tree):
    # the links policy is for what a walk finds; a file the caller names is read
    outside = linked_tree / "outside.dcm"
    for source in (outside, [outside, linked_tree / "real" / "a.dcm"]):
        index = dicomarray.scan(source)
        assert str(outside) in set(index["path"]), source


def test_a_fifo_in_the_tree_is_skipped_without_being_opened(tmp_path, study):
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(next(study.rglob("*.dcm")), tree / "a.dcm")
    os.mkfifo(tree / "pipe")
    result: dict[str, pd.DataFrame] = {}
    for source in (tree, [tree / "a.dcm", tree / "pipe"]):
        thread = threading.Thread(target=lambda s=source: result.update(index=dicomarray.scan(s)))
        thread.start()
        thread.join(timeout=60)
        if thread.is_alive():  # unblock the reader so that the test run can end
            os.open(tree / "pipe", os.O_WRONLY | os.O_NONBLOCK)
            pytest.fail("scan blocked on a named pipe")
        index = result.pop("index")
        assert list(index["path"]) == [str(tree / "a.dcm")]
        assert "named pipe (FIFO)" in reasons(index, tree)["pipe"]
    with pytest.raises(dicomarray.InvalidDicomError, match="named pipe"):
        header.read_header(tree / "pipe")


# -- truncated files and column types --------------------------------------------------------


def test_a_file_cut_inside_its_header_is_skipped_with_its_reason(tmp_path):
    data = pydicom_file("CT_small.dcm").read_bytes()
    pixel_tag = data.rfind(b"\xe0\x7f\x10\x00")
    for cut in (150, 405, 1001, pixel_tag - 3, pixel_tag):
        path = tmp_path / f"cut{cut}.dcm"
        path.write_bytes(data[:cut])
        index = dicomarray.scan(path)
        assert index.empty, cut
        ((_, reason),) = index.attrs["skipped"]
        assert "truncated" in reason


def test_a_file_without_a_sop_instance_uid_is_skipped_with_its_reason(tmp_path):
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    del ds.SOPInstanceUID
    ds.save_as(tmp_path / "anonymous.dcm")
    index = dicomarray.scan(tmp_path)
    assert index.empty
    ((path, reason),) = index.attrs["skipped"]
    assert path == str(tmp_path / "anonymous.dcm") and "SOP Instance UID" in reason


def test_integer_columns_stay_integers_when_a_value_is_missing(tmp_path, make_series):
    paths = make_series("a", tags={"SeriesNumber": 2})
    ds = pydicom.dcmread(paths[0])
    del ds.SeriesNumber
    ds.InstanceNumber = [1, 2]  # malformed: two values in a single-valued tag
    ds.save_as(paths[0])
    index = dicomarray.scan(paths[0].parent)
    assert str(index["SeriesNumber"].dtype) == "Int64"
    assert index["SeriesNumber"].isna().sum() == 1
    assert sorted(str(v) for v in index["SeriesNumber"].dropna().unique()) == ["2"]
    assert str(index["Rows"].dtype) == "Int64" and str(index["SliceThickness"].dtype) == "Float64"
    assert index["InstanceNumber"].isna().sum() == 1
    assert any("InstanceNumber: 1 values" in note for note in index.attrs["notes"])


def test_column_types_do_not_depend_on_the_tree(tmp_path, make_series):
    paths = make_series("a")
    empty = dicomarray.scan([])
    one = dicomarray.scan(paths[:1])
    assert dict(empty.dtypes.astype(str)) == dict(one.dtypes.astype(str)) == COLUMN_DTYPES


def test_a_dicomdir_chained_to_a_dirfile_is_one_file_set(tmp_path):
    root = tmp_path / "media"
    write_file_set(root, 3)
    # as some exporters write it: the DICOMDIR points at a DIRFILE that holds the records
    (root / "STUDY1").mkdir()
    shutil.move(root / "DICOMDIR", root / "STUDY1" / "DIRFILE")
    top = pydicom.dcmread(root / "STUDY1" / "DIRFILE")
    record = pydicom.Dataset()
    record.DirectoryRecordType = "PRIVATE"
    record.ReferencedFileID = ["STUDY1", "DIRFILE"]
    top.DirectoryRecordSequence = pydicom.Sequence([record])
    top.save_as(root / "DICOMDIR")
    with warnings.catch_warnings():
        warnings.simplefilter("error", dicomarray.DicomArrayWarning)
        index = dicomarray.scan(root)
    assert len(index) == 3 and index.attrs["notes"] == []
    directories = {Path(p).name for p, r in index.attrs["skipped"] if "directory record" in r}
    assert directories == {"DICOMDIR", "DIRFILE"}


def test_the_package_reads_a_typed_index_as_plain_values(tmp_path, make_series):
    from dicomarray.index import as_index

    paths = make_series("a")
    ds = pydicom.dcmread(paths[0])
    del ds.SeriesNumber
    ds.save_as(paths[0])
    typed = dicomarray.scan(paths[0].parent)
    plain = as_index(typed[typed["Rows"] == 64])
    numbers = list(plain["SeriesNumber"])
    assert numbers.count(None) == 1 and {type(n) for n in numbers if n is not None} == {int}
    assert {type(v) for v in plain["SliceThickness"]} == {float}
    assert plain.attrs["skipped"] == typed.attrs["skipped"]
