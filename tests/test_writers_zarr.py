"""The zarr export: xarray.open_zarr gives back values, z positions, coordinates and tags."""

from __future__ import annotations

import importlib.util

import dask.array
import numpy as np
import pytest
import xarray as xr

import dicomarray
from dicomarray import WriteError

from .export_helpers import (
    PATIENT_FOLDER,
    PATIENT_TAGS,
    SERIES_KINDS,
    head_and_feet_first,
    leaked,
    series_uids,
    stacked,
    temporaries,
    texts_holding,
    two_echo_folder,
)


@pytest.mark.filterwarnings("ignore::dicomarray.GeometryWarning")
@pytest.mark.parametrize("kind", sorted(SERIES_KINDS))
def test_open_zarr_gives_back_values_coordinates_and_attrs_lazily(make_series, tmp_path, kind):
    volume = dicomarray.open_series(make_series(**SERIES_KINDS[kind])[0].parent, chunks=5)
    store = volume.dicom.to_zarr(tmp_path / "ct.zarr")
    assert store == tmp_path / "ct.zarr"
    back = xr.open_zarr(store)["image"]
    assert isinstance(back.data, dask.array.Array)
    assert back.data.chunks == volume.data.chunks
    np.testing.assert_array_equal(back.values, volume.values)
    assert back.dtype == volume.dtype
    assert back.attrs == volume.attrs
    assert set(back.coords) == set(volume.coords)
    for name, coord in volume.coords.items():
        np.testing.assert_array_equal(back[name].values.astype(coord.dtype), coord.values)
        assert back[name].attrs == coord.attrs
    np.testing.assert_allclose(back.dicom.affine, volume.dicom.affine)
    assert temporaries(tmp_path) == []


def test_text_coordinates_use_the_zarr_3_string_type(make_series, tmp_path):
    volume = dicomarray.open_series(make_series()[0].parent)
    volume.dicom.to_zarr(tmp_path / "ct.zarr")
    metadata = (tmp_path / "ct.zarr" / "sop_instance_uid" / "zarr.json").read_text()
    assert '"data_type": "string"' in metadata
    assert '"zarr_format": 3' in metadata


def test_deidentify_leaves_out_identifying_attrs_and_coordinates(make_series, tmp_path):
    paths = make_series(tags=PATIENT_TAGS)
    uids = series_uids(paths)
    volume = dicomarray.open_series(paths[0].parent)
    volume.dicom.to_zarr(tmp_path / "plain.zarr")
    found = {s for _, s in leaked(tmp_path / "plain.zarr", uids)}
    # the per-slice SOP Instance UIDs are in compressed chunks: only the attrs' are searchable
    assert set(uids[:2]) <= found, "the search must find the UIDs when they are there"
    volume.dicom.to_zarr(tmp_path / "anon.zarr", deidentify=True)
    assert leaked(tmp_path / "anon.zarr", uids) == []
    back = xr.open_zarr(tmp_path / "anon.zarr")["image"]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName"):
        assert keyword not in back.attrs
    assert "sop_instance_uid" not in back.coords and "acquisition_time" not in back.coords
    assert "files" not in back.attrs["dicomarray_assembly"]
    assert back.attrs["Manufacturer"] == "DICOMARRAY" and back.attrs["dicomarray_deidentified"]
    np.testing.assert_array_equal(back["instance_number"].values, volume["instance_number"])
    np.testing.assert_array_equal(back.values, volume.values)


def test_deidentify_leaves_out_the_paths_of_the_source_files(make_series, tmp_path):
    folder = make_series(PATIENT_FOLDER)[0].parent
    volume = dicomarray.open_series(folder)
    volume.dicom.to_zarr(tmp_path / "plain.zarr")
    plain = xr.open_zarr(tmp_path / "plain.zarr")["image"]
    assert texts_holding(plain, PATIENT_FOLDER) == ["source_file", "dicomarray_assembly"]
    volume.dicom.to_zarr(tmp_path / "anon.zarr", deidentify=True)
    anon = xr.open_zarr(tmp_path / "anon.zarr")["image"]
    assert texts_holding(anon, PATIENT_FOLDER) == [] and "source_file" not in anon.coords
    assert leaked(tmp_path / "anon.zarr", [PATIENT_FOLDER.encode(), str(folder).encode()]) == []
    assert anon["frame"].values.tolist() == [0] * 12


