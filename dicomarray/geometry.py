"""Slice geometry, pure numpy: normals, positions along the normal, spacing checks, affines.

Conventions follow DICOM (PS3.3 C.7.6.2): the first three values of (0020,0037) *Image
Orientation (Patient)* are the direction of a row (increasing column index, ``x``), the last
three the direction of a column (increasing row index, ``y``); (0028,0030) *Pixel Spacing*
is (row spacing, column spacing), i.e. the step along ``y`` then along ``x``. Patient
coordinates are LPS millimetres.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DicomArrayError

#: Relative deviation from the median step above which spacing counts as uneven.
SPACING_RTOL = 0.05
#: Angle (degrees) between the slice step and the normal above which a stack is tilted.
TILT_TOLERANCE_DEGREES = 0.05
#: (0020,0037) *Image Orientation (Patient)* assumed when a volume has none: axial.
DEFAULT_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
#: (0028,0030) *Pixel Spacing* assumed when a volume has none, in mm.
DEFAULT_PIXEL_SPACING = (1.0, 1.0)


def slice_normal(orientation: np.ndarray | list[float]) -> np.ndarray:
    """Unit normal of the image plane: row direction x column direction.

    Parameters
    ----------
    orientation : array-like of 6 floats
        (0020,0037) *Image Orientation (Patient)*.
    """
    cosines = np.asarray(orientation, dtype=float).reshape(2, 3)
    normal = np.cross(cosines[0], cosines[1])
    norm = np.linalg.norm(normal)
    if not np.isfinite(norm) or norm < 1e-6:
        raise DicomArrayError(f"ImageOrientationPatient {list(orientation)} has parallel cosines")
    return normal / norm


def orientation_of(attrs: Mapping[str, Any]) -> np.ndarray:
    """The checked (0020,0037) *Image Orientation (Patient)* of a volume's attrs.

    Parameters
    ----------
    attrs : mapping
        A volume's attrs; without the tag, :data:`DEFAULT_ORIENTATION` (axial) is used.

    Returns
    -------
    numpy.ndarray
        Six float direction cosines, row direction then column direction.

    Raises
    ------
    DicomArrayError
        If the tag does not hold six finite numbers, or its two directions are parallel.
    """
    value = attrs.get("ImageOrientationPatient")
    if value is None:
        return np.asarray(DEFAULT_ORIENTATION)
    cosines = _finite_numbers(value, 6, "ImageOrientationPatient", "direction cosines")
    slice_normal(cosines)  # refuses parallel or zero directions
    return np.asarray(cosines)


def pixel_spacing_of(attrs: Mapping[str, Any]) -> tuple[float, float]:
    """The checked (0028,0030) *Pixel Spacing* of a volume's attrs: (row, column) in mm.

    Without the tag, :data:`DEFAULT_PIXEL_SPACING` is used.

    Raises
    ------
    DicomArrayError
        If the tag does not hold two finite numbers greater than 0.
    """
    value = attrs.get("PixelSpacing")
    if value is None:
        return DEFAULT_PIXEL_SPACING
    row, column = _finite_numbers(value, 2, "PixelSpacing", "spacings in mm")
    if not (row > 0 and column > 0):
        raise DicomArrayError(f"PixelSpacing {value!r} must be two spacings greater than 0 mm")
    return row, column


def _finite_numbers(value: Any, count: int, keyword: str, what: str) -> list[float]:
    """``value`` as ``count`` finite floats, or a DicomArrayError saying what is wrong."""
    items = list(value) if isinstance(value, list | tuple | np.ndarray) else [value]
    try:
        numbers = [float(v) for v in items]
    except (TypeError, ValueError):
        numbers = []
    if len(items) != count or len(numbers) != count or not all(map(math.isfinite, numbers)):
        raise DicomArrayError(f"{keyword} {value!r} must be {count} finite numbers ({what})")
    return numbers


def positions_along_normal(positions: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Project (N, 3) (0020,0032) *Image Position (Patient)* values onto the slice normal."""
    return np.asarray(positions, dtype=float).reshape(-1, 3) @ np.asarray(normal, dtype=float)


