"""dicom_filter and its rule language, Series records, list_series, read_tags, read_pixels."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pydicom
import pytest
import xarray as xr

import dicomarray
from dicomarray.query import (
    RuleError,
    compile_rule,
    dicom_filter,
    list_series,
    read_pixels,
    read_tags,
)

from .conftest import UNEVEN_POSITIONS, XA10_FILES, gunzip, pydicom_file


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from dicomarray.sample import make_study

    return make_study(tmp_path_factory.mktemp("study"), n_patients=3, rows=64, columns=64)


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        ("CT", "CT", True),
        ("CT", " CT ", True),
        ("CT", "ct", False),
        ("*HEAD*", "CT HEAD 5mm", True),
        ("HEAD?", "HEADS", True),
        (["MR", "CT"], "CT", True),
        ({"min": 2, "max": 5}, 5, True),
        ({"min": 2, "max": 5}, "5.5", False),
        ({"min": 2}, None, False),
        ({"regex": "^AX"}, "AXIAL", True),
        ({"not": "LOCALIZER"}, ["ORIGINAL", "PRIMARY", "LOCALIZER"], False),
        ({"not": "LOCALIZER"}, ["ORIGINAL", "PRIMARY", "AXIAL"], True),
        ({"not": {"min": 3}}, 2, True),
        ("LOCALIZER", ["ORIGINAL", "PRIMARY", "LOCALIZER"], True),
        (5, "5", True),
        (2.5, 2.5, True),
    ],
)
def test_rules(rule, value, expected):
    assert compile_rule("Any", rule)(value) is expected


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"NotAKeyword": 1}, "NotAKeyword"),
        ({"Modality": {"between": 1}}, "Modality"),
        ({"SliceThickness": {"min": "thin"}}, "SliceThickness"),
        ({"SeriesDescription": {"regex": "("}}, "SeriesDescription"),
        ({"Modality": object()}, "Modality"),
    ],
)
def test_bad_configs_name_the_problem(study, config, message):
    with pytest.raises(RuleError, match=message):
        dicom_filter(study, config)
    assert issubclass(RuleError, ValueError)


def test_filter_head_series_sorted_with_files_in_slice_order(study):
    found = dicom_filter(str(study), {"Modality": "CT", "ImageType": {"not": "LOCALIZER"}})
    assert [s.meta["PatientID"] for s in found] == ["PAT041", "PAT042", "PAT043"]
    for series in found:
        z = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in series.files]
        assert z == sorted(z)
        volume = series.open()
        assert volume.sizes["z"] == len(series.files) > 20


def test_filter_derived_keys_and_json_config(study, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"is_localizer": True, "n_slices": {"max": 1}}))
    found = dicom_filter(study, config)
    assert len(found) == 3 and all(len(s.files) == 1 for s in found)
    assert dicom_filter(study, {"n_slices": {"min": 1000}}) == []


def test_n_slices_counts_the_frames_of_multi_frame_files(tmp_path):
    # two real Siemens XA10 enhanced files of 6 frames each: 12 slices in 2 files
    gunzip(XA10_FILES, tmp_path)
    assert [len(s.files) for s in dicom_filter(tmp_path, {"n_slices": {"min": 12}})] == [2]
    assert dicom_filter(tmp_path, {"n_slices": {"min": 13}}) == []


def test_filter_on_a_tag_the_index_does_not_hold(study):
    found = dicom_filter(study, {"KVP": {"min": 100}, "ConvolutionKernel": "H*"})
    assert found and all(s.meta["Modality"] == "CT" for s in found)


def test_a_series_record_opens_its_own_rows_without_scanning(study, monkeypatch):
    import dicomarray.index

    (series, *_) = dicom_filter(study, {"KVP": {"min": 100}, "ImageType": {"not": "LOCALIZER"}})
    assert list(series.rows["path"].sort_values()) == sorted(series.files)
    from_files = dicomarray.open_series(list(series.files), series.uid)
    monkeypatch.setattr(dicomarray.index, "scan", lambda *a, **k: pytest.fail("scanned again"))
    volume = series.open()
    assert list(volume["source_file"].values) == list(from_files["source_file"].values)
    xr.testing.assert_identical(volume, from_files)


def test_list_series(study):
    table = list_series(study)
    assert len(table) == 6
    head = table[table["orientation"] == "AXIAL"]
    assert list(head["PatientID"]) == ["PAT041", "PAT042", "PAT043"]
    assert (table[table["orientation"] == "SAGITTAL"]["instances"] == 1).all()


def test_read_tags_flattens_sequences_and_hides_bytes():
    table = read_tags(pydicom_file("CT_small.dcm"))
    assert {"tag", "keyword", "name", "VR", "value"} <= set(table.columns)
    pixel = table[table["keyword"] == "PixelData"].iloc[0]
    assert pixel["value"] == "<32768 bytes>"
    nested = read_tags(pydicom_file("rtplan.dcm"))
    assert nested["path"].str.contains(r"\[0\]\.").any()


def test_read_tags_survives_a_malformed_element_and_deep_nesting(make_series, monkeypatch):
    from dicomarray import header
    from dicomarray.query import MAX_TABLE_DEPTH

    from .test_volume import save_with_nested_sequence

    monkeypatch.setattr(header, "DEFAULT_LIMITS", header.HeaderLimits(max_depth=400))
    path = make_series()[0]
    save_with_nested_sequence([path], levels=300)
    raw = bytearray(path.read_bytes())
    at = raw.find(b"\x18\x00\x50\x00DS")  # SliceThickness: 4 bytes, read as FD needs 8
    assert int.from_bytes(raw[at + 6 : at + 8], "little") % 8
    raw[at + 4 : at + 6] = b"FD"
    path.write_bytes(bytes(raw))
    table = read_tags(path)
    assert table["value"].str.contains("nested deeper than").sum() == 1
    assert table["path"].str.count(r"\[0\]").max() == MAX_TABLE_DEPTH
    assert "PatientID" in set(table["keyword"])
    assert table[table["tag"] == "(0018,0050)"]["value"].str.startswith("<unreadable").all()


def test_read_pixels_matches_pydicom():
    path = pydicom_file("CT_small.dcm")
    np.testing.assert_array_equal(read_pixels(path), pydicom.dcmread(path).pixel_array)
    with pytest.raises(dicomarray.DicomArrayError, match="rtplan"):
        read_pixels(pydicom_file("rtplan.dcm"))


def _edit(path, **tags):
    """Rewrite one file with some tags changed (a file made for the test, never an input)."""
    ds = pydicom.dcmread(path)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.save_as(path)


@pytest.fixture
def tree_with_bad_series(make_series, tmp_path):
    """Three series: one clean, one with two slices at one position, one with 0 frames."""
    good = make_series("good", tags={"SeriesInstanceUID": "1.2.826.0.1.1", "SeriesNumber": 1})
    twins = make_series("twins", tags={"SeriesInstanceUID": "1.2.826.0.1.2", "SeriesNumber": 2})
    copy = tmp_path / "twins" / "twin.dcm"
    copy.write_bytes(twins[4].read_bytes())
    _edit(copy, SOPInstanceUID="1.2.826.0.1.2.99")  # another instance at slice 4's place
    zero = make_series("zero", tags={"SeriesInstanceUID": "1.2.826.0.1.3", "SeriesNumber": 3})
    _edit(zero[0], NumberOfFrames=0)
    return tmp_path, good


def test_selection_compares_tags_and_never_assembles(tree_with_bad_series):
    root, good = tree_with_bad_series
    found = dicom_filter(root, {"Modality": "CT"})
    assert [s.uid for s in found] == ["1.2.826.0.1.1", "1.2.826.0.1.2", "1.2.826.0.1.3"]
    assert len(list_series(root)) == 3
    # the errors belong to the series and come when each is opened
    with pytest.raises(dicomarray.AssemblyError, match="do not form a full grid") as caught:
        found[1].open()
    assert "twin.dcm" in str(caught.value)  # the files at one position are named
    with pytest.raises(dicomarray.PixelDataError, match="NumberOfFrames 0"):
        found[2].open()
    assert found[0].open().sizes["z"] == len(good)
    z = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in found[0].files]
    assert z == sorted(z)


def test_selection_survives_a_header_that_cannot_be_read(tree_with_bad_series):
    """A tag the index lacks is read from each header; one unreadable file fails alone."""
    root, good = tree_with_bad_series
    index = dicomarray.scan(root)
    broken = str(good[0])
    good[0].write_bytes(good[0].read_bytes()[:300])  # cut short after the scan
    found = dicom_filter(index, {"KVP": {"min": 1}})
    assert broken not in found[0].files and len(found[0].files) == len(good) - 1


def test_list_series_has_folders_and_integers_stay_integers(make_series, tmp_path):
    numbered = make_series("numbered", tags={"SeriesNumber": 2})
    unnumbered = make_series("unnumbered", tags={"SeriesNumber": None}, seed=3)
    table = list_series(tmp_path)
    assert str(table["SeriesNumber"].dtype) == "Int64"
    assert str(table["rows"].dtype) == str(table["instances"].dtype) == "Int64"
    by_folder = table.set_index("folder")
    assert by_folder.loc[str(numbered[0].parent), "SeriesNumber"] == 2
    assert by_folder.loc[str(unnumbered[0].parent), "SeriesNumber"] is pd.NA
    assert "2.0" not in table[["SeriesNumber", "rows", "columns"]].to_string()


@pytest.mark.parametrize("dtype", ["Int64", "float64", "object"])
def test_selection_and_opening_accept_every_index_column_type(tmp_path, make_series, dtype):
    """NumberOfFrames 6.0 (a float column holding a None) must still open a multi-frame file."""
    from .test_volume import write_multiframe

    single = make_series("single")
    enhanced = tmp_path / "enhanced" / "mf.dcm"
    enhanced.parent.mkdir()
    frames = np.zeros((6, 8, 8), np.int16)
    write_multiframe(enhanced, frames, z=[2.0 * i for i in range(6)])
    index = dicomarray.scan(tmp_path)
    integers = ["NumberOfFrames", "Rows", "Columns", "SeriesNumber", "InstanceNumber"]
    index = index.astype({c: dtype for c in integers})
    (series,) = [s for s in dicom_filter(index, {"NumberOfFrames": 6})]
    assert series.open().sizes["z"] == 6
    volume = dicomarray.open_series(index[index["path"].isin(map(str, single))])
    assert volume.sizes["z"] == len(single)
    assert volume.instance_number.dtype == np.int64


def test_list_series_describes_a_series_by_its_images(make_series, tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    paths = make_series("s", tags={"SeriesInstanceUID": "1.2.826.0.1.5"})
    raw = Dataset()  # a raw-data object of the same series, first by path
    raw.file_meta = FileMetaDataset()
    raw.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    raw.SOPClassUID = raw.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66"
    raw.SOPInstanceUID = raw.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.5.1"
    raw.SeriesInstanceUID = "1.2.826.0.1.5"
    raw.save_as(paths[0].parent / "0000_raw.dcm", enforce_file_format=True)
    (row,) = list_series(tmp_path).to_dict("records")
    assert (row["rows"], row["columns"], row["instances"]) == (64, 64, len(paths) + 1)
    assert row["SeriesDescription"] == pydicom.dcmread(paths[0]).SeriesDescription


PLANES = {
    "AXIAL": (1, 0, 0, 0, 1, 0),
    "CORONAL": (1, 0, 0, 0, 0, -1),
    "SAGITTAL": (0, 1, 0, 0, 0, -1),
    # normal (0, 0.71, 0.71): 45 degrees from both axial and coronal
    "OBLIQUE": (1, 0, 0, 0, 2**-0.5, -(2**-0.5)),
}


def test_list_series_names_the_plane_and_the_one_slice_spacing(tmp_path):
    from dicomarray.sample import write_series

    hu = np.zeros((4, 8, 8))
    for seed, (plane, orientation) in enumerate(PLANES.items()):
        write_series(tmp_path / plane, hu, orientation=orientation, slice_spacing=2.5, seed=seed)
    table = list_series(tmp_path).set_index("folder")
    for plane in PLANES:
        row = table.loc[str(tmp_path / plane)]
        assert (row["orientation"], row["slice_spacing"]) == (plane, pytest.approx(2.5))


def test_list_series_shows_no_single_spacing_for_an_uneven_series(tmp_path):
    from dicomarray.sample import write_series

    write_series(
        tmp_path / "ge", np.zeros((28, 8, 8)), slice_spacing=4.0, positions=UNEVEN_POSITIONS
    )
    (row,) = list_series(tmp_path).to_dict("records")
    assert pd.isna(row["slice_spacing"]) and row["instances"] == 28
    # beside a regular series the column stays nullable: <NA>, never NaN or None
    write_series(tmp_path / "even", np.zeros((4, 8, 8)), slice_spacing=5.0, seed=1)
    table = list_series(tmp_path).set_index("instances")
    assert str(table["slice_spacing"].dtype) == "Float64"
    assert table.loc[28, "slice_spacing"] is pd.NA and table.loc[4, "slice_spacing"] == 5.0


@pytest.mark.parametrize(
    ("orientation", "positions", "expected"),
    [
        (PLANES["AXIAL"], [[0, 0, 10], [0, 0, 0], [0, 0, 5]], ("AXIAL", 5.0)),  # any order
        (PLANES["AXIAL"], [[0, 0, 0], [0, 0, 5], [0, 0, 0], [0, 0, 5]], ("AXIAL", None)),  # 4-D
        (PLANES["AXIAL"], [[0, 0, 0], None], ("AXIAL", None)),
        (PLANES["AXIAL"], [[0, 0, 0]], ("AXIAL", None)),
        (PLANES["SAGITTAL"], [[0, 0, 0], [-3, 0, 0]], ("SAGITTAL", 3.0)),
        ([1, 0, 0, 1, 0, 0], [[0, 0, 0], [0, 0, 5]], (None, None)),  # parallel cosines
        ("junk", None, (None, None)),
    ],
)
def test_the_plane_of_tag_values(orientation, positions, expected):
    from dicomarray.geometry import plane_of_tags

    found = plane_of_tags(orientation, positions)
    assert (found["plane"], found["slice_spacing"]) == expected
