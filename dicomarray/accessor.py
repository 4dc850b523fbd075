"""The ``.dicom`` accessor on DataArrays: thin methods over the geometry, transforms and writers.

Every xarray operation makes a new accessor object, so nothing is stored here: all state
lives in the DataArray's coordinates and attrs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from .attrs import POSITION_COORDS
from .errors import DicomArrayError
from .geometry import affine_from, slice_normal


@xr.register_dataarray_accessor("dicom")
class DicomAccessor:
    """DICOM-aware views of a ``(z, y, x)`` volume opened by :func:`dicomarray.open_series`."""

    def __init__(self, obj: xr.DataArray) -> None:
        self._obj = obj

    @property
    def metadata(self) -> dict[str, Any]:
        """The series' common tags and assembly report: a copy of the attrs."""
        return dict(self._obj.attrs)

    @property
    def affine(self) -> np.ndarray:
        """4 x 4 matrix from ``(z, y, x, 1)`` indices to LPS patient coordinates in mm.

        Built from (0020,0037) *Image Orientation (Patient)* and (0028,0030) *Pixel
        Spacing* in the attrs and the per-slice position coordinates, so it follows any
        selection of slices. For a tilted (sheared) stack it maps the first slice's plane
        and the mean step between slices.
        """
        obj = self._obj
        if tuple(obj.dims) != ("z", "y", "x"):
            raise DicomArrayError(f"affine needs dims ('z', 'y', 'x'), not {obj.dims}")
        orientation = np.asarray(
            obj.attrs.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), float
        )
        spacing = _pixel_spacing(obj)
        if all(name in obj.coords for name in POSITION_COORDS):
            positions = np.stack([obj[name].values for name in POSITION_COORDS], axis=1)
        else:
            positions = np.outer(obj["z"].values, slice_normal(orientation))
        affine = affine_from(orientation, positions, spacing)
        # a selection of rows or columns starts elsewhere in the plane
        affine[:3, 3] += affine[:3, 1] * _offset(obj, "y", spacing[0])
        affine[:3, 3] += affine[:3, 2] * _offset(obj, "x", spacing[1])
        return affine


def _pixel_spacing(obj: xr.DataArray) -> tuple[float, float]:
    """Row and column spacing from the coordinates, so that strided selections stay right."""
    spacing = obj.attrs.get("PixelSpacing", [1.0, 1.0])
    steps = []
    for axis, dim in enumerate(("y", "x")):
        values = obj[dim].values
        steps.append(float(values[1] - values[0]) if values.size > 1 else float(spacing[axis]))
    return steps[0], steps[1]


def _offset(obj: xr.DataArray, dim: str, step: float) -> float:
    """Rows (or columns) between the source series' first pixel and this selection's."""
    values = obj[dim].values
    if not values.size or "origin" not in obj[dim].attrs:
        return 0.0
    return float((values[0] - obj[dim].attrs["origin"]) / step)
