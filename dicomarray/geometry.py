"""Slice geometry, pure numpy: normals, positions along the normal, spacing checks, affines.

Conventions follow DICOM (PS3.3 C.7.6.2): the first three values of (0020,0037) *Image
Orientation (Patient)* are the direction of a row (increasing column index, ``x``), the last
three the direction of a column (increasing row index, ``y``); (0028,0030) *Pixel Spacing*
is (row spacing, column spacing), i.e. the step along ``y`` then along ``x``. Patient
coordinates are LPS millimetres.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DicomArrayError

#: Relative deviation from the median step above which spacing counts as uneven.
SPACING_RTOL = 0.05
#: Angle (degrees) between the slice step and the normal above which a stack is tilted.
TILT_TOLERANCE_DEGREES = 0.05
#: Largest distance (mm) between a frame's (0020,0032) *Image Position (Patient)* and
#: where the volume's affine puts it before the series is flagged.
POSITION_TOLERANCE_MM = 0.01
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


def step_runs(z: np.ndarray, *, rtol: float = SPACING_RTOL) -> list[tuple[int, float]]:
    """Consecutive slice steps grouped into runs of one step: ``[(steps in run, mean step)]``.

    A step joins the run before it when it is within ``rtol`` of that run's first step. A
    regular stack is one run; an irregular one (a gap, two blocks of slice thickness) has
    several. Steps are signed, in the order of ``z``.
    """
    steps = np.diff(np.asarray(z, dtype=float))
    runs: list[list[float]] = []
    for step in steps:
        if runs and abs(step - runs[-1][0]) <= rtol * abs(runs[-1][0]):
            runs[-1].append(float(step))
        else:
            runs.append([float(step)])
    return [(len(run), float(np.mean(run))) for run in runs]


def regular_step(z: np.ndarray, *, rtol: float = SPACING_RTOL) -> float | None:
    """The one step between slices (mm, signed), or None: one slice, or irregular steps.

    Irregular means a step differs from the median step by more than ``rtol`` of it, or
    the steps change sign. A mean is never offered for an irregular stack: a volume or a
    pixdim computed from it would be wrong for every block but one.
    """
    steps = np.diff(np.asarray(z, dtype=float))
    if not steps.size or not np.isfinite(steps).all():
        return None
    median = float(np.median(steps))
    if median == 0 or (np.abs(steps - median) > rtol * abs(median)).any():
        return None
    return float(steps.mean())


def slice_spacing_report(z: np.ndarray, *, rtol: float = SPACING_RTOL) -> dict[str, Any]:
    """The assembly report's ``slice_spacing`` and ``slice_steps`` of slice positions ``z``.

    ``slice_spacing`` is the one step in mm (:func:`regular_step`, unsigned), None without
    one; ``slice_steps`` the runs of one step (:func:`step_runs`), ``[{"steps", "mm"}]``.
    """
    step = regular_step(z, rtol=rtol)
    return {
        "slice_spacing": None if step is None else abs(step),
        "slice_steps": [{"steps": n, "mm": round(abs(mm), 6)} for n, mm in step_runs(z, rtol=rtol)],
    }


def describe_steps(z: np.ndarray, *, rtol: float = SPACING_RTOL) -> str:
    """One sentence on the slice steps, naming where each new step starts.

    For example "two blocks: 14 slices at 4 mm, then 14 at 7 mm after slice 13 (z = 52
    mm)": the first run of ``n`` steps holds ``n + 1`` slices, each later run adds ``n``.
    """
    z = np.asarray(z, dtype=float)
    runs = step_runs(z, rtol=rtol)
    if not runs:
        return "one slice"
    parts = [f"{runs[0][0] + 1} slices at {abs(runs[0][1]):.3g} mm"]
    after = runs[0][0]
    for n, step in runs[1:]:
        parts.append(f"then {n} at {abs(step):.3g} mm after slice {after} (z = {z[after]:.4g} mm)")
        after += n
    if len(runs) == 1:
        return f"regular: {parts[0]}"
    count = _COUNT_WORDS.get(len(runs), str(len(runs)))
    return f"{count} blocks: " + ", ".join(parts)


_COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}


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


#: Smallest |cosine| between the slice normal and a patient axis for a plane to be named
#: after that axis (axial, coronal, sagittal); below it the plane is oblique (~37 degrees).
PLANE_COSINE = 0.8


def plane_of_tags(
    orientation: Any, positions: Any = None, *, rtol: float = SPACING_RTOL
) -> dict[str, Any]:
    """The plane and slice spacing of instances from their tag values alone (no volume).

    For tables of series (:func:`dicomarray.list_series`), which describe a series by its
    index rows without assembling it.

    Parameters
    ----------
    orientation : sequence of 6 numbers
        (0020,0037) *Image Orientation (Patient)* of the instances.
    positions : list of sequences of 3 numbers, optional
        (0020,0032) *Image Position (Patient)* of each instance, in any order.
    rtol : float
        As :data:`SPACING_RTOL`.

    Returns
    -------
    dict
        ``plane``: ``"AXIAL"``, ``"CORONAL"``, ``"SAGITTAL"`` (the patient axis the normal
        lies within :data:`PLANE_COSINE` of) or ``"OBLIQUE"``; ``slice_spacing``: the one
        distance between the slice planes in mm. Each is None when the tags cannot tell:
        an orientation that is not six usable cosines; for the spacing also a missing or
        malformed position, one instance, repeated positions or no one step (a gap, blocks
        of different spacing: never a median).
    """
    try:
        normal = slice_normal(_finite_numbers(orientation, 6, "ImageOrientationPatient", ""))
    except DicomArrayError:
        return {"plane": None, "slice_spacing": None}
    main = int(np.argmax(np.abs(normal)))
    plane = (
        ("SAGITTAL", "CORONAL", "AXIAL")[main] if abs(normal[main]) >= PLANE_COSINE else "OBLIQUE"
    )
    try:
        points = [_finite_numbers(p, 3, "ImagePositionPatient", "") for p in positions or ()]
    except DicomArrayError:  # one position missing or malformed: no spacing to tell
        points = []
    step = regular_step(np.sort(positions_along_normal(np.asarray(points), normal)), rtol=rtol)
    return {"plane": plane, "slice_spacing": None if step is None else abs(step)}


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


def plane_coords(
    affine: Any, orientation: Any, first_position: Any, dims: Sequence[str], shape: Sequence[int]
) -> dict[str, np.ndarray]:
    """The ``y`` and ``x`` coordinates (mm, ``origin`` 0) that give back ``affine``.

    The way back from :meth:`VolumeGeometry.affine` for an array stored without its
    coordinates (an npy and its sidecar): the signed step of each of ``y`` and ``x`` along
    its DICOM direction, and the first voxel's offset from its slice's (0020,0032)
    ``first_position`` along it. A flipped axis (after ``reorient``) gets a negative step
    and starts at its far end, so the array reads back where it lies.

    Parameters
    ----------
    affine : array_like
        4 x 4, indices in ``dims`` order to LPS mm.
    orientation : array_like
        (0020,0037) *Image Orientation (Patient)*: row, then column direction cosines.
    first_position : array_like
        (0020,0032) of the array's first slice.
    dims, shape : sequence
        The array's dims (``z``, ``y`` and ``x`` in any order) and their sizes.

    Returns
    -------
    dict
        ``{"y": values, "x": values}``, each as :meth:`VolumeGeometry.of` reads them with
        an ``origin`` attr of 0.
    """
    affine = np.asarray(affine, dtype=float)
    cosines = np.asarray(orientation, dtype=float)
    offset = affine[:3, 3] - np.asarray(first_position, dtype=float)
    coords = {}
    for dim, direction in (("y", cosines[3:]), ("x", cosines[:3])):
        axis = list(dims).index(dim)
        step = float(affine[:3, axis] @ direction)
        coords[dim] = float(offset @ direction) + step * np.arange(shape[axis])
    return coords


#: The spatial dims of a volume: slices, rows, columns.
SPATIAL_DIMS = ("z", "y", "x")
#: The dims one volume spans: the spatial ones and a colour series' ``channel`` (RGB).
VOLUME_DIMS = (*SPATIAL_DIMS, "channel")


def extra_dims(volume: Any) -> list[str]:
    """The dims of an n-D series before its volumes' (``t``, ``echo`` ...); none for 3-D."""
    return [str(d) for d in volume.dims if d not in VOLUME_DIMS]


