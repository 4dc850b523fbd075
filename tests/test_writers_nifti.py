"""The NIfTI export: values and the LPS to RAS affine, checked by nibabel and SimpleITK."""

from __future__ import annotations

import itertools
import json
import warnings

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

import dicomarray
from dicomarray import GeometryWarning, WriteError
from dicomarray.writers import nifti_affine

from .export_helpers import (
    PATIENT_TAGS,
    SERIES_KINDS,
    leaked,
    series_uids,
    sitk_series,
    temporaries,
)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def corners(shape):
    """(z, y, x) index corners of a volume."""
    return list(itertools.product(*[(0, n - 1) for n in shape]))


def open_quietly(folder, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeometryWarning)
        return dicomarray.open_series(folder, **kwargs)


@pytest.mark.parametrize("kind", ["axial", "sagittal", "per-slice-rescale"])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nibabel_reads_our_values_and_affine(make_series, tmp_path, kind, suffix):
    volume = open_quietly(make_series(**SERIES_KINDS[kind])[0].parent, chunks=5)
    path = volume.dicom.to_nifti(tmp_path / f"ct{suffix}")
    image = nib.load(path)
    assert image.shape == (64, 64, 12)  # (i, j, k) = (x, y, z)
    np.testing.assert_array_equal(np.asarray(image.dataobj).transpose(2, 1, 0), volume.values)
    assert image.get_data_dtype() == volume.dtype
    ours = volume.dicom.affine
    for z, y, x in corners(volume.shape):
        ras = image.affine @ [x, y, z, 1]
        np.testing.assert_allclose(ras, LPS_TO_RAS @ ours @ [z, y, x, 1], atol=1e-4)
    np.testing.assert_allclose(image.header.get_zooms(), (3.6, 3.6, 12.0), rtol=1e-6)
    assert image.header["sform_code"] == 1 and image.header["qform_code"] == 1
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize("kind", ["axial", "sagittal"])
def test_simpleitk_places_the_nifti_where_it_places_the_dicom_series(make_series, tmp_path, kind):
    folder = make_series(**SERIES_KINDS[kind])[0].parent
    volume = dicomarray.open_series(folder)
    reference = sitk_series(folder)
    image = sitk.ReadImage(str(volume.dicom.to_nifti(tmp_path / "ct.nii")))
    np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), volume.values)


def test_a_tilted_stack_is_exact_in_the_sform(make_series, tmp_path):
    volume = open_quietly(make_series(tilt_degrees=15.0)[0].parent)
    image = nib.load(volume.dicom.to_nifti(tmp_path / "ct.nii"))
    expected = nifti_affine(volume.dicom.affine)
    np.testing.assert_allclose(image.header.get_sform(), expected, atol=1e-4)
    assert abs(expected[1, 2]) > 1.0  # the slice step leans along y: a real shear


def test_a_gap_is_reported_because_nifti_has_one_slice_step(make_series, tmp_path):
    volume = open_quietly(make_series(**SERIES_KINDS["gap"])[0].parent)
    with pytest.warns(GeometryWarning, match="NIfTI holds one slice step"):
        volume.dicom.to_nifti(tmp_path / "ct.nii")


def test_sidecar_beside_the_nifti_can_be_deidentified(make_series, tmp_path):
    paths = make_series(tags=PATIENT_TAGS)
    volume = dicomarray.open_series(paths[0].parent)
    out = tmp_path / "out"
    volume.dicom.to_nifti(out / "ct.nii.gz", json_path=out / "ct.json", deidentify=True)
    meta = json.loads((out / "ct.json").read_text())
    assert meta["Manufacturer"] == "DICOMARRAY" and "PatientName" not in meta
    assert leaked(out, series_uids(paths)) == []


def test_wrong_dims_names_and_existing_files_are_refused(make_series, tmp_path):
    volume = dicomarray.open_series(make_series()[0].parent)
    out = tmp_path / "out"
    with pytest.raises(WriteError, match="dims"):
        volume.transpose("x", "y", "z").dicom.to_nifti(out / "ct.nii")
    with pytest.raises(WriteError, match=".nii"):
        volume.dicom.to_nifti(out / "ct.img")
    volume.dicom.to_nifti(out / "ct.nii")
    with pytest.raises(WriteError, match="already exists"):
        volume.dicom.to_nifti(out / "ct.nii")
    assert sorted(p.name for p in out.iterdir()) == ["ct.nii"]
