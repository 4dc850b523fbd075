"""The sidecar on its own and the de-identification keyword list."""

from __future__ import annotations

import json

import pytest
from pydicom.datadict import tag_for_keyword

import dicomarray
from dicomarray import WriteError
from dicomarray.writers.metadata import (
    DEIDENTIFY_KEYWORDS,
    deidentified,
    keyword_of_coord,
    write_sidecar,
)

from .export_helpers import PATIENT_TAGS, leaked, series_uids, temporaries


def test_every_deidentify_keyword_is_a_dicom_keyword():
    assert not [k for k in DEIDENTIFY_KEYWORDS if tag_for_keyword(k) is None]
    must = {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientAddress",
        "OtherPatientIDs",
        "InstitutionName",
        "InstitutionAddress",
        "ReferringPhysicianName",
        "PerformingPhysicianName",
        "OperatorsName",
        "AccessionNumber",
        "StudyInstanceUID",
    }
    assert must <= DEIDENTIFY_KEYWORDS
    assert not {"Manufacturer", "Modality", "PixelSpacing", "KVP"} & DEIDENTIFY_KEYWORDS


def test_deidentified_reaches_into_sequences():
    attrs = {
        "Modality": "CT",
        "PatientName": "X",
        "RequestAttributesSequence": [{"RequestedProcedureID": "1"}],
        "ProcedureCodeSequence": [{"CodeValue": "A", "CodeMeaning": "B"}],
        "AnatomicRegionSequence": [{"CodeValue": "T-A0100", "PatientID": "X"}],
    }
    assert deidentified(attrs) == {
        "Modality": "CT",
        "AnatomicRegionSequence": [{"CodeValue": "T-A0100"}],
    }


def test_coordinates_map_back_to_keywords():
    assert keyword_of_coord("sop_instance_uid") == "SOPInstanceUID"
    assert keyword_of_coord("rescale_intercept") == "RescaleIntercept"
    assert keyword_of_coord("frame") is None


def test_write_sidecar_alone_reads_no_pixels_and_is_atomic(make_series, tmp_path):
    paths = make_series(tags=PATIENT_TAGS)
    volume = dicomarray.open_series(paths[0].parent)
    path = write_sidecar(volume, tmp_path / "out" / "ct.json", deidentify=True)
    meta = json.loads(path.read_text())
    assert meta["geometry"]["z"] == volume["z"].values.tolist()
    assert leaked(path, series_uids(paths)) == []
    with pytest.raises(WriteError, match="already exists"):
        write_sidecar(volume, path)
    assert temporaries(tmp_path / "out") == []
