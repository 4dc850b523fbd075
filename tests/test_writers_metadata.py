"""The sidecar on its own and the de-identification keyword list."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
import xarray as xr
from pydicom.datadict import tag_for_keyword

import dicomarray
from dicomarray import GeometryWarning, WriteError
from dicomarray.writers.metadata import (
    DEIDENTIFY_KEYWORDS,
    bids_fields,
    deidentified,
    keyword_of_coord,
    write_sidecar,
)

from .conftest import UNEVEN_POSITIONS
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


def test_an_uneven_stack_has_no_slice_spacing_and_its_two_blocks_in_the_sidecar(
    make_series, tmp_path
):
    hu = np.zeros((len(UNEVEN_POSITIONS), 8, 8))
    paths = make_series(hu=hu, positions=UNEVEN_POSITIONS, origin=(0.0, 0.0, 0.0))
    with pytest.warns(GeometryWarning):
        volume = dicomarray.open_series(paths[0].parent)
    geometry = json.loads(write_sidecar(volume, tmp_path / "ct.json").read_text())["geometry"]
    assert geometry["dims"] == ["z", "y", "x"]
    assert geometry["spacing"] == [None, 3.6, 3.6]  # not the 4 mm median
    assert geometry["regular"] is False
    assert geometry["slice_steps"] == [
        {"steps": 13, "mm": 4.0, "first_slice": 0, "last_slice": 13},
        {"steps": 14, "mm": 7.0, "first_slice": 13, "last_slice": 27},
    ]
    assert geometry["slice_steps_text"].startswith("two blocks: 14 slices at 4 mm, then 14 at 7")
    assert geometry["z"] == UNEVEN_POSITIONS


def test_the_geometry_follows_the_arrays_dim_order(make_series, tmp_path):
    with pytest.warns(GeometryWarning, match="tilt"):
        volume = dicomarray.open_series(make_series(tilt_degrees=18.5)[0].parent)
    turned = volume.isel(y=slice(None, None, -1)).transpose("x", "z", "y")
    geometry = json.loads(write_sidecar(turned, tmp_path / "ct.json").read_text())["geometry"]
    assert geometry["dims"] == ["x", "z", "y"]
    # the slice planes are 12 mm apart along the tilted step, 12 cos(18.5) along the normal
    np.testing.assert_allclose(geometry["spacing"], [3.6, 12.0 * np.cos(np.radians(18.5)), 3.6])
    assert geometry["axis_codes"] == "LSA"  # columns to the left, slices up, rows flipped
    assert geometry["tilt_degrees"] == pytest.approx(18.5, abs=1e-3)
    # the affine maps each voxel of the turned array onto the file's own position
    last = [0, volume.sizes["z"] - 1, 0, 1]  # (x, z, y): first column, last slice, last row
    ipp = pydicom.dcmread(volume["source_file"].values[-1]).ImagePositionPatient
    column_direction = np.array([0.0, 1.0, 0.0])  # of the axial IOP: increasing row
    expected = np.asarray(ipp, float) + column_direction * 3.6 * (volume.sizes["y"] - 1)
    np.testing.assert_allclose((np.array(geometry["affine"]) @ last)[:3], expected, atol=1e-6)


def test_deidentified_sidecars_leave_out_the_source_file_paths(make_series, tmp_path):
    paths = make_series(folder="PID-8675309_SECRETIVE")
    volume = dicomarray.open_series(paths[0].parent)
    plain = json.loads(write_sidecar(volume, tmp_path / "plain.json").read_text())
    assert plain["varying"]["source_file"] == volume["source_file"].values.tolist()
    anonymous = write_sidecar(volume, tmp_path / "anon.json", deidentify=True)
    assert b"PID-8675309" not in anonymous.read_bytes()
    assert "source_file" not in json.loads(anonymous.read_text())["varying"]


def grid(times, dims=("t", "z"), **attrs):
    """A tiny n-D array whose only metadata is per-frame acquisition times and attrs."""
    shape = np.shape(times)
    data = np.zeros((*shape, 2, 2))
    array = xr.DataArray(data, dims=(*dims, "y", "x"), attrs=attrs)
    return array.assign_coords(acquisition_time=(dims, np.asarray(times)))


def test_slice_timing_is_of_the_first_volume_from_its_first_acquisition():
    # descending, 1 s apart, within a 4-D grid whose second volume starts 3 s later
    times = [["120003.5", "120002.5", "120001.5"], ["120006.5", "120005.5", "120004.5"]]
    fields = bids_fields(grid(times, RepetitionTime="3000", EchoTime=30, InversionTime="x"))
    assert fields["SliceTiming"] == [2.0, 1.0, 0.0]
    assert (fields["RepetitionTime"], fields["EchoTime"]) == (3.0, 0.03)
    assert "InversionTime" not in fields  # unreadable: left out, never a guess


def test_slice_timing_reads_datetimes_and_is_left_out_when_the_times_are_one():
    array = grid(["20240101120000.25", "20240101120000.75"], dims=("z",))
    array = array.rename(acquisition_time="frame_acquisition_date_time")
    assert bids_fields(array)["SliceTiming"] == [0.0, 0.5]
    assert "SliceTiming" not in bids_fields(grid(["114815", "114815"], dims=("z",)))
    assert "SliceTiming" not in bids_fields(grid(["114815", "?"], dims=("z",)))
