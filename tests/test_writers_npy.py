"""The .npy export and its JSON sidecar: values, tags, geometry, de-identification, atomicity."""

from __future__ import annotations

import json
import threading

import dask
import numpy as np
import pytest

import dicomarray
import dicomarray.writers
from dicomarray import WriteError

from .export_helpers import (
    PATIENT_FOLDER,
    PATIENT_TAGS,
    SERIES_KINDS,
    head_and_feet_first,
    leaked,
    modality_values,
    series_uids,
    stacked,
    temporaries,
    texts_holding,
    two_echo_folder,
)

#: Acquisition facts dcm2niix's BIDS sidecar carries, under their DICOM keywords.
DCM2NIIX_FACTS = (
    "Manufacturer",
    "ManufacturerModelName",
    "BodyPartExamined",
    "PatientPosition",
    "SoftwareVersions",
    "ImageType",
    "SeriesNumber",
    "AcquisitionNumber",
    "ConvolutionKernel",
    "Exposure",
    "XRayTubeCurrent",
    "SliceThickness",
    "GantryDetectorTilt",
    "KVP",
    "Modality",
)


def read_json(path):
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.filterwarnings("ignore::dicomarray.GeometryWarning")
@pytest.mark.parametrize("kind", sorted(SERIES_KINDS))
def test_values_round_trip_in_chunks(make_series, tmp_path, kind):
    volume = dicomarray.open_series(make_series(**SERIES_KINDS[kind])[0].parent, chunks=5)
    written = volume.dicom.to_npy(tmp_path / "out" / "ct.npy")
    assert written == tmp_path / "out" / "ct.npy"
    loaded = np.load(written)
    assert loaded.dtype == volume.dtype
    np.testing.assert_array_equal(loaded, volume.values)
    assert (tmp_path / "out" / "ct.json").is_file()
    assert temporaries(tmp_path / "out") == []


def test_sidecar_holds_common_and_varying_tags_geometry_and_report(make_series, tmp_path):
    paths = make_series()
    volume = dicomarray.open_series(paths[0].parent)
    volume.dicom.to_npy(tmp_path / "ct.npy", json_path=tmp_path / "meta" / "ct-sidecar.json")
    meta = read_json(tmp_path / "meta" / "ct-sidecar.json")
    for keyword in DCM2NIIX_FACTS:
        assert meta[keyword] == volume.attrs[keyword], keyword
    assert meta["SliceThickness"] == 12.0 and meta["XRayTubeCurrent"] == 300
    assert meta["ImageType"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    varying = meta["varying"]
    assert varying["InstanceNumber"] == volume["instance_number"].values.tolist()
    assert varying["SOPInstanceUID"] == volume["sop_instance_uid"].values.tolist()
    positions = np.array(varying["ImagePositionPatient"])
    np.testing.assert_allclose(positions[:, 2], volume["image_position_s"].values)
    geometry = meta["geometry"]
    np.testing.assert_allclose(geometry["affine"], volume.dicom.affine)
    np.testing.assert_allclose(geometry["z"], volume["z"].values)
    np.testing.assert_allclose(geometry["spacing"], [12.0, 3.6, 3.6])
    np.testing.assert_allclose(geometry["origin"], volume.dicom.affine[:3, 3])
    assert geometry["orientation"] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert meta["assembly"]["files"] == volume.attrs["dicomarray_assembly"]["files"]
    assert meta["array"]["shape"] == [12, 64, 64] and meta["array"]["dtype"] == "int16"
    assert meta["dicomarray"]["deidentified"] is False


def test_per_slice_rescale_is_listed_in_slice_order_and_hu_values_are_kept(make_series, tmp_path):
    volume = dicomarray.open_series(make_series(per_slice_rescale=True)[0].parent)
    hu = volume.copy(data=modality_values(volume))
    hu.dicom.to_npy(tmp_path / "hu.npy")
    meta = read_json(tmp_path / "hu.json")
    assert meta["varying"]["RescaleSlope"] == volume["rescale_slope"].values.tolist()
    assert meta["varying"]["RescaleIntercept"] == volume["rescale_intercept"].values.tolist()
    assert len(set(meta["varying"]["RescaleSlope"])) == 2
    np.testing.assert_array_equal(np.load(tmp_path / "hu.npy"), modality_values(volume))


def test_deidentify_leaves_out_identifying_tags_uids_and_paths(make_series, tmp_path):
    paths = make_series(tags=PATIENT_TAGS)
    uids = series_uids(paths)
    volume = dicomarray.open_series(paths[0].parent)
    volume.dicom.to_npy(tmp_path / "plain.npy")
    found = {s for _, s in leaked(tmp_path / "plain.json", uids)}
    assert set(uids) <= found, "the search must find the UIDs when they are there"
    volume.dicom.to_npy(tmp_path / "anon.npy", deidentify=True)
    meta = read_json(tmp_path / "anon.json")
    assert leaked(tmp_path / "anon.json", uids) == []
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "InstitutionName",
        "ReferringPhysicianName",
        "StudyInstanceUID",
        "StudyDate",
        "AccessionNumber",
    ):
        assert keyword not in meta, keyword
    assert "SOPInstanceUID" not in meta["varying"]
    assert "files" not in meta["assembly"] and "left_out" not in meta["assembly"]
    assert "series_uid" not in meta["assembly"]
    assert meta["Manufacturer"] == "DICOMARRAY" and meta["KVP"] == volume.attrs["KVP"]
    assert meta["varying"]["InstanceNumber"] == list(range(1, 13))
    assert meta["dicomarray"]["deidentified"] is True