#: Coordinate names for the three components of (0020,0032) *Image Position (Patient)*.
POSITION_COORDS = ("image_position_l", "image_position_p", "image_position_s")
#: The letters of each LPS axis's direction and of its opposite: (+L, -L), (+P, -P),
#: (+S, -S). Axis codes, orientation codes and the labels on pictures all use them.
DIRECTION_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))


@dataclass(frozen=True)
class VolumeGeometry:
    """Where every voxel of a volume lies in the patient, from its coords and attrs alone.

    The one owner of a volume's geometry: the accessor, pictures, every writer, batch and
    the CLI ask this object for an affine, a spacing, a superior direction or a tilt, and
    compute none themselves. It reads no pixels (after highdicom's ``VolumeGeometry``).
    Build it with :meth:`of`; it follows any ``isel``, ``sel``, ``sortby`` or
    ``transpose`` of the volume, because the coords it is built from do.

    Attributes
    ----------
    dims : tuple of str
        The spatial dims (``z``, ``y``, ``x``) in the array's own order; other dims (time,
        echo) are not spatial and are left out.
    shape : tuple of int
        The sizes of ``dims``.
    orientation : numpy.ndarray
        (0020,0037) *Image Orientation (Patient)*: row direction, then column direction.
    slice_positions : numpy.ndarray
        (slices, 3) LPS millimetres of each slice's first voxel (row ``y[0]``, column
        ``x[0]``), in the array's slice order. For a stack without positions they are
        placed along the normal at their ``z`` values; :attr:`positions_known` is False.
    row_step, column_step : float
        Signed millimetres from one row (``y`` index) to the next along the column
        direction, and from one column (``x`` index) to the next along the row direction:
        negative after a flip.
    positions_known : bool
        Whether the slice positions come from (0020,0032) *Image Position (Patient)* or
        (0020,1041) *Slice Location*, not from the order of the files.
    fallback_step : float or None
        The slice step the attrs give ((0018,0088) *Spacing Between Slices*, else
        (0018,0050) *Slice Thickness*), used only where positions cannot tell: one slice,
        or slices ordered without positions.
    orientation_known : bool
        Whether :attr:`orientation` is the volume's own (0020,0037) *Image Orientation
        (Patient)*, not :data:`DEFAULT_ORIENTATION` assumed for attrs without it (a numpy
        array made into a DataArray, attrs dropped by arithmetic).
    rtol : float
        Relative difference between slice steps above which the stack is irregular.
    """

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    orientation: np.ndarray
    slice_positions: np.ndarray
    row_step: float
    column_step: float
    positions_known: bool
    fallback_step: float | None
    orientation_known: bool = True
    rtol: float = SPACING_RTOL

    @classmethod
    def of(cls, volume: Any, *, rtol: float = SPACING_RTOL) -> VolumeGeometry:
        """The geometry of a DataArray (or Dataset variable) opened by dicomarray.

        Parameters
        ----------
        volume : xarray.DataArray
            A volume with dims ``z``, ``y`` and ``x`` in any order (other dims allowed),
            coordinates ``z``, ``y``, ``x`` in mm and, when the series has them, the
            per-slice :data:`POSITION_COORDS`; the attrs hold (0020,0037) and (0028,0030).
        rtol : float
            As :data:`SPACING_RTOL`.

        Raises
        ------
        DicomArrayError
            For a missing spatial dim, malformed orientation or pixel spacing, or rows
            (columns) that are not evenly spaced, which no affine can describe.
        """
        dims = tuple(str(d) for d in volume.dims if d in SPATIAL_DIMS)
        if sorted(dims) != sorted(SPATIAL_DIMS):
            raise DicomArrayError(
                f"a volume's geometry needs dims z, y and x; this one has {tuple(volume.dims)}"
            )
        attrs = volume.attrs
        orientation = orientation_of(attrs)
        row_dir, col_dir = orientation[:3], orientation[3:]
        spacing = pixel_spacing_of(attrs)
        row_step, dy = _plane_axis(volume, "y", spacing[0])
        column_step, dx = _plane_axis(volume, "x", spacing[1])
        fallback = _fallback_step(attrs)
        z = np.asarray(volume["z"].values, dtype=float).reshape(-1)
        known = volume["z"].attrs.get("units", "mm") == "mm"
        if all(name in volume.coords for name in POSITION_COORDS):
            first = np.stack([np.asarray(volume[n].values, float) for n in POSITION_COORDS], -1)
        else:
            along = z if known else z * (fallback or 1.0)
            first = np.outer(along, slice_normal(orientation))
        return cls(
            dims=dims,
            shape=tuple(int(volume.sizes[d]) for d in dims),
            orientation=orientation,
            slice_positions=first.reshape(-1, 3) + col_dir * dy + row_dir * dx,
            row_step=row_step,
            column_step=column_step,
            positions_known=known,
            fallback_step=fallback,
            orientation_known=attrs.get("ImageOrientationPatient") is not None,
            rtol=rtol,
        )

    # -- directions ----------------------------------------------------------------------

    @property
    def normal(self) -> np.ndarray:
        """Unit normal of the image plane: row direction x column direction (LPS)."""
        return slice_normal(self.orientation)

    def direction(self, dim: str) -> np.ndarray:
        """Unit LPS vector of increasing index along ``dim`` (for ``z``: the slice normal,
        signed by the order of the slices, so tilt does not enter)."""
        if dim == "y":
            return self.orientation[3:] * np.sign(self.row_step)
        if dim == "x":
            return self.orientation[:3] * np.sign(self.column_step)
        step = self.along_normal[-1] - self.along_normal[0] if self.n_slices > 1 else 1.0
        return self.normal * (1.0 if step >= 0 else -1.0)

    def rotation(self) -> np.ndarray:
        """3 x 3 matrix whose columns are :meth:`direction` of each dim, in array order:
        orthonormal, the rotation part of the affine without any shear (a NIfTI qform)."""
        return np.stack([self.direction(d) for d in self.dims], axis=1)

    def axis_codes(self) -> tuple[str, ...]:
        """Patient direction each dim runs toward, in array order: e.g. ``("S", "P", "L")``
        (LPS letters, as nibabel's ``aff2axcodes`` gives RAS ones)."""
        codes = []
        for dim in self.dims:
            vector = self.direction(dim)
            axis = int(np.argmax(np.abs(vector)))
            codes.append(DIRECTION_LETTERS[axis][0 if vector[axis] > 0 else 1])
        return tuple(codes)

    def orientation_code(self) -> str:
        """The :meth:`axis_codes` fastest axis first, as ITK, nibabel and dcm2niix name an
        orientation: ``"LPS"`` for a plain axial (see :mod:`dicomarray.reorient`)."""
        return "".join(reversed(self.axis_codes()))

    def superior_is_ascending(self, dim: str = "z") -> bool:
        """Whether increasing index along ``dim`` moves toward the head (S component > 0)."""
        return bool(self.direction(dim)[2] > 0)

    @property
    def superior_normal(self) -> np.ndarray:
        """The slice normal turned toward the head (S component >= 0), whatever the order
        of the slices: "up" in pictures, and the order of a montage."""
        return self.normal if self.normal[2] >= 0 else -self.normal

    def in_slice_indices(self, points: np.ndarray) -> np.ndarray:
        """Fractional ``(y, x)`` indices of ``points[k]`` in the plane of slice ``k``.

        The inverse of :meth:`world` within each slice: ``points`` is ``(slices, ..., 3)``
        LPS mm, projected along the normal onto its slice's plane; the result is
        ``(slices, ..., 2)`` and exact for tilted and irregular stacks.
        """
        offsets = np.asarray(points, dtype=float) - self.slice_positions.reshape(
            (self.n_slices,) + (1,) * (np.ndim(points) - 2) + (3,)
        )
        rows = offsets @ self.orientation[3:] / self.row_step
        columns = offsets @ self.orientation[:3] / self.column_step
        return np.stack([rows, columns], axis=-1)

    # -- slices ----------------------------------------------------------------------------

    @property
    def n_slices(self) -> int:
        return len(self.slice_positions)

    @property
    def along_normal(self) -> np.ndarray:
        """(slices,) position of each slice plane along the normal, in mm, array order."""
        return positions_along_normal(self.slice_positions, self.normal)

    @property
    def slice_step(self) -> float | None:
        """The one signed step between slice planes (mm), or None when there is none: an
        irregular stack (a gap, blocks of different thickness), one slice, or slices
        without positions and no (0018,0088)/(0018,0050) to space them."""
        if not self.positions_known:
            return self.fallback_step if self.n_slices > 1 else None
        return regular_step(self.along_normal, rtol=self.rtol)

    @property
    def is_regular(self) -> bool:
        """Whether one slice step describes every slice (one slice counts as regular)."""
        return self.n_slices == 1 or self.slice_step is not None

    def step_runs(self) -> list[tuple[int, float]]:
        """Runs of one slice step, ``[(steps, mm)]``, as :func:`step_runs`."""
        return step_runs(self.along_normal, rtol=self.rtol)

    def describe_steps(self) -> str:
        """The slice steps in one sentence, as :func:`describe_steps`."""
        return describe_steps(self.along_normal, rtol=self.rtol)

    def spacing_report(self) -> dict[str, Any]:
        """``slice_spacing`` and ``slice_steps`` along the normal, as
        :func:`slice_spacing_report` (the assembly report's figures)."""
        return slice_spacing_report(self.along_normal, rtol=self.rtol)

    @property
    def spacing(self) -> dict[str, float | None]:
        """Voxel spacing in mm per spatial dim, in array order; ``z`` is None when the
        stack has no one slice step (never a median)."""
        step = self.slice_step
        values = {"z": None if step is None else abs(step)}
        values.update(y=abs(self.row_step), x=abs(self.column_step))
        return {dim: values[dim] for dim in self.dims}

    def voxel_volume(self) -> float:
        """Volume of one voxel in mm^3; refuses an irregular stack.

        Raises
        ------
        DicomArrayError
            If the stack has no one slice step (see :meth:`describe_steps`).
        """
        step = self.slice_step
        if step is None:
            raise DicomArrayError(
                f"no single voxel volume: the slice steps are not one ({self.describe_steps()})"
            )
        return abs(step * self.row_step * self.column_step)

    @property
    def tilt_degrees(self) -> float:
        """Angle between the first-to-last slice step and the normal (gantry tilt)."""
        return tilt_degrees(self.slice_positions, self.normal)

    @property
    def is_sheared(self) -> bool:
        """Whether slices are offset in-plane from one to the next (a tilted gantry)."""
        return self.tilt_degrees > TILT_TOLERANCE_DEGREES

    # -- mappings --------------------------------------------------------------------------

    def _step_vector(self) -> np.ndarray:
        if self.n_slices > 1:
            return (self.slice_positions[-1] - self.slice_positions[0]) / (self.n_slices - 1)
        return self.normal * (self.fallback_step or 1.0)

    def affine(self) -> np.ndarray:
        """4 x 4 matrix from indices in the array's dim order (plus 1) to LPS mm.

        The slice column is the mean step from the first slice to the last, so a tilted
        stack is mapped exactly, with its shear; an irregular one is mapped exactly only
        at its ends (use :meth:`world` for true positions, or check :attr:`is_regular`).
        """
        columns = {
            "z": self._step_vector(),
            "y": self.orientation[3:] * self.row_step,
            "x": self.orientation[:3] * self.column_step,
        }
        affine = np.eye(4)
        for axis, dim in enumerate(self.dims):
            affine[:3, axis] = columns[dim]
        affine[:3, 3] = self.slice_positions[0]
        return affine

    def rotation_affine(self) -> np.ndarray:
        """4 x 4 matrix like :meth:`affine`, without shear: :meth:`rotation` times the voxel
        sizes, the same origin.

        The slice size is the spacing of the planes along the normal (not the length of a
        tilted step); for one slice, or an irregular stack, the length of the affine's
        slice column. Equal to :meth:`affine` for a stack that is not sheared; for one
        that is, the rigid placement a NIfTI qform can hold.
        """
        affine = self.affine()
        sizes = [
            self.spacing[dim] or float(np.linalg.norm(affine[:3, axis]))
            for axis, dim in enumerate(self.dims)
        ]
        rigid = np.eye(4)
        rigid[:3, :3] = self.rotation() * sizes
        rigid[:3, 3] = affine[:3, 3]
        return rigid

    def world(self, indices: np.ndarray) -> np.ndarray:
        """LPS mm of voxels at ``(..., 3)`` indices in the array's dim order, using each
        slice's own position (exact for irregular and tilted stacks; fractional indices
        between slices are interpolated linearly)."""
        indices = np.asarray(indices, dtype=float)
        by_dim = {dim: indices[..., axis] for axis, dim in enumerate(self.dims)}
        k = np.arange(self.n_slices, dtype=float)
        origin = np.stack(
            [np.interp(by_dim["z"], k, self.slice_positions[:, c]) for c in range(3)], -1
        )
        return (
            origin
            + by_dim["y"][..., None] * self.orientation[3:] * self.row_step
            + by_dim["x"][..., None] * self.orientation[:3] * self.column_step
        )

    def summary(self) -> dict[str, Any]:
        """The geometry as plain JSON values, for sidecars and reports."""
        return {
            "dims": list(self.dims),
            "spacing": [self.spacing[d] for d in self.dims],
            "regular": self.is_regular,
            "slice_steps": self.spacing_report()["slice_steps"],
            "slice_steps_text": self.describe_steps(),
            "origin": self.slice_positions[0].tolist(),
            "orientation": self.orientation.tolist(),
            "slice_normal": self.normal.tolist(),
            "axis_codes": "".join(self.axis_codes()),
            "tilt_degrees": round(self.tilt_degrees, 6),
            "affine": self.affine().tolist(),
        }


