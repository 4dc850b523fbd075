"""to_dicom(deidentify=): a new series over a template full of identifiers carries none of them."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

import dicomarray
from dicomarray import GeometryWarning
from dicomarray.deid import KEY_ENV, Deidentifier
from dicomarray.errors import DeidentificationError
from dicomarray.sample import write_series

from .export_helpers import lazy_hu
from .nd_series import expected_values, open_time_series, write_time_series

KEY = "k" * 32
#: Texts that identify the patient, placed in tags the profile covers.
PLANTED_TAGS = {
    "PatientName": "Zyxwood^Quentina",
    "PatientID": "MRN8675309",
    "OtherPatientIDs": "OPID4471XQ",
    "PatientBirthDate": "19610923",
    "PatientAddress": "12 Larkspur Lane Fernwick",
    "InstitutionName": "Saint Ermintrude Hospital",
    "InstitutionAddress": "Ermintrude Road 9",
    "StationName": "CTSTATION77",
    "ReferringPhysicianName": "Heffernan^Bartholomew",
    "PerformingPhysicianName": "Okonkwo^Adaeze",
    "OperatorsName": "Lindqvist^Tove",
    "AccessionNumber": "ACCX99812",
    "StudyID": "STID5521Q",
    "StudyDescription": "Zyxwood follow-up head",
    "SeriesDescription": "HEAD Quentina 5mm",
    "StudyDate": "20190412",
    "SeriesDate": "20190412",
    "AcquisitionDate": "20190412",
    "ImageComments": "called Quentina on 0171 4960321",
}
#: Planted inside sequences, private blocks and UIDs (values, not keywords).
PLANTED_DEEP = (
    "Nethercott^Ysolde",  # a name three sequences down
    "RPID3310QZ",  # a requested procedure ID two down
    "PRIVATE-Zyxwood-note",  # a private tag
    "PRIVSEQ-Okonkwo",  # a name in a private sequence
    "1.2.826.0.1.3680043.8.498.777001",  # a referenced instance
    "1.2.826.0.1.3680043.8.498.777002",  # a referenced study, nested
)
#: The folder of the template: file and folder names often name the patient.
FOLDER = "Zyxwood_Quentina_MRN8675309"


def _item(**values) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def plant(path: Path) -> None:
    """Add identifiers in nested sequences (three levels), private tags and referenced UIDs."""
    ds = pydicom.dcmread(path)
    ds.private_block(0x0009, "ZYXWOOD CLINIC", create=True).add_new(0x01, "LO", PLANTED_DEEP[2])
    block = ds.private_block(0x0011, "ZYXWOOD SEQ", create=True)
    block.add_new(0x01, "SQ", Sequence([_item(PatientName=PLANTED_DEEP[3])]))
    code = _item(CodeValue="121311", CodingSchemeDesignator="DCM", CodeMeaning="Localizer")
    code.OperatorsName = PLANTED_DEEP[0]  # level 3: ReferencedImage > PurposeOfReference > item
    reference = _item(
        ReferencedSOPClassUID=ds.SOPClassUID,
        ReferencedSOPInstanceUID=PLANTED_DEEP[4],
        PurposeOfReferenceCodeSequence=Sequence([code]),
    )
    ds.ReferencedImageSequence = Sequence([reference])
    study = _item(ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1")
    study.ReferencedSOPInstanceUID = PLANTED_DEEP[5]
    ds.RequestAttributesSequence = Sequence(
        [_item(RequestedProcedureID=PLANTED_DEEP[1], ReferencedStudySequence=Sequence([study]))]
    )
    ds.save_as(path, enforce_file_format=True)


def planted_strings(paths: list[Path]) -> set[str]:
    """Every identifying text of the template: tags, deep values, names, its UIDs and paths."""
    found = {*PLANTED_TAGS.values(), *PLANTED_DEEP, FOLDER, str(paths[0].parent)}
    found |= {"Zyxwood", "Quentina", "Ermintrude", "8675309"}
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        found |= {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID}
        found |= {ds.SOPInstanceUID, path.name}
    return found


def leaks(written: list[Path], planted: set[str]) -> dict[str, list[str]]:
    """The planted strings found in any byte of any written file or its name."""
    found: dict[str, list[str]] = {}
    for path in written:
        content = path.read_bytes() + str(path.relative_to(path.parent.parent)).encode()
        for text in planted:
            if text.encode() in content:
                found.setdefault(text, []).append(path.name)
    return found


def open_quietly(source):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeometryWarning)
        return dicomarray.open_series(source)


@pytest.fixture
def template(phantom, tmp_path) -> list[Path]:
    """The phantom as a CT series whose tags, sequences and folder name identify the patient."""
    paths = write_series(
        tmp_path / FOLDER, phantom, pixel_spacing=(3.6, 3.6), slice_spacing=12.0,
        tags=PLANTED_TAGS,
    )  # fmt: skip
    for path in paths:
        plant(path)
    return paths


@pytest.fixture
def time_template(phantom, tmp_path) -> Path:
    """Three volumes of the phantom (a (t, z, y, x) series), every file planted."""
    folder = tmp_path / FOLDER
    for paths in write_time_series(folder, phantom, 3, pixel_spacing=(3.6, 3.6), slice_spacing=12):
        for path in paths:
            ds = pydicom.dcmread(path)
            for keyword, value in PLANTED_TAGS.items():
                if keyword not in ("SeriesDescription", "StudyDate", "SeriesDate"):
                    setattr(ds, keyword, value)  # the rest stay shared by the volumes
            ds.save_as(path, enforce_file_format=True)
            plant(path)
    return folder


def test_the_template_copied_as_documented_holds_the_planted_strings(template, tmp_path):
    """The check can fail: without deidentify every tag of the template is copied."""
    written = open_quietly(template[0].parent).dicom.to_dicom(tmp_path / "out")
    found = leaks(written, planted_strings(template))
    assert {*PLANTED_TAGS.values(), *PLANTED_DEEP[:4]} <= set(found)


def test_no_planted_string_is_in_any_byte_of_a_deidentified_series(template, tmp_path):
    volume = open_quietly(template[0].parent)
    written = volume.dicom.to_dicom(tmp_path / "out", deidentify=Deidentifier(key=KEY))
    assert len(written) == 12
    assert leaks(written, planted_strings(template)) == {}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"IM_{i:04d}.dcm" for i in range(1, 13)
    ]


def test_copied_uids_are_keyed_as_a_tree_copy_keys_them(template, tmp_path):
    deidentifier = Deidentifier(key=KEY)
    volume = open_quietly(template[0].parent)
    written = volume.dicom.to_dicom(tmp_path / "out", deidentify=deidentifier)
    uid = deidentifier.pseudonyms.uid
    sources = [Path(p) for p in volume["source_file"].values]
    for path, source in zip(written, sources, strict=True):
        ds, old = pydicom.dcmread(path), pydicom.dcmread(source, stop_before_pixels=True)
        assert ds.StudyInstanceUID == uid(old.StudyInstanceUID)
        assert ds.FrameOfReferenceUID == uid(old.FrameOfReferenceUID)
        # the template instance each slice derives from, as the de-identified tree names it
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == uid(old.SOPInstanceUID)
        assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == uid(PLANTED_DEEP[4])
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.SeriesInstanceUID.startswith("2.25.")
        assert ds.SeriesInstanceUID != uid(old.SeriesInstanceUID)  # a new series, not the copy
        assert ds.PatientID == deidentifier.pseudonyms.patient_id(PLANTED_TAGS["PatientID"])
    assert len({pydicom.dcmread(p).SOPInstanceUID for p in written}) == 12
    assert len({pydicom.dcmread(p).SeriesInstanceUID for p in written}) == 1


def test_the_method_is_recorded(template, tmp_path):
    written = open_quietly(template[0].parent).dicom.to_dicom(
        tmp_path / "out", deidentify=Deidentifier(key=KEY)
    )
    ds = pydicom.dcmread(written[3])
    assert ds.PatientIdentityRemoved == "YES"
    assert "113100" in [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert "PatientName" not in ds or not ds.PatientName
    assert not any(element.tag.is_private for element in ds.iterall())


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools' dciodvfy not installed")
def test_dciodvfy_finds_no_errors_in_a_deidentified_series(template, tmp_path):
    volume = open_quietly(template[0].parent)
    written = dicomarray.to_dicom(
        lazy_hu(volume) + 0.25, volume, tmp_path / "out", deidentify=Deidentifier(key=KEY)
    )
    for path in (written[0], written[-1]):
        report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        assert "Error" not in report.stdout + report.stderr, report.stderr


def test_a_deidentified_series_reopens_to_the_same_values_and_geometry(template, tmp_path):
    volume = open_quietly(template[0].parent)
    volume.dicom.to_dicom(tmp_path / "out", deidentify=Deidentifier(key=KEY))
    back = open_quietly(tmp_path / "out")
    assert back.dims == volume.dims
    np.testing.assert_array_equal(lazy_hu(back).values, lazy_hu(volume).values)
    np.testing.assert_allclose(back.dicom.affine, volume.dicom.affine)
    np.testing.assert_allclose(back["z"].values, volume["z"].values)
    for key in ("ImageOrientationPatient", "PixelSpacing"):
        assert back.attrs[key] == volume.attrs[key]


def test_modified_dates_move_by_the_patients_keyed_shift(template, tmp_path):
    deidentifier = Deidentifier(key=KEY, retain_modified_dates=True)
    written = open_quietly(template[0].parent).dicom.to_dicom(
        tmp_path / "out", deidentify=deidentifier
    )
    shift = deidentifier.pseudonyms.date_shift(PLANTED_TAGS["PatientID"])
    expected = (dt.date(2019, 4, 12) + shift).strftime("%Y%m%d")
    ds = pydicom.dcmread(written[0])
    assert expected != PLANTED_TAGS["StudyDate"]
    assert ds.StudyDate == ds.AcquisitionDate == expected
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert "PatientBirthDate" not in ds or not ds.PatientBirthDate


def test_deidentify_true_takes_the_key_from_the_environment(template, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv(KEY_ENV, "e" * 32)
    written = open_quietly(template[0].parent).dicom.to_dicom(tmp_path / "out", deidentify=True)
    expected = Deidentifier(key="e" * 32).pseudonyms.patient_id(PLANTED_TAGS["PatientID"])
    assert pydicom.dcmread(written[0]).PatientID == expected
    assert not (tmp_path / "config").exists()  # no key was generated
    assert leaks(written, planted_strings(template)) == {}


def test_burned_in_annotation_is_refused_naming_the_output_not_the_input(template, tmp_path):
    ds = pydicom.dcmread(template[5])
    ds.BurnedInAnnotation = "YES"
    ds.save_as(template[5], enforce_file_format=True)
    volume = open_quietly(template[0].parent)
    with pytest.raises(DeidentificationError, match="BurnedInAnnotation is YES") as error:
        # the writer itself; the accessor still appends the series label (see the report)
        dicomarray.to_dicom(volume, volume, tmp_path / "out", deidentify=Deidentifier(key=KEY))
    assert str(tmp_path / "out") in str(error.value)
    assert FOLDER not in str(error.value) and "Quentina" not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [FOLDER]  # nothing left behind
    allowed = Deidentifier(key=KEY, allow_burned_in_annotation=True)
    assert len(volume.dicom.to_dicom(tmp_path / "out", deidentify=allowed)) == 12


def test_a_4d_series_is_deidentified_frame_by_frame(time_template, phantom, tmp_path):
    template = open_time_series(time_template)
    files = [Path(p) for p in template["source_file"].values.reshape(-1)]
    written = dicomarray.to_dicom(
        lazy_hu(template), template, tmp_path / "out", deidentify=Deidentifier(key=KEY)
    )
    assert len(written) == 36
    assert leaks(written, planted_strings(files)) == {}
    back = open_quietly(tmp_path / "out")
    assert back.dims == ("t", "z", "y", "x")
    np.testing.assert_array_equal(lazy_hu(back).values, expected_values(phantom, 3))
    np.testing.assert_allclose(back["z"].values, template["z"].values)
    # the basic profile empties AcquisitionTime: the volumes keep their temporal positions
    np.testing.assert_array_equal(back["temporal_position"].values, [1, 2, 3])


def test_a_4d_series_with_modified_dates_keeps_its_times(time_template, tmp_path):
    template = open_time_series(time_template)
    deidentifier = Deidentifier(key=KEY, retain_modified_dates=True)
    dicomarray.to_dicom(lazy_hu(template), template, tmp_path / "out", deidentify=deidentifier)
    back = open_quietly(tmp_path / "out")
    np.testing.assert_allclose(back["t"].values, [0.0, 2.0, 4.0])
    assert back["t"].attrs["units"] == "s"
