"""Resampling: a volume's values on a new grid in patient space, lazily, chunk by chunk.

Three operations share one mechanism and differ only in the grid they ask for:

- :func:`resample`: a regular grid of the spacing asked, along the volume's own
  directions (:meth:`~dicomarray.geometry.VolumeGeometry.direction` of ``z``, ``y`` and
  ``x``: the slice normal, never a tilted step), covering the source's extent. Its
  affine is rotation and spacing only.
- :func:`equalize`: an irregular stack (a gap, blocks of different slice steps) onto its
  finest slice step, in-plane unchanged (dcm2niix's ``_Eq``).
- :func:`detilt`: every slice plane kept, each slice shifted in-plane so that the shear
  of a tilted gantry is gone (dcm2niix's ``_Tilt``): the same slices, a rotation-only
  affine.

Where a value comes from. Each output voxel is a point in the patient (LPS mm); its
value is sampled in the source at that point through the true position of every source
slice (:meth:`~dicomarray.geometry.VolumeGeometry.world`, exact for tilted and irregular
stacks), so the result's own geometry says exactly where its values were taken. Voxels
more than half a voxel outside the source (the corners of a tilted stack's grid) are NaN.

Values. Stored values are interpolated as they are, and one rescale for the whole series
still applies to them: interpolation is a weighted mean with weights summing to one, so
it commutes with ``stored * slope + intercept``. When slices have their own rescale (the
``rescale_slope`` / ``rescale_intercept`` coordinates) and an output slice mixes several
source slices, their stored values are not comparable: the modality values
(:func:`dicomarray.transforms.modality_values`, padding kept) are interpolated instead,
and ``attrs["dicomarray_values"]`` says ``"modality"``. Output slices that lie on source
slice planes (every slice of :func:`detilt`, or a resample that keeps the slice step)
mix nothing between slices: they keep the stored values and every per-slice coordinate
of their source slice (``source_file``, ``frame``, ``sop_instance_uid``, rescale, times).
Otherwise the per-slice coordinates describe no output slice and are dropped. Either way
each output slice gets its own (0020,0032) position coordinates, ``y`` and ``x`` get
new coordinates, and ``attrs["dicomarray_resampled"]`` records what was done.

Laziness. Each output chunk is one dask task over exactly the source slices it needs:
the nearest slice of each output slice (``nearest``), the one or two slices around it
(``linear``), or a block of them with :data:`CUBIC_MARGIN` more slices each side
(``cubic``: spline coefficients are computed on that block). Taking one output slice
reads only those files. The result pickles and runs on dask.distributed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import xarray as xr

from . import transforms
from .errors import ResampleError
from .geometry import POSITION_COORDS, SPATIAL_DIMS, VolumeGeometry, positions_along_normal
from .labels import series_label
from .pixels import MAX_VOLUME_BYTES
from .volume import ASSEMBLY_ATTR, CHUNK_BYTES

#: Interpolation methods and their spline orders.
METHODS: dict[str, int] = {"nearest": 0, "linear": 1, "cubic": 3}
#: Attribute recording what a resampling did (a JSON-safe dict).
RESAMPLED_ATTR = "dicomarray_resampled"
#: Extra source slices on each side of a cubic block. The cubic spline's coefficients
#: depend on every sample, with a weight falling by 0.268 per slice (the pole of the
#: cubic B-spline filter): 8 slices leave the block's edge below 3e-5 of the values.
CUBIC_MARGIN = 8
#: Fractional indices closer than this to an integer are that integer (rounding noise).
_SNAP = 1e-6
#: How far outside the outermost voxel centres (in voxels) a point is still inside:
#: half a voxel, the voxel's own extent (as ITK's ``IsInsideBuffer``).
_HALF_VOXEL = 0.5
_RESCALE_COORDS = ("rescale_slope", "rescale_intercept")


def resample(volume: xr.DataArray, spacing: Any, *, method: str = "linear") -> xr.DataArray:
    """The volume on a regular grid of ``spacing`` along its own directions, lazily.

    The grid runs along the volume's slice normal and its row and column directions (no
    shear: a rotation-only affine) and covers the source's extent: it starts at the first
    voxel (for a tilted stack, at the corner of the box around every slice) and holds as
    many voxels of ``spacing`` as fit.

    Parameters
    ----------
    volume : xarray.DataArray
        A volume with dims ``z``, ``y`` and ``x`` in any order (as :meth:`reorient` leaves
        them) and slice positions. Other dims (``t``, ``echo``, ``diffusion``, a colour
        ``channel``) pass through: every volume along them (they share one geometry) is
        resampled the same way, chunk by chunk, each reading only its own frames.
    spacing : sequence of 3 floats, or mapping
        Millimetres between voxels along ``z``, ``y`` and ``x``, in that order whatever
        the array's order, or a mapping ``{"z": ..., "y": ..., "x": ...}``.
    method : {"linear", "nearest", "cubic"}, default "linear"
        Trilinear interpolation, the nearest voxel (keeps the dtype: labels stay labels),
        or a cubic B-spline (as SimpleITK's ``sitkBSpline``).

    Returns
    -------
    xarray.DataArray
        Lazy values (float32 for linear and cubic; nearest keeps the dtype unless some
        voxels fall outside the source, which are NaN), dims in the source's order, new
        ``z``, ``y``, ``x`` and position coordinates, attrs kept where they still apply
        (``PixelSpacing``, ``Rows``, ``Columns``, ``SpacingBetweenSlices`` and the
        assembly report's ``slice_spacing`` and ``slice_steps`` updated) and
        ``attrs["dicomarray_resampled"]``: the operation, method, spacing, shape, the
        values interpolated, the number of voxels outside the source and the source's
        geometry summary. See the module's docstring for values and coordinates.

    Raises
    ------
    ResampleError
        For a spacing that is not three numbers above 0 or that gives a grid of more than
        :data:`~dicomarray.pixels.MAX_VOLUME_BYTES` as float32, an unknown method, no
        dims z, y and x, slices without positions or not in position order; the message
        names the series.

    Notes
    -----
    NaN in the values (padding made NaN by ``hu()``) spreads: to the neighbouring output
    voxels with linear, over the whole block of slices with cubic (a spline is global).
    Resample stored values, or ``hu(padding="keep")``, and mask afterwards.

    Examples
    --------
    >>> iso = volume.dicom.resample((1.0, 1.0, 1.0))  # doctest: +SKIP
    >>> iso.dicom.geometry.spacing  # doctest: +SKIP
    {'z': 1.0, 'y': 1.0, 'x': 1.0}
    """
    wanted = _checked_spacing(spacing, volume)
    grid_for = partial(_covering_grid, spacing=wanted, label=series_label(volume.attrs))
    return _onto(volume, "resample", method, grid_for)


def equalize(volume: xr.DataArray, *, method: str = "linear") -> xr.DataArray:
    """An irregular stack on its finest regular slice step, in-plane unchanged (dcm2niix ``_Eq``).

    The slices of the result are evenly spaced along the stack, from the first slice to
    the last, at the smallest step of the source's step runs (a GE head CT of 14 slices
    at 4 mm then 14 at 7 mm comes out at 4 mm); rows and columns stay as they are. A
    tilted stack stays tilted: each new slice is shifted in-plane as the stack is (use
    :func:`detilt` on the result to remove the shear).

    Parameters
    ----------
    volume : xarray.DataArray
        As for :func:`resample`.
    method : {"linear", "nearest", "cubic"}, default "linear"
        As for :func:`resample`.

    Returns
    -------
    xarray.DataArray
        The volume itself when its slices already have one step; otherwise as for
        :func:`resample`, with ``attrs["dicomarray_resampled"]["operation"] == "equalize"``.

    Raises
    ------
    ResampleError
        As for :func:`resample`.
    """
    return _onto(volume, "equalize", method, _equal_grid, unchanged=lambda g: g.is_regular)


def detilt(volume: xr.DataArray, *, method: str = "linear") -> xr.DataArray:
    """A tilted (sheared) stack with each slice shifted in-plane onto one grid (dcm2niix ``_Tilt``).

    Every slice plane is kept (same slices, same positions along the normal, same pixel
    spacing); each slice is shifted within its plane so that all slices share one
    in-plane grid, grown by the shear (rows, for a tilt about the row direction) so that
    no slice loses a pixel, as dcm2niix's ``_Tilt`` does. The result's affine is rotation
    and spacing only, and its voxels lie on the DICOM slice planes. Each output slice
    comes from its source slice alone, so it keeps that slice's per-slice coordinates.
    Where a slice has no pixels (the corners the shear leaves) the values are NaN.

    Parameters
    ----------
    volume : xarray.DataArray
        As for :func:`resample`.
    method : {"linear", "nearest", "cubic"}, default "linear"
        In-plane interpolation, as for :func:`resample`.

    Returns
    -------
    xarray.DataArray
        The volume itself when it is not sheared; otherwise as for :func:`resample`, with
        ``attrs["dicomarray_resampled"]["operation"] == "detilt"``.

    Raises
    ------
    ResampleError
        As for :func:`resample`.
    """
    return _onto(volume, "detilt", method, _detilted_grid, unchanged=lambda g: not g.is_sheared)


# --------------------------------------------------------------------------------------------
# The source's frame and the grids asked of it
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """The source in its own frame: origin its first voxel, axes the unit directions of
    increasing ``z``, ``y`` and ``x``; every position is in mm along those axes."""

    origin: np.ndarray  # (3,) LPS mm of the first voxel
    axes: np.ndarray  # (3, 3): rows are the unit LPS directions of z, y, x
    planes: np.ndarray  # (slices,) each slice plane along the z axis, 0 first, increasing
    shifts: np.ndarray  # (slices, 2) each slice's first voxel along y and x: tilt shear
    pitch: np.ndarray  # (2,) mm from row to row, column to column
    size: tuple[int, int]  # rows, columns

    @classmethod
    def of(cls, geometry: VolumeGeometry, label: str) -> _Frame:
        if not geometry.positions_known:
            raise ResampleError(
                "the slices have no positions (ordered by SliceLocation or InstanceNumber "
                f"without ImagePositionPatient): there is no physical grid to resample; in {label}"
            )
        axes = np.stack([geometry.direction(dim) for dim in SPATIAL_DIMS])
        local = (geometry.slice_positions - geometry.slice_positions[0]) @ axes.T
        if (np.diff(local[:, 0]) <= 0).any():
            raise ResampleError(
                "the slices are not in order of position along the normal: "
                f"sort them first (volume.sortby('z')); in {label}"
            )
        return cls(
            origin=geometry.slice_positions[0],
            axes=axes,
            planes=local[:, 0],
            shifts=local[:, 1:],
            pitch=np.abs([geometry.row_step, geometry.column_step]),
            size=(geometry.shape[1], geometry.shape[2]),
        )

    @property
    def n_slices(self) -> int:
        return len(self.planes)

    def slice_index(self, planes: np.ndarray) -> np.ndarray:
        """Fractional source slice index of planes along the z axis; beyond the first or
        last slice, extended by the end step (so half a step out is index -0.5)."""
        planes = np.asarray(planes, dtype=float)
        if self.n_slices == 1:
            return np.where(np.abs(planes) < _SNAP, 0.0, np.nan)
        index = np.interp(planes, self.planes, np.arange(self.n_slices, dtype=float))
        first, last = np.diff(self.planes)[[0, -1]]
        index = np.where(planes < 0, planes / first, index)
        return np.where(
            planes > self.planes[-1], self.n_slices - 1 + (planes - self.planes[-1]) / last, index
        )

    def shift_at(self, index: np.ndarray) -> np.ndarray:
        """(n, 2) in-plane shift of the stack at fractional slice indices, interpolated as
        :meth:`VolumeGeometry.world` interpolates positions between slices."""
        index = np.nan_to_num(np.asarray(index, dtype=float))
        k = np.arange(self.n_slices, dtype=float)
        return np.stack([np.interp(index, k, self.shifts[:, c]) for c in range(2)], axis=-1)


@dataclass(frozen=True)
class _Grid:
    """Output voxels in the source's frame: slice planes along z, each slice's first voxel
    along y and x, the in-plane pitch and size."""

    planes: np.ndarray  # (slices,)
    starts: np.ndarray  # (slices, 2)
    pitch: np.ndarray  # (2,)
    size: tuple[int, int]

    def first_voxels(self, frame: _Frame) -> np.ndarray:
        """(slices, 3) LPS mm of each output slice's first voxel."""
        return frame.origin + self.planes[:, None] * frame.axes[0] + self.starts @ frame.axes[1:]

    def along(self, axis: int) -> np.ndarray:
        """(slices, n) position of every row (axis 0) or column (axis 1) of every slice."""
        steps = np.arange(self.size[axis]) * self.pitch[axis]
        return self.starts[:, axis, None] + steps[None, :]


def _covering_grid(
    geometry: VolumeGeometry, frame: _Frame, *, spacing: np.ndarray, label: str
) -> _Grid:
    """A regular grid of ``spacing`` (z, y, x) over the box around every source voxel;
    a ResampleError for one larger than a volume may be, before anything is allocated."""
    low = frame.shifts.min(axis=0)
    high = frame.shifts.max(axis=0) + (np.asarray(frame.size) - 1) * frame.pitch
    size = np.floor((high - low) / spacing[1:] + _SNAP).astype(int) + 1
    _check_grid_size([_count(frame.planes[-1], spacing[0]), *size], spacing, label)
    planes = _evenly(frame.planes[-1], spacing[0])
    starts = np.tile(low, (len(planes), 1))
    return _Grid(planes, starts, np.asarray(spacing[1:], dtype=float), (int(size[0]), int(size[1])))


def _equal_grid(geometry: VolumeGeometry, frame: _Frame) -> _Grid:
    """The finest step of the stack from its first slice to its last, each slice shifted
    in-plane as the stack is there; rows and columns as they are."""
    step = min(abs(mm) for _, mm in geometry.step_runs())
    planes = _evenly(frame.planes[-1], step)
    return _Grid(planes, frame.shift_at(frame.slice_index(planes)), frame.pitch, frame.size)


def _detilted_grid(geometry: VolumeGeometry, frame: _Frame) -> _Grid:
    """Every slice plane of the source on one in-plane grid at the source's pitch, grown
    by the shear so that no slice loses a pixel (as dcm2niix's ``_Tilt``)."""
    low = frame.shifts.min(axis=0)
    grown = np.ceil((frame.shifts.max(axis=0) - low) / frame.pitch - _SNAP).astype(int)
    size = np.asarray(frame.size) + grown
    starts = np.tile(low, (frame.n_slices, 1))
    return _Grid(frame.planes, starts, frame.pitch, (int(size[0]), int(size[1])))


def _count(extent: float, step: float) -> int:
    """How many of 0, step, 2 step, ... lie within ``extent`` (within rounding noise)."""
    return int(np.floor(extent / step + _SNAP)) + 1


def _evenly(extent: float, step: float) -> np.ndarray:
    """0, step, 2 step, ... up to ``extent`` (within rounding noise)."""
    return np.arange(_count(extent, step)) * float(step)


def _check_grid_size(shape: list[int], spacing: np.ndarray, label: str) -> None:
    """Refuse a grid of more float32 voxels than :data:`MAX_VOLUME_BYTES` (the bound
    ``open_series`` puts on a source): its sampling plan alone is computed at once, so a
    spacing far finer than the voxels would otherwise exhaust memory while building it."""
    voxels = float(np.prod(np.asarray(shape, dtype=float)))
    if voxels * np.dtype(np.float32).itemsize > MAX_VOLUME_BYTES:
        raise ResampleError(
            f"spacing {tuple(map(float, spacing))} mm gives a grid of "
            f"{' x '.join(map(str, shape))} voxels, more than "
            f"{MAX_VOLUME_BYTES / 2**30:.0f} GiB as float32: ask for a coarser spacing; in {label}"
        )


# --------------------------------------------------------------------------------------------
# Where each output voxel is sampled
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Fractional source indices of every output voxel (NaN outside the source): the slice
    of each output slice, the row of each of its rows, the column of each of its columns."""

    slices: np.ndarray  # (m,)
    rows: np.ndarray  # (m, rows)
    columns: np.ndarray  # (m, columns)
    order: int

    @classmethod
    def of(cls, frame: _Frame, grid: _Grid, order: int) -> _Plan:
        slices = _inside(frame.slice_index(grid.planes), frame.n_slices)
        shifts = frame.shift_at(slices)
        rows = (grid.along(0) - shifts[:, :1]) / frame.pitch[0]
        columns = (grid.along(1) - shifts[:, 1:]) / frame.pitch[1]
        rows, columns = _inside(rows, frame.size[0]), _inside(columns, frame.size[1])
        if order == 0:  # rounded here, so the slices to read are known exactly
            slices, rows, columns = (np.floor(index + 0.5) for index in (slices, rows, columns))
        return cls(slices, rows, columns, order)

    @property
    def size(self) -> tuple[int, int]:
        return self.rows.shape[1], self.columns.shape[1]

    @property
    def on_planes(self) -> bool:
        """Whether every output slice lies on one source slice plane (mixes no slices)."""
        return bool(np.isfinite(self.slices).all() and (self.slices == np.rint(self.slices)).all())

    def outside_count(self) -> int:
        """How many output voxels lie outside the source (and are NaN)."""
        inside = np.isfinite(self.rows).sum(1) * np.isfinite(self.columns).sum(1)
        inside = np.where(np.isfinite(self.slices), inside, 0)
        return int(len(self.slices) * self.size[0] * self.size[1] - inside.sum())


def _inside(index: np.ndarray, n: int) -> np.ndarray:
    """Indices snapped to integers within rounding noise, clipped onto the voxel centres
    when within half a voxel of them, NaN beyond."""
    index = np.where(np.abs(index - np.rint(index)) < _SNAP, np.rint(index), index)
    inside = (index >= -_HALF_VOXEL) & (index <= n - 1 + _HALF_VOXEL)
    return np.where(inside, np.clip(index, 0, n - 1), np.nan)


def _needed(slices: np.ndarray, order: int, n: int) -> np.ndarray:
    """The source slices an output chunk reads (sorted indices)."""
    slices = slices[np.isfinite(slices)]
    if not slices.size:
        return np.empty(0, dtype=np.intp)
    if order == 0 or (slices == np.rint(slices)).all():
        return np.unique(np.rint(slices).astype(np.intp))
    if order == 1:
        return np.unique(np.concatenate([np.floor(slices), np.ceil(slices)]).astype(np.intp))
    low = max(0, int(np.floor(slices.min())) - 1 - CUBIC_MARGIN)
    high = min(n, int(np.floor(slices.max())) + 3 + CUBIC_MARGIN)
    return np.arange(low, high, dtype=np.intp)


# --------------------------------------------------------------------------------------------
# Sampling one chunk (runs in the dask task)
# --------------------------------------------------------------------------------------------


def _sample_chunk(
    block: np.ndarray,
    *,
    needed: np.ndarray,
    slices: np.ndarray,
    rows: np.ndarray,
    columns: np.ndarray,
    order: int,
    out_dtype: np.dtype,
) -> np.ndarray:
    """The output slices of one chunk from ``block``, the source slices ``needed``."""
    out = np.empty((len(slices), rows.shape[1], columns.shape[1]), dtype=out_dtype)
    position = {int(k): i for i, k in enumerate(needed)}
    coefficients = None  # the cubic spline of the block, made once if a slice needs it
    for a, k in enumerate(slices):
        if np.isnan(k):
            out[a] = np.nan
            continue
        r, c = np.nan_to_num(rows[a]), np.nan_to_num(columns[a])
        if k == np.rint(k):
            values = _plane_samples(block[position[int(k)]], r, c, order)
        elif order == 1:
            low = int(np.floor(k))
            values = (1 - (k - low)) * _plane_samples(block[position[low]], r, c, 1)
            values += (k - low) * _plane_samples(block[position[low + 1]], r, c, 1)
        else:
            if coefficients is None:
                coefficients = _spline(block)
            values = _spline_samples(coefficients, k - needed[0], r, c)
        values[np.isnan(rows[a]), :] = np.nan
        values[:, np.isnan(columns[a])] = np.nan
        out[a] = values
    return out


def _plane_samples(plane: np.ndarray, rows: np.ndarray, columns: np.ndarray, order: int) -> Any:
    """One source slice at the product of fractional ``rows`` and ``columns`` (float64)."""
    if (rows == np.rint(rows)).all() and (columns == np.rint(columns)).all():
        return plane[np.ix_(rows.astype(np.intp), columns.astype(np.intp))].astype(np.float64)
    from scipy import ndimage  # deferred: scipy.ndimage is slow to import

    grid = np.meshgrid(rows, columns, indexing="ij")
    mode = "mirror" if order == 3 else "nearest"  # mirror: ITK's B-spline boundary
    return ndimage.map_coordinates(plane.astype(np.float64), grid, order=order, mode=mode)


def _spline(block: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.spline_filter(block.astype(np.float64), order=3, mode="mirror")


def _spline_samples(
    coefficients: np.ndarray, slice_index: float, rows: np.ndarray, columns: np.ndarray
) -> Any:
    """The cubic spline of a block at one fractional slice and a product of rows, columns.

    The spline is separable: its four coefficient planes around the slice are weighted
    into one plane first, then that plane is evaluated in-plane (16 coefficients a point
    instead of 64).
    """
    from scipy import ndimage

    low = int(np.floor(slice_index))
    taps = _mirrored(np.arange(low - 1, low + 3), len(coefficients))
    plane = np.tensordot(_cubic_weights(slice_index - low), coefficients[taps], axes=1)
    grid = np.meshgrid(rows, columns, indexing="ij")
    return ndimage.map_coordinates(plane, grid, order=3, mode="mirror", prefilter=False)


def _cubic_weights(t: float) -> np.ndarray:
    """Weights of the cubic B-spline's four coefficients around ``t`` in [0, 1)."""
    return (
        np.array([(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3])
        / 6
    )


def _mirrored(index: np.ndarray, n: int) -> np.ndarray:
    """Indices beyond ``0 .. n - 1`` mirrored about the edge samples (scipy's "mirror")."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.abs(index) % period
    return np.where(index > n - 1, period - index, index)


# --------------------------------------------------------------------------------------------
# The operation: checks, the lazy array, the result's coords and attrs
# --------------------------------------------------------------------------------------------

_GridFor = Callable[[VolumeGeometry, _Frame], _Grid]


def _onto(
    volume: xr.DataArray,
    operation: str,
    method: str,
    grid_for: _GridFor,
    *,
    unchanged: Callable[[VolumeGeometry], bool] | None = None,
) -> xr.DataArray:
    """``volume`` sampled on the grid ``grid_for`` builds (or itself, if ``unchanged``)."""
    label = series_label(volume.attrs)
    order = _order(method, label)
    spatial = _spatial(volume, label)
    geometry = VolumeGeometry.of(spatial)
    if unchanged is not None and unchanged(geometry):
        return volume
    frame = _Frame.of(geometry, label)
    plan = _Plan.of(frame, grid := grid_for(geometry, frame), order)
    values = _values_to_sample(spatial, plan)
    first, out_dtype = grid.first_voxels(frame), _out_dtype(values.dtype, plan)

    def one_volume(source: xr.DataArray) -> xr.DataArray:
        data = _lazy_samples(source.data, plan, out_dtype)
        result = _resampled_array(source, geometry, first, grid, plan, data)
        result.attrs[RESAMPLED_ATTR] = _record(operation, method, geometry, result, plan, source)
        return result

    return _each_volume(values, one_volume).transpose(*volume.dims)


def _each_volume(
    values: xr.DataArray, function: Callable[[xr.DataArray], xr.DataArray]
) -> xr.DataArray:
    """``function`` on each ``(z, y, x)`` volume of ``values`` (one per index of its other
    dims: ``t``, ``echo``, ``channel``, ...), put back together along those dims.

    Every volume has the same geometry, so one sampling plan serves them all; each stays
    its own lazy graph over its own frames. Coords along the other dims (a time per
    volume, each frame's source file) come back on them.
    """
    extra = [str(d) for d in values.dims if d not in SPATIAL_DIMS]
    if not extra:
        return function(values)
    dim = extra[0]
    parts = [_each_volume(values.isel({dim: i}), function) for i in range(values.sizes[dim])]
    return xr.concat(parts, dim=dim, coords="different", compat="equals", combine_attrs="override")


def _order(method: Any, label: str) -> int:
    if not isinstance(method, str) or method not in METHODS:
        raise ResampleError(
            f"method {method!r} is not one of {', '.join(map(repr, METHODS))}; in {label}"
        )
    return METHODS[method]


def _checked_spacing(spacing: Any, volume: xr.DataArray) -> np.ndarray:
    """``spacing`` as three millimetres (z, y, x) above 0, or a ResampleError."""
    if isinstance(spacing, Mapping):
        values: list[Any] = [spacing.get(dim) for dim in SPATIAL_DIMS]
        if set(spacing) - set(SPATIAL_DIMS):
            values = []
    elif isinstance(spacing, list | tuple | np.ndarray):
        values = list(np.ravel(spacing))
    else:
        values = []
    try:
        numbers = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        numbers = np.empty(0)
    if numbers.shape != (3,) or not (np.isfinite(numbers).all() and (numbers > 0).all()):
        raise ResampleError(
            f"spacing {spacing!r} must be three millimetres above 0, (z, y, x) or "
            f"{{'z': ..., 'y': ..., 'x': ...}}; in {series_label(volume.attrs)}"
        )
    return numbers


def _spatial(volume: xr.DataArray, label: str) -> xr.DataArray:
    """The volume with dims (..., z, y, x), lazily transposed: other dims (``t``,
    ``echo``, ``channel``, ...) first, each of their volumes resampled alike."""
    if sorted(str(d) for d in volume.dims if d in SPATIAL_DIMS) != sorted(SPATIAL_DIMS):
        raise ResampleError(
            f"resampling needs dims z, y and x, not {tuple(volume.dims)}; in {label}"
        )
    return volume.transpose(..., *SPATIAL_DIMS)


def _values_to_sample(spatial: xr.DataArray, plan: _Plan) -> xr.DataArray:
    """Stored values, unless slices with their own rescale are mixed: modality values."""
    if plan.on_planes or not any(name in spatial.coords for name in _RESCALE_COORDS):
        return spatial
    return transforms.modality_values(spatial, padding="keep")


def _out_dtype(dtype: np.dtype, plan: _Plan) -> np.dtype:
    """Nearest keeps the dtype when no voxel is outside (NaN); the others give floats."""
    if plan.order == 0 and not plan.outside_count():
        return np.dtype(dtype)
    return np.dtype(np.float64 if np.dtype(dtype) == np.float64 else np.float32)


def _lazy_samples(data: Any, plan: _Plan, out_dtype: np.dtype) -> Any:
    """The output as a dask array: one task per chunk of output slices, each over only the
    source slices it needs (a selection of the source's own dask array)."""
    import dask.array as da  # deferred: dask.array is slow to import

    slice_bytes = max(1, plan.size[0] * plan.size[1] * out_dtype.itemsize)
    if not isinstance(data, da.Array):
        data = np.asarray(data)
        data = da.from_array(data, chunks=(max(1, CHUNK_BYTES // max(1, data[0].nbytes)), -1, -1))
    per_chunk = max(1, min(data.chunks[0][0], CHUNK_BYTES // slice_bytes))
    pieces = []
    for start in range(0, len(plan.slices), per_chunk):
        part = slice(start, start + per_chunk)
        shape = (len(plan.slices[part]), *plan.size)
        needed = _needed(plan.slices[part], plan.order, data.shape[0])
        if not needed.size:
            pieces.append(da.full(shape, np.nan, dtype=out_dtype))
            continue
        block = data[needed]
        pieces.append(
            block.rechunk(block.shape).map_blocks(
                _sample_chunk,
                needed=needed,
                slices=plan.slices[part],
                rows=plan.rows[part],
                columns=plan.columns[part],
                order=plan.order,
                out_dtype=out_dtype,
                dtype=out_dtype,
                chunks=tuple((n,) for n in shape),
                meta=np.empty((0, 0, 0), dtype=out_dtype),
            )
        )
    return da.concatenate(pieces, axis=0)


def _resampled_array(
    source: xr.DataArray,
    geometry: VolumeGeometry,
    first: np.ndarray,
    grid: _Grid,
    plan: _Plan,
    data: Any,
) -> xr.DataArray:
    """The DataArray of the new grid: coords as :func:`~dicomarray.open_series` makes
    them, the per-slice coords of the source slices when output slices lie on them."""
    coords: dict[str, Any] = {
        str(name): source.coords[name].variable
        for name in source.coords
        if not set(source.coords[name].dims) & set(SPATIAL_DIMS)
    }
    if plan.on_planes:
        picked = {"z": np.rint(plan.slices).astype(np.intp)}
        for name in source.coords:
            if "z" in source.coords[name].dims and name not in ("z", *POSITION_COORDS):
                coords[str(name)] = source.coords[name].variable.isel(picked)
    coords.update(_grid_coords(source, geometry, first, grid))
    # the source's attrs hold the orientation the new grid's geometry is read with
    result = xr.DataArray(
        data, dims=SPATIAL_DIMS, coords=coords, attrs=dict(source.attrs), name=source.name
    )
    result.attrs = _grid_attrs(result.attrs, VolumeGeometry.of(result), grid)
    return result


def _grid_coords(
    source: xr.DataArray, geometry: VolumeGeometry, first: np.ndarray, grid: _Grid
) -> dict[str, Any]:
    """``z``, ``y``, ``x`` and position coords of a grid whose slices start at ``first``."""
    # y and x run along the source's row and column directions, with its signs (flips)
    signs = np.sign([geometry.row_step, geometry.column_step])
    y = (
        float(first[0] @ geometry.orientation[3:])
        + signs[0] * np.arange(grid.size[0]) * grid.pitch[0]
    )
    x = (
        float(first[0] @ geometry.orientation[:3])
        + signs[1] * np.arange(grid.size[1]) * grid.pitch[1]
    )
    coords: dict[str, Any] = {
        "z": ("z", positions_along_normal(first, geometry.normal), dict(source["z"].attrs)),
        "y": ("y", y, {**source["y"].attrs, "origin": float(y[0])}),
        "x": ("x", x, {**source["x"].attrs, "origin": float(x[0])}),
    }
    for axis, name in enumerate(POSITION_COORDS):
        coords[name] = ("z", first[:, axis], {"units": "mm"})
    return coords


def _grid_attrs(attrs: Mapping[str, Any], geometry: VolumeGeometry, grid: _Grid) -> dict[str, Any]:
    """The source's attrs with the tags that describe the grid made true for the new one."""
    attrs = dict(attrs)
    attrs["PixelSpacing"] = [float(p) for p in grid.pitch]
    for keyword, n in zip(("Rows", "Columns"), grid.size, strict=True):
        if keyword in attrs:
            attrs[keyword] = int(n)
    if "GantryDetectorTilt" in attrs and not geometry.is_sheared:
        attrs["GantryDetectorTilt"] = 0.0  # a reader correcting tilt by the tag would shear it
    step = geometry.slice_step
    attrs.pop("SpacingBetweenSlices", None)
    if step is not None:
        attrs["SpacingBetweenSlices"] = abs(float(step))
    # the report's slice figures describe the volume it is on; the source's stay in the
    # record's "source" summary, its files and warnings are still what was read and said
    if isinstance(attrs.get(ASSEMBLY_ATTR), Mapping):
        attrs[ASSEMBLY_ATTR] = {**attrs[ASSEMBLY_ATTR], **geometry.spacing_report()}
    return attrs


def _record(
    operation: str,
    method: str,
    source: VolumeGeometry,
    result: xr.DataArray,
    plan: _Plan,
    values: xr.DataArray,
) -> dict[str, Any]:
    """What was done, JSON-safe: for the attrs, sidecars and anyone reading them later."""
    geometry = VolumeGeometry.of(result)
    record: dict[str, Any] = {
        "operation": operation,
        "method": method,
        "spacing": {dim: geometry.spacing[dim] for dim in SPATIAL_DIMS},
        "shape": {dim: int(result.sizes[dim]) for dim in SPATIAL_DIMS},
        "values": values.attrs.get(transforms.VALUES_ATTR, "stored"),
        "voxels_outside_source": plan.outside_count(),
        "source": source.summary(),
    }
    if RESAMPLED_ATTR in values.attrs:  # a resampling of a resampling keeps the first record
        record["previous"] = values.attrs[RESAMPLED_ATTR]
    return record