def test_uneven_chunks_are_evened_out(make_series, tmp_path):
    volume = dicomarray.open_series(make_series()[0].parent).chunk({"z": (5, 3, 4)})
    volume.dicom.to_zarr(tmp_path / "ct.zarr")
    back = xr.open_zarr(tmp_path / "ct.zarr")["image"]
    assert back.data.chunks[0] == (5, 5, 2)
    np.testing.assert_array_equal(back.values, volume.values)


def test_urls_are_written_in_place(make_series):
    volume = dicomarray.open_series(make_series()[0].parent)
    url = "memory://dicomarray-test/ct.zarr"
    assert volume.dicom.to_zarr(url, overwrite=True) == url
    np.testing.assert_array_equal(xr.open_zarr(url)["image"].values, volume.values)
    with pytest.raises(WriteError, match=f"{url} already exists; pass overwrite=True"):
        volume.dicom.to_zarr(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("foo://bucket/ct.zarr", "foo://bucket/ct.zarr: Protocol not known: foo"),
        ("s3://bucket/ct.zarr", "s3://bucket/ct.zarr: Install s3fs"),
    ],
)
def test_a_store_that_cannot_be_opened_is_a_write_error(make_series, url, message):
    if url.startswith("s3:") and importlib.util.find_spec("s3fs") is not None:
        pytest.skip("s3fs is installed: the store would be opened")
    volume = dicomarray.open_series(make_series()[0].parent)
    with pytest.raises(WriteError, match=message):
        volume.dicom.to_zarr(url)


def test_a_chunk_that_cannot_be_written_is_a_write_error(make_series, tmp_path, monkeypatch):
    import zarr

    def full(self, key, value):
        raise OSError("no space left on device")

    volume = dicomarray.open_series(make_series()[0].parent)
    monkeypatch.setattr(zarr.Array, "__setitem__", full)
    with pytest.raises(WriteError, match="ct.zarr: no space left on device"):
        volume.dicom.to_zarr(tmp_path / "ct.zarr")
    assert not (tmp_path / "ct.zarr").exists() and temporaries(tmp_path) == []


def test_existing_stores_and_other_folders_are_protected(make_series, tmp_path):
    volume = dicomarray.open_series(make_series()[0].parent)
    volume.dicom.to_zarr(tmp_path / "ct.zarr")
    with pytest.raises(WriteError, match="already exists"):
        volume.dicom.to_zarr(tmp_path / "ct.zarr")
    (volume + 1).dicom.to_zarr(tmp_path / "ct.zarr", overwrite=True)
    np.testing.assert_array_equal(xr.open_zarr(tmp_path / "ct.zarr")["image"], volume + 1)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    with pytest.raises(WriteError, match="not a zarr export"):
        volume.dicom.to_zarr(notes, overwrite=True)
    assert (notes / "keep.txt").read_text() == "mine"
    with pytest.raises(WriteError, match="mode"):
        volume.dicom.to_zarr(tmp_path / "other.zarr", mode="a")
    assert temporaries(tmp_path) == []


def test_head_first_and_feet_first_series_export_alike_in_ras(make_series, tmp_path):
    hu = np.random.default_rng(7).integers(-1000, 1000, (6, 8, 10)).astype(float)
    stored, canonical = [], []
    for i, folder in enumerate(head_and_feet_first(make_series, hu)):
        volume = dicomarray.open_series(folder)
        volume.dicom.to_zarr(tmp_path / f"{i}-stored.zarr")
        volume.dicom.to_zarr(tmp_path / f"{i}.zarr", orientation="RAS")
        stored.append(xr.open_zarr(tmp_path / f"{i}-stored.zarr")["image"])
        canonical.append(xr.open_zarr(tmp_path / f"{i}.zarr")["image"])
    assert not np.array_equal(stored[0].values, stored[1].values)
    np.testing.assert_array_equal(canonical[0].values - 1024, hu[:, ::-1, ::-1])  # stored values
    np.testing.assert_array_equal(canonical[0].values, canonical[1].values)
    for image in canonical:
        assert image.attrs["dicomarray_orientation"]["dims"] == ["z", "y", "x"]
        np.testing.assert_allclose(image.dicom.affine, canonical[0].dicom.affine)


