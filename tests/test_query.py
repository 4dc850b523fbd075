"""dicom_filter and its rule language, Series records, list_series, read_tags, read_pixels."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

import dicomarray
from dicomarray.query import (
    RuleError,
    compile_rule,
    dicom_filter,
    list_series,
    read_pixels,
    read_tags,
)

from .conftest import pydicom_file


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


def test_filter_on_a_tag_the_index_does_not_hold(study):
    found = dicom_filter(study, {"KVP": {"min": 100}, "ConvolutionKernel": "H*"})
    assert found and all(s.meta["Modality"] == "CT" for s in found)


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


def test_read_pixels_matches_pydicom():
    path = pydicom_file("CT_small.dcm")
    np.testing.assert_array_equal(read_pixels(path), pydicom.dcmread(path).pixel_array)
    with pytest.raises(dicomarray.DicomArrayError, match="rtplan"):
        read_pixels(pydicom_file("rtplan.dcm"))
