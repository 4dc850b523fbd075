"""Reorientation: lazy flips and transposes, checked against nibabel's as_closest_canonical."""

from __future__ import annotations

import pickle

import nibabel as nib
import numpy as np
import pytest

import dicomarray
from dicomarray.errors import DicomArrayError
from dicomarray.sample import write_series

from .nd_volumes import stack_volumes

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# (orientation, name): axial head-first, axial feet-first (rows flipped, normal inferior),
# coronal, sagittal, oblique
ORIENTATIONS = {
    "axial": (1, 0, 0, 0, 1, 0),
    "axial-feet-first": (-1, 0, 0, 0, 1, 0),
    "coronal": (1, 0, 0, 0, 0, -1),
    "sagittal": (0, 1, 0, 0, 0, -1),
    "oblique": (0.94, 0.34, 0, -0.1, 0.28, -0.95),
}


def _labelled(tmp_path, orientation, chunks=None):
    """A 6 x 5 x 4 series whose stored value at (z, y, x) is 100 z + 10 y + x."""
    z, y, x = np.mgrid[0:6, 0:5, 0:4]
    values = (100 * z + 10 * y + x).astype(np.int16)
    write_series(
        tmp_path,
        values,
        pixel_spacing=(2.0, 3.0),
        slice_spacing=4.0,
        orientation=orientation,
        intercept=0.0,
    )
    return dicomarray.open_series(tmp_path, chunks=chunks)


def _nifti_canonical(volume):
    """nibabel's closest canonical (RAS) of the volume: data (i, j, k) = (x, y, z)."""
    data = np.asarray(volume.values).transpose(2, 1, 0)
    affine = LPS_TO_RAS @ volume.dicom.affine[:, [2, 1, 0, 3]]
    image = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    return np.asarray(image.dataobj), image.affine


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_ras_matches_nibabels_closest_canonical(tmp_path, name):
    volume = _labelled(tmp_path, ORIENTATIONS[name])
    canonical = volume.dicom.reorient("RAS")
    assert canonical.dicom.orientation_code() == "RAS"
    expected_data, expected_affine = _nifti_canonical(volume)
    np.testing.assert_array_equal(canonical.values.transpose(2, 1, 0), expected_data)
    ours = LPS_TO_RAS @ canonical.dicom.affine[:, [2, 1, 0, 3]]
    np.testing.assert_allclose(ours, expected_affine, atol=1e-6)


def test_feet_first_and_head_first_come_out_alike(tmp_path):
    head = _labelled(tmp_path / "head", ORIENTATIONS["axial"])
    feet = _labelled(tmp_path / "feet", ORIENTATIONS["axial-feet-first"])
    assert head.dicom.orientation_code() == "LPS"
    assert feet.dicom.orientation_code() == "RPI"
    for code in ("LPS", "RAS", "LAS"):
        a, b = head.dicom.reorient(code), feet.dicom.reorient(code)
        assert a.dicom.orientation_code() == b.dicom.orientation_code() == code
        assert a.dims == b.dims


def test_reorient_is_lazy_keeps_provenance_and_pickles(tmp_path, reads):
    volume = _labelled(tmp_path, ORIENTATIONS["sagittal"], chunks=1)
    canonical = volume.dicom.reorient("RAS")
    assert canonical.chunks is not None and reads == []
    assert canonical.attrs["dicomarray_orientation"] == {"code": "RAS", "source_code": "PIR"}
    assert canonical.dims == ("y", "x", "z")  # the slices of a sagittal series run along R
    one = canonical.isel(z=0).values
    assert len(reads) == 1
    source = volume.isel(z=0)  # this series' normal points right already: z is not flipped
    assert canonical.source_file.values[0] == source.source_file.item()
    np.testing.assert_array_equal(np.sort(one.ravel()), np.sort(source.values.ravel()))
    restored = pickle.loads(pickle.dumps(canonical))
    np.testing.assert_array_equal(restored.values, canonical.values)


@pytest.mark.parametrize("code", ["RAX", "RRS", "RA", 3])
def test_a_bad_code_is_refused(tmp_path, code):
    volume = _labelled(tmp_path, ORIENTATIONS["axial"])
    with pytest.raises(DicomArrayError, match="three letters"):
        volume.dicom.reorient(code)


@pytest.mark.parametrize("name", ["sagittal", "axial-feet-first"])
def test_extra_dims_stay_first_and_each_volume_is_reoriented_alike(tmp_path, name):
    volumes = [_labelled(tmp_path / f"v{k}", ORIENTATIONS[name]) for k in range(2)]
    volumes[1] = volumes[1] + 1000  # tell the volumes apart
    stacked = stack_volumes(volumes, "echo", [10.0, 20.0])
    canonical = stacked.dicom.reorient("RAS")
    assert canonical.dims[0] == "echo" and canonical.dicom.orientation_code() == "RAS"
    np.testing.assert_array_equal(canonical["echo"].values, [10.0, 20.0])
    for k, volume in enumerate(volumes):
        alone = volume.dicom.reorient("RAS")
        assert canonical.dims[1:] == alone.dims
        np.testing.assert_array_equal(canonical.isel(echo=k).values, alone.values)
        np.testing.assert_array_equal(
            canonical["source_file"].isel(echo=k).values, alone["source_file"].values
        )