def uneven_steps(z: np.ndarray, *, rtol: float = SPACING_RTOL) -> list[tuple[int, float]]:
    """Steps between consecutive sorted positions that differ from the median step.

    Returns
    -------
    list of (index, step)
        ``index`` is the slice after which the unusual step occurs.
    """
    steps = np.diff(np.asarray(z, dtype=float))
    if steps.size < 2:
        return []
    median = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - median) > rtol * abs(median))
    return [(int(i), float(steps[i])) for i in bad]


def tilt_degrees(positions: np.ndarray, normal: np.ndarray) -> float:
    """Angle in degrees between the first-to-last slice step and the slice normal."""
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    if len(positions) < 2:
        return 0.0
    step = positions[-1] - positions[0]
    length = np.linalg.norm(step)
    if length < 1e-6:
        return 0.0
    cosine = abs(float(step @ normal)) / length
    return float(np.degrees(np.arccos(np.clip(cosine, 0.0, 1.0))))


@dataclass(frozen=True)
class SeriesGeometry:
    """Where a stack of slices sits in the patient.

    Attributes
    ----------
    orientation : numpy.ndarray
        The six direction cosines, row direction then column direction.
    positions : numpy.ndarray
        (N, 3) ImagePositionPatient of each slice, in volume order; NaN when unknown.
    z : numpy.ndarray
        (N,) position of each slice along the normal (or the fallback order key), ascending.
    pixel_spacing : tuple of float
        (row spacing, column spacing) in mm: the step along ``y`` then ``x``.
    shape : tuple of int
        (slices, rows, columns).
    """

    orientation: np.ndarray
    positions: np.ndarray
    z: np.ndarray
    pixel_spacing: tuple[float, float]
    shape: tuple[int, int, int]

    @property
    def normal(self) -> np.ndarray:
        return slice_normal(self.orientation)

    @property
    def slice_spacing(self) -> float:
        """Median step between slices along the normal (mm); NaN for one slice."""
        steps = np.diff(self.z)
        return float(np.median(steps)) if steps.size else float("nan")

    @property
    def y(self) -> np.ndarray:
        """Positions of the rows along the column direction (mm)."""
        start = float(self.positions[0] @ self.orientation[3:]) if self.has_positions else 0.0
        return start + np.arange(self.shape[1]) * self.pixel_spacing[0]

    @property
    def x(self) -> np.ndarray:
        """Positions of the columns along the row direction (mm)."""
        start = float(self.positions[0] @ self.orientation[:3]) if self.has_positions else 0.0
        return start + np.arange(self.shape[2]) * self.pixel_spacing[1]

    @property
    def has_positions(self) -> bool:
        return bool(np.isfinite(self.positions).all())

    def affine(self) -> np.ndarray:
        """4 x 4 matrix from (z, y, x, 1) indices to LPS patient millimetres."""
        if self.has_positions:
            return affine_from(self.orientation, self.positions, self.pixel_spacing)
        # no positions: place the slices along the normal at their fallback z values
        spacing = self.slice_spacing if np.isfinite(self.slice_spacing) else 1.0
        normal = self.normal
        synthetic = np.outer(self.z[0] + np.arange(self.shape[0]) * spacing, normal)
        return affine_from(self.orientation, synthetic, self.pixel_spacing)


def affine_from(
    orientation: np.ndarray, positions: np.ndarray, pixel_spacing: tuple[float, float]
) -> np.ndarray:
    """4 x 4 matrix mapping (z, y, x, 1) array indices to LPS patient coordinates in mm.

    The ``z`` column is the mean step between slices (first to last position), so for a
    tilted (sheared) stack it maps the first slice's plane exactly and the others on
    average. With one slice, the step is the normal times one millimetre.
    """
    orientation = np.asarray(orientation, dtype=float)
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    row_dir, col_dir = orientation[:3], orientation[3:]
    if len(positions) > 1:
        step = (positions[-1] - positions[0]) / (len(positions) - 1)
    else:
        step = slice_normal(orientation)
    affine = np.eye(4)
    affine[:3, 0] = step
    affine[:3, 1] = col_dir * pixel_spacing[0]
    affine[:3, 2] = row_dir * pixel_spacing[1]
    affine[:3, 3] = positions[0]
    return affine