def test_a_reoriented_sagittal_store_keeps_its_dims_in_their_order(make_series, tmp_path):
    volume = dicomarray.open_series(make_series(orientation=(0, 1, 0, 0, 0, -1))[0].parent)
    volume.dicom.to_zarr(tmp_path / "ras.zarr", orientation="RAS")
    back = xr.open_zarr(tmp_path / "ras.zarr")["image"]
    assert back.dims == ("y", "x", "z") and back.attrs["dicomarray_orientation"]["code"] == "RAS"
    np.testing.assert_array_equal(back.values, volume.values[:, ::-1, ::-1].transpose(1, 2, 0))
    assert back.dicom.orientation_code() == "RAS"
    np.testing.assert_array_equal(back["source_file"], volume["source_file"])


def echo_series(volume):
    series = stacked(volume, "echo", [10.0, 20.0], echo_number=[1, 2])
    series["echo"].attrs["units"] = "ms"
    return series


def test_an_nd_store_gives_back_its_dims_and_extra_coords(make_series, tmp_path):
    volume = dicomarray.open_series(make_series()[0].parent, chunks=5)
    series = echo_series(volume)
    back = xr.open_zarr(series.dicom.to_zarr(tmp_path / "me.zarr"))["image"]
    assert back.dims == ("echo", "z", "y", "x") and back.data.chunks == series.data.chunks
    np.testing.assert_array_equal(back.values, series.values)
    assert back["echo"].values.tolist() == [10.0, 20.0] and back["echo"].attrs == {"units": "ms"}
    assert back["echo_number"].dims == ("echo",)
    assert back["sop_instance_uid"].dims == ("echo", "z")
    np.testing.assert_array_equal(back["frame"].values, series["frame"].values)
    np.testing.assert_allclose(back.dicom.affine, volume.dicom.affine)


def test_deidentify_leaves_out_per_frame_paths_whatever_their_dims(make_series, tmp_path):
    folder = make_series(PATIENT_FOLDER)[0].parent
    series = echo_series(dicomarray.open_series(folder))
    series.dicom.to_zarr(tmp_path / "anon.zarr", deidentify=True)
    anon = xr.open_zarr(tmp_path / "anon.zarr")["image"]
    assert "source_file" not in anon.coords and "sop_instance_uid" not in anon.coords
    assert leaked(tmp_path / "anon.zarr", [PATIENT_FOLDER.encode(), str(folder).encode()]) == []
    assert anon["echo_number"].values.tolist() == [1, 2]


def test_an_opened_echo_series_deidentifies_every_frame(make_series, phantom, tmp_path):
    folder = two_echo_folder(make_series, phantom, tmp_path / PATIENT_FOLDER, PATIENT_TAGS)
    volume = dicomarray.open_series(folder)
    assert volume["study_instance_uid"].dims == ("echo",)  # each echo's own study UID
    volume.dicom.to_zarr(tmp_path / "anon.zarr", deidentify=True)
    anon = xr.open_zarr(tmp_path / "anon.zarr")["image"]
    assert anon.dims == ("echo", "z", "y", "x")
    uids = series_uids(sorted(folder.iterdir()))
    assert leaked(tmp_path / "anon.zarr", [PATIENT_FOLDER.encode(), *uids]) == []
    assert texts_holding(anon, PATIENT_FOLDER) == []
    for name in ("source_file", "sop_instance_uid", "study_instance_uid", "study_date"):
        assert name not in anon.coords, name
    assert "PatientName" in volume.attrs and "PatientName" not in anon.attrs
    assert anon["echo_time"].values.tolist() == [10.0, 20.0]
    np.testing.assert_array_equal(anon.values, volume.values)