def test_deidentify_leaves_out_the_paths_of_the_source_files(make_series, tmp_path):
    folder = make_series(PATIENT_FOLDER)[0].parent
    volume = dicomarray.open_series(folder)
    name = PATIENT_FOLDER.encode()
    volume.dicom.to_npy(tmp_path / "plain.npy")
    assert leaked(tmp_path / "plain.json", [name]), "the search must find the folder"
    assert texts_holding(dicomarray.writers.open_npy(tmp_path / "plain.npy"), PATIENT_FOLDER)
    volume.dicom.to_npy(tmp_path / "anon.npy", deidentify=True)
    assert leaked(tmp_path / "anon.json", [name, str(folder).encode()]) == []
    back = dicomarray.writers.open_npy(tmp_path / "anon.npy")
    assert texts_holding(back, PATIENT_FOLDER) == [] and "source_file" not in back.coords
    assert back["frame"].values.tolist() == [0] * 12  # the frame numbers name nobody


def test_existing_files_are_refused_unless_overwrite(make_series, tmp_path):
    volume = dicomarray.open_series(make_series()[0].parent)
    target = tmp_path / "ct.npy"
    volume.dicom.to_npy(target)
    before = target.read_bytes()
    with pytest.raises(WriteError, match="already exists"):
        (volume + 1).dicom.to_npy(target)
    assert target.read_bytes() == before
    (volume + 1).dicom.to_npy(target, overwrite=True)
    np.testing.assert_array_equal(np.load(target), volume.values + 1)


def test_compute_false_delays_the_writes_and_exports_share_one_read(make_series, tmp_path):
    volume = dicomarray.open_series(make_series()[0].parent, chunks=4)
    reads: list[int] = []
    lock = threading.Lock()

    def count(block):
        with lock:
            reads.append(1)
        return block

    counted = volume.copy(data=volume.data.map_blocks(count, meta=volume.data._meta))
    npy = counted.dicom.to_npy(tmp_path / "ct.npy", compute=False)
    zarr = counted.dicom.to_zarr(tmp_path / "ct.zarr", compute=False)
    assert not (tmp_path / "ct.npy").exists() and not (tmp_path / "ct.zarr").exists()
    written = dask.compute(npy, zarr)
    assert written == (tmp_path / "ct.npy", tmp_path / "ct.zarr")
    assert len(reads) == 3  # one read per chunk, shared by both exports
    np.testing.assert_array_equal(np.load(tmp_path / "ct.npy"), volume.values)
    assert temporaries(tmp_path) == []