def _plane_axis(volume: Any, dim: str, pixel_spacing: float) -> tuple[float, float]:
    """The signed step along ``y`` or ``x`` and the selection's offset (mm) from the source's
    first row or column (the coordinate's ``origin`` attr). Without a coordinate (an npy
    read back, an array built from numpy), the rows and columns are as stored, one pixel
    spacing apart: xarray's stand-in for a missing coordinate is the index, not mm."""
    if dim not in volume.coords:
        return pixel_spacing, 0.0
    values = np.asarray(volume[dim].values, dtype=float).reshape(-1)
    offset = float(values[0] - volume[dim].attrs.get("origin", values[0])) if values.size else 0.0
    if values.size < 2:
        return pixel_spacing, offset
    steps = np.diff(values)
    step = float(steps.mean())
    if step == 0 or (np.abs(steps - step) > 1e-6 * abs(step) + 1e-9).any():
        raise DicomArrayError(
            f"the {dim} coordinate is not evenly spaced: no affine describes this selection"
        )
    return step, offset


def _fallback_step(attrs: Mapping[str, Any]) -> float | None:
    """(0018,0088) *Spacing Between Slices*, else (0018,0050) *Slice Thickness*, if usable."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = float(attrs.get(keyword))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if 0 < value < math.inf:
            return value
    return None
