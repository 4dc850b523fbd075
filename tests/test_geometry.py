"""Pure geometry: normals, projections, spacing checks, tilt and affines on known values."""

from __future__ import annotations

import numpy as np
import pytest

from dicomarray.errors import DicomArrayError
from dicomarray.geometry import (
    DEFAULT_ORIENTATION,
    DEFAULT_PIXEL_SPACING,
    affine_from,
    orientation_of,
    pixel_spacing_of,
    positions_along_normal,
    slice_normal,
    tilt_degrees,
    uneven_steps,
)


@pytest.mark.parametrize(
    ("orientation", "normal"),
    [
        ((1, 0, 0, 0, 1, 0), (0, 0, 1)),  # axial
        ((1, 0, 0, 0, 0, -1), (0, 1, 0)),  # coronal
        ((0, 1, 0, 0, 0, -1), (-1, 0, 0)),  # sagittal
    ],
)
def test_slice_normal_is_row_cross_column(orientation, normal):
    np.testing.assert_allclose(slice_normal(orientation), normal, atol=1e-12)


def test_parallel_cosines_are_refused():
    with pytest.raises(ValueError, match="parallel"):
        slice_normal((1, 0, 0, 1, 0, 0))


def test_positions_project_onto_the_normal():
    positions = np.array([[0, 0, 10], [5, 5, 12.5], [1, -1, 15]])
    np.testing.assert_allclose(positions_along_normal(positions, [0, 0, 1]), [10, 12.5, 15])


def test_uneven_steps_names_the_gap():
    assert uneven_steps([0, 2, 4, 6, 10, 12]) == [(3, 4.0)]
    assert uneven_steps([0, 2, 4, 6]) == []
    assert uneven_steps([0, 2.05, 4.0], rtol=0.05) == []


def test_tilt_angle_of_a_sheared_stack():
    angle = np.radians(20)
    steps = np.arange(5)[:, None] * np.array([0, np.sin(angle), np.cos(angle)]) * 3
    assert tilt_degrees(steps, np.array([0, 0, 1.0])) == pytest.approx(20)
    assert tilt_degrees(steps[:1], np.array([0, 0, 1.0])) == 0.0


def test_affine_columns_follow_dims_z_y_x():
    positions = np.array([[-100, -120, 30], [-100, -120, 32.5]])
    affine = affine_from(np.array([1, 0, 0, 0, 1, 0.0]), positions, (0.8, 0.5))
    # index (z=1, y=2, x=3): second slice, row 2 down the column cosine, column 3 along the row
    np.testing.assert_allclose(affine @ [1, 2, 3, 1], [-100 + 3 * 0.5, -120 + 2 * 0.8, 32.5, 1])


# -- geometry tags read from attrs ----------------------------------------------------------


def test_orientation_and_spacing_of_attrs_are_checked_numbers():
    attrs = {"ImageOrientationPatient": ["1", 0, 0, 0, 0.6, -0.8], "PixelSpacing": [0.5, "0.7"]}
    np.testing.assert_array_equal(orientation_of(attrs), [1, 0, 0, 0, 0.6, -0.8])
    assert pixel_spacing_of(attrs) == (0.5, 0.7)
    # missing tags: axial, 1 mm
    np.testing.assert_array_equal(orientation_of({}), DEFAULT_ORIENTATION)
    assert pixel_spacing_of({}) == DEFAULT_PIXEL_SPACING


@pytest.mark.parametrize(
    ("keyword", "value", "message"),
    [
        ("ImageOrientationPatient", [1.0], "must be 6 finite numbers"),
        ("ImageOrientationPatient", 1.0, "must be 6 finite numbers"),
        ("ImageOrientationPatient", [1, 0, 0, 0, 1, "x"], "must be 6 finite numbers"),
        ("ImageOrientationPatient", [1, 0, 0, 0, 1, float("nan")], "must be 6 finite numbers"),
        ("ImageOrientationPatient", [1, 0, 0, 1, 0, 0], "parallel"),
        ("PixelSpacing", [0.5], "must be 2 finite numbers"),
        ("PixelSpacing", "0.5", "must be 2 finite numbers"),
        ("PixelSpacing", [0.5, 0.0], "greater than 0"),
        ("PixelSpacing", [0.5, float("inf")], "must be 2 finite numbers"),
    ],
)
def test_malformed_geometry_tags_raise_a_dicomarray_error(keyword, value, message):
    read = orientation_of if keyword == "ImageOrientationPatient" else pixel_spacing_of
    with pytest.raises(DicomArrayError, match=message):
        read({keyword: value})