def test_numpy_backed_volumes_are_written_too(make_series, tmp_path):
    volume = dicomarray.open_series(make_series()[0].parent).load()
    volume.dicom.to_npy(tmp_path / "ct.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "ct.npy"), volume.values)


def test_open_npy_gives_back_the_values_positions_and_instances(make_series, tmp_path):
    from dicomarray.writers.npy import open_npy

    volume = dicomarray.open_series(make_series(per_slice_rescale=True)[0].parent)
    volume.dicom.to_npy(tmp_path / "raw.npy")
    back = open_npy(tmp_path / "raw.npy")
    assert back.dims == ("z", "y", "x") and back.chunks is not None  # lazy
    np.testing.assert_array_equal(back.values, volume.values)
    np.testing.assert_allclose(back["z"], volume["z"])
    for name in ("sop_instance_uid", "rescale_slope", "rescale_intercept"):
        np.testing.assert_array_equal(back[name].values, volume[name].values)
    np.testing.assert_allclose(modality_values(back), modality_values(volume))
    hu = volume.dicom.hu()
    hu.dicom.to_npy(tmp_path / "hu.npy")
    assert open_npy(tmp_path / "hu.npy").attrs["dicomarray_values"] == "modality"


def test_an_npy_read_back_has_the_geometry_of_its_series(make_series, tmp_path):
    # open_npy keeps no y and x coordinates: the geometry must use PixelSpacing (3.6 mm
    # here), not xarray's integer stand-in index as if it were millimetres
    from dicomarray.writers.npy import open_npy

    volume = dicomarray.open_series(make_series(orientation=(0, 1, 0, 0, 0, -1))[0].parent)
    volume.dicom.to_npy(tmp_path / "sagittal.npy")
    back = open_npy(tmp_path / "sagittal.npy")
    assert back.dicom.geometry.spacing == pytest.approx({"z": 12.0, "y": 3.6, "x": 3.6})
    np.testing.assert_allclose(back.dicom.affine, volume.dicom.affine, atol=1e-9)
    corner = [np.subtract(volume.shape, 1)]
    np.testing.assert_allclose(
        back.dicom.geometry.world(corner), volume.dicom.geometry.world(corner), atol=1e-9
    )
    # without y and x coordinates (an array built from numpy): PixelSpacing, not the index
    bare = back.drop_vars(["y", "x"])
    assert bare.dicom.geometry.spacing == {"z": 12.0, "y": 3.6, "x": 3.6}
    np.testing.assert_allclose(bare.dicom.affine, volume.dicom.affine, atol=1e-9)


@pytest.mark.filterwarnings("ignore::dicomarray.errors.GeometryWarning")  # the tilt
@pytest.mark.parametrize("code", ["RAS", "PIR", "LPI"])
def test_a_reoriented_npy_reads_back_where_it_lies(make_series, tmp_path, code):
    # flipped rows and columns are in the sidecar's affine: the read-back array must not
    # be mirrored (every voxel at the world position of the reoriented volume)
    from dicomarray.writers.npy import open_npy

    volume = dicomarray.open_series(make_series(tilt_degrees=15.0)[0].parent)
    volume.dicom.to_npy(tmp_path / "r.npy", orientation=code)
    back, expected = open_npy(tmp_path / "r.npy"), volume.dicom.reorient(code)
    assert back.dims == expected.dims
    every = np.argwhere(np.ones(expected.shape, bool))
    np.testing.assert_allclose(
        back.dicom.geometry.world(every), expected.dicom.geometry.world(every), atol=1e-6
    )
    np.testing.assert_array_equal(back.values, expected.values)


def test_open_npy_refuses_a_sidecar_of_another_array(make_series, tmp_path):
    from dicomarray.writers.npy import open_npy

    volume = dicomarray.open_series(make_series()[0].parent)
    volume.dicom.to_npy(tmp_path / "v.npy")
    np.save(tmp_path / "other.npy", np.zeros((3, 4, 5), np.int16))
    with pytest.raises(dicomarray.DicomArrayError, match=r"shape \(12, 64, 64\).*\(3, 4, 5\)"):
        open_npy(tmp_path / "other.npy", json_path=tmp_path / "v.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(dicomarray.DicomArrayError, match="junk.json: not a readable JSON"):
        open_npy(tmp_path / "v.npy", json_path=tmp_path / "junk.json")


def test_head_first_and_feet_first_series_export_alike_in_ras(make_series, tmp_path):
    hu = np.random.default_rng(7).integers(-1000, 1000, (6, 8, 10)).astype(float)
    written = {}
    for position, folder in zip(("HFS", "FFS"), head_and_feet_first(make_series, hu), strict=True):
        volume = dicomarray.open_series(folder)
        volume.dicom.to_npy(tmp_path / f"{position}-stored.npy")
        volume.dicom.to_npy(tmp_path / f"{position}.npy", orientation="RAS")
        written[position] = np.load(tmp_path / f"{position}.npy")
        meta = read_json(tmp_path / f"{position}.json")
        assert meta["array"]["dims"] == ["z", "y", "x"]
        assert meta["array"]["attrs"]["dicomarray_orientation"]["dims"] == ["z", "y", "x"]
        assert meta["array"]["attrs"]["dicomarray_orientation"]["code"] == "RAS"
    stored = [np.load(tmp_path / f"{p}-stored.npy") for p in ("HFS", "FFS")]
    assert not np.array_equal(*stored), "as stored, the two series differ"
    # RAS: columns toward the right and rows toward anterior, i.e. both flipped from LPS
    np.testing.assert_array_equal(written["HFS"] - 1024, hu[:, ::-1, ::-1])  # stored values
    np.testing.assert_array_equal(written["HFS"], written["FFS"])


def test_a_reoriented_sagittal_export_reads_back_with_its_dims_in_their_order(
    make_series, tmp_path
):
    volume = dicomarray.open_series(make_series(orientation=(0, 1, 0, 0, 0, -1))[0].parent)
    volume.dicom.to_npy(tmp_path / "ras.npy", orientation="RAS")
    back = dicomarray.writers.open_npy(tmp_path / "ras.npy")
    # rows run inferior and columns posterior: both flipped, and the slices (toward the
    # right) become the fastest axis
    assert back.dims == ("y", "x", "z")
    np.testing.assert_array_equal(back.values, volume.values[:, ::-1, ::-1].transpose(1, 2, 0))
    np.testing.assert_array_equal(back["instance_number"], volume["instance_number"])
    assert read_json(tmp_path / "ras.json")["array"]["attrs"]["dicomarray_orientation"] == {
        "code": "RAS",
        "source_code": "PIR",
        "dims": ["y", "x", "z"],
    }


def test_a_reoriented_export_reads_each_slice_once(make_series, tmp_path, reads):
    volume = dicomarray.open_series(make_series(orientation=(0, 1, 0, 0, 0, -1))[0].parent)
    reads.clear()
    volume.dicom.to_npy(tmp_path / "ras.npy", orientation="RAS")  # flips and a transpose
    assert sorted(reads) == list(range(12))


def test_an_orientation_that_is_no_code_is_refused_before_writing(make_series, tmp_path):
    volume = dicomarray.open_series(make_series()[0].parent)
    with pytest.raises(WriteError, match=r"series 2 .*cannot reorient: orientation code 'RAA'"):
        volume.dicom.to_npy(tmp_path / "out.npy", orientation="RAA")
    assert list(tmp_path.glob("out*")) == [] and temporaries(tmp_path) == []


# --------------------------------------------------------------------------------------------
# n-D volumes (built as issue 13's assembly builds them, see export_helpers.stacked)
# --------------------------------------------------------------------------------------------


def dwi_series(volume):
    gradients = np.array([[0, 0, 0], [1, 0, 0], [0, 0.6, 0.8]], float)
    return stacked(
        volume,
        "diffusion",
        np.arange(3),
        b_value=[0.0, 1000.0, 1000.0],
        **{f"gradient_{c}": gradients[:, i] for i, c in enumerate("lps")},
    )


def test_an_nd_volume_and_its_extra_coords_round_trip(make_series, tmp_path):
    volume = dicomarray.open_series(make_series()[0].parent, chunks=5)
    series = dwi_series(volume)
    series.dicom.to_npy(tmp_path / "dwi.npy")
    meta = read_json(tmp_path / "dwi.json")
    assert meta["array"]["dims"] == ["diffusion", "z", "y", "x"]
    assert meta["array"]["shape"] == [3, 12, 64, 64]
    assert meta["array"]["coords"]["b_value"] == {
        "dims": ["diffusion"],
        "values": [0.0, 1000.0, 1000.0],
        "attrs": {},
    }
    assert meta["array"]["coords"]["source_file"]["dims"] == ["diffusion", "z"]
    back = dicomarray.writers.open_npy(tmp_path / "dwi.npy")
    assert back.dims == series.dims and back.data.chunks[0] == (1, 1, 1)
    np.testing.assert_array_equal(back.values, series.values)
    for name in ("diffusion", "b_value", "gradient_l", "gradient_p", "gradient_s", "frame"):
        assert back[name].dims == series[name].dims, name
        np.testing.assert_array_equal(back[name].values, series[name].values)
    np.testing.assert_array_equal(back["source_file"].values, series["source_file"].values)
    np.testing.assert_allclose(back.dicom.affine, volume.dicom.affine)


def test_a_time_coordinate_keeps_its_seconds(make_series, tmp_path):
    volume = dicomarray.open_series(make_series()[0].parent)
    series = stacked(volume, "t", [0.0, 2.5], temporal_position=[1, 2])
    series["t"].attrs["units"] = "s"
    back = dicomarray.writers.open_npy(series.dicom.to_npy(tmp_path / "bold.npy"))
    assert back["t"].values.tolist() == [0.0, 2.5] and back["t"].attrs == {"units": "s"}
    assert back["temporal_position"].values.tolist() == [1, 2]


def test_deidentify_leaves_out_per_frame_paths_and_uids_whatever_their_dims(make_series, tmp_path):
    folder = make_series(PATIENT_FOLDER, tags=PATIENT_TAGS)[0].parent
    uids = series_uids(sorted(folder.iterdir()))
    series = dwi_series(dicomarray.open_series(folder))
    assert series["source_file"].dims == ("diffusion", "z")
    series.dicom.to_npy(tmp_path / "plain.npy")
    assert leaked(tmp_path / "plain.json", [PATIENT_FOLDER.encode()])
    series.dicom.to_npy(tmp_path / "anon.npy", deidentify=True)
    assert leaked(tmp_path / "anon.json", [PATIENT_FOLDER.encode(), *uids]) == []
    back = dicomarray.writers.open_npy(tmp_path / "anon.npy")
    assert "source_file" not in back.coords and "sop_instance_uid" not in back.coords
    assert back["b_value"].values.tolist() == [0.0, 1000.0, 1000.0]


def test_an_opened_echo_series_round_trips_and_deidentifies_every_frame(
    make_series, phantom, tmp_path
):
    folder = two_echo_folder(make_series, phantom, tmp_path / PATIENT_FOLDER, PATIENT_TAGS)
    volume = dicomarray.open_series(folder)
    assert volume.dims == ("echo", "z", "y", "x")
    volume.dicom.to_npy(tmp_path / "plain.npy")
    back = dicomarray.writers.open_npy(tmp_path / "plain.npy")
    np.testing.assert_array_equal(back.values, volume.values)
    for name in ("echo", "echo_time", "echo_number", "source_file", "sop_instance_uid"):
        assert back[name].dims == volume[name].dims, name
        np.testing.assert_array_equal(back[name].values, volume[name].values)
    uids = series_uids(sorted(folder.iterdir()))
    assert leaked(tmp_path / "plain.json", [PATIENT_FOLDER.encode()])
    volume.dicom.to_npy(tmp_path / "anon.npy", deidentify=True)
    assert leaked(tmp_path / "anon.json", [PATIENT_FOLDER.encode(), *uids]) == []
    anon = dicomarray.writers.open_npy(tmp_path / "anon.npy")
    assert texts_holding(anon, PATIENT_FOLDER) == []
    assert anon["echo_time"].values.tolist() == [10.0, 20.0]
