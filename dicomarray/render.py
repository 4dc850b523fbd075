"""Pictures of volumes: one slice in any plane, montages and orthogonal views, as JPG or PNG.

A picture is made in four steps: select the slices it shows (so that only their files, or
one row or column of each file, are read), convert to modality values, apply one window to
everything shown, and resample to square pixels in the display orientation. Pictures are
8-bit grey, JPG or PNG by the file's suffix, and appear under their final name only when
complete.

A MONOCHROME1 series ((0028,0004) *Photometric Interpretation*) is shown inverted, as
``1 - value`` after the window: in MONOCHROME1 the minimum value is white (PS3.3
C.7.6.3.1.2), whereas a picture's 0 is black. Padding ((0028,0120) *Pixel Padding
Value*) is NaN in the modality values (see :func:`dicomarray.transforms.modality_values`):
it is left out of the value-range window and drawn black.

Display orientation, for the usual axial acquisition: an axial picture (a ``z`` slice) is
shown as stored, rows down the column direction and columns along the row direction (so
patient's anterior at the top and patient's left on the right of the picture). Coronal (a
``y`` slice) and sagittal (an ``x`` slice) pictures have ``z`` vertical, with the superior
end (by (0020,0037) *Image Orientation (Patient)*) at the top. The axis names refer to the
array's axes: for a series acquired in another plane they name the planes of the array.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from .errors import RenderError
from .geometry import orientation_of, pixel_spacing_of
from .staging import check_replaceable, staged
from .transforms import Window, apply_window, choose_window, modality_values

#: Picture axes and the dim each one cuts.
AXES: dict[str, str] = {"axial": "z", "coronal": "y", "sagittal": "x"}
#: Longest side of a picture in pixels; larger pictures are drawn with bigger pixels.
MAX_SIDE = 8192
#: Slices in a montage when none are named.
MONTAGE_SLICES = 16
#: Black pixels between the panels of a montage or an orthogonal view.
GAP = 2

_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}
# (rows, columns) of the picture of a cut through each dim
_DISPLAY_DIMS = {"z": ("y", "x"), "y": ("z", "x"), "x": ("z", "y")}


@dataclass(frozen=True)
class _Axis:
    """Where a picture's rows (or columns) lie: positions in mm in display order."""

    positions: np.ndarray
    step: float  # mean spacing; from the attrs when there is one sample

    @property
    def extent(self) -> float:
        """Length covered: half a step beyond each end sample."""
        return float(abs(self.positions[-1] - self.positions[0])) + self.step


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


def slice_picture(
    volume: xr.DataArray,
    index: int | None = None,
    *,
    axis: str | None = None,
    center: float | None = None,
    width: float | None = None,
    preset: str | None = None,
) -> np.ndarray:
    """One slice as a 2-D float32 array in [0, 1], in display orientation, square pixels.

    0 is black and 1 white: a MONOCHROME1 series, whose minimum value is white, is
    inverted after the window.

    Parameters
    ----------
    volume : xarray.DataArray
        A ``(z, y, x)`` volume (stored or modality values), or one 2-D slice of it.
    index : int, optional
        Position along the axis (negative counts from the end); default the middle.
    axis : {"axial", "coronal", "sagittal"}, optional
        Default "axial" for a volume; for a 2-D slice, the plane it is.
    center, width, preset
        The window, as :func:`dicomarray.transforms.choose_window` takes it: by default
        the series' own, else a preset for the modality, else the range of the values.

    Raises
    ------
    RenderError
        For an unknown axis, an index out of range, or dims other than ``z``, ``y``, ``x``.
    """
    volume, axis = _as_volume(volume, axis)
    dim = AXES[axis]
    cut = (dim, _check_index(index, volume.sizes[dim], axis))
    return _pictures(volume, [cut], (center, width, preset))[0]


def write_slice(
    volume: xr.DataArray,
    path: str | os.PathLike[str],
    index: int | None = None,
    *,
    axis: str | None = None,
    center: float | None = None,
    width: float | None = None,
    preset: str | None = None,
    quality: int = 95,
    overwrite: bool = False,
) -> Path:
    """Write one slice (see :func:`slice_picture`) as a JPG or PNG; returns the path.

    ``quality`` and ``overwrite`` are those of :func:`save_image`: an existing file is
    replaced only with ``overwrite=True``.
    """
    path = _check_target(path, quality, overwrite)
    picture = slice_picture(volume, index, axis=axis, center=center, width=width, preset=preset)
    return save_image(picture, path, quality=quality, overwrite=overwrite)


def write_montage(
    volume: xr.DataArray,
    path: str | os.PathLike[str],
    indices: Sequence[int] | None = None,
    *,
    columns: int | None = None,
    center: float | None = None,
    width: float | None = None,
    preset: str | None = None,
    quality: int = 95,
    overwrite: bool = False,
) -> Path:
    """Write axial slices as one picture: a grid filled row by row in the order given.

    Parameters
    ----------
    indices : sequence of int, optional
        The ``z`` positions to show; default up to :data:`MONTAGE_SLICES` evenly spaced
        slices, inferior to superior. Only these slices' files are read.
    columns : int, optional
        Tiles per row; default about the square root of the number of slices.
    quality, overwrite
        As for :func:`save_image`.

    All slices share one window and one pixel size.
    """
    path = _check_target(path, quality, overwrite)
    volume, _ = _as_volume(volume, "axial", need_volume=True)
    size = volume.sizes["z"]
    if indices is None:
        indices = montage_indices(size)
    chosen = [_check_index(i, size, "axial") for i in indices]
    if not chosen:
        raise RenderError("a montage needs at least one slice index")
    tiles = _pictures(volume, [("z", i) for i in chosen], (center, width, preset))
    return save_image(
        _grid(tiles, _columns(columns, len(tiles))), path, quality=quality, overwrite=overwrite
    )


def write_orthogonal(
    volume: xr.DataArray,
    path: str | os.PathLike[str],
    *,
    z: int | None = None,
    y: int | None = None,
    x: int | None = None,
    center: float | None = None,
    width: float | None = None,
    preset: str | None = None,
    quality: int = 95,
    overwrite: bool = False,
) -> Path:
    """Write axial, coronal and sagittal slices side by side, at one scale and window.

    ``z``, ``y`` and ``x`` are the positions of the three cuts (default the middle of
    each axis). The axial slice reads one file; the coronal and sagittal ones read every
    file of the series once each. ``quality`` and ``overwrite`` are those of
    :func:`save_image`.
    """
    path = _check_target(path, quality, overwrite)
    volume, _ = _as_volume(volume, "axial", need_volume=True)
    cuts = [
        (dim, _check_index(i, volume.sizes[dim], axis))
        for dim, i, axis in (("z", z, "axial"), ("y", y, "coronal"), ("x", x, "sagittal"))
    ]
    panels = _pictures(volume, cuts, (center, width, preset))
    return save_image(_side_by_side(panels), path, quality=quality, overwrite=overwrite)


def montage_indices(size: int, count: int = MONTAGE_SLICES) -> list[int]:
    """Up to ``count`` evenly spaced positions in ``range(size)``, centred."""
    step = max(1, math.ceil(size / count))
    start = ((size - 1) % step) // 2
    return list(range(start, size, step))


def save_image(
    values: np.ndarray,
    path: str | os.PathLike[str],
    *,
    quality: int = 95,
    overwrite: bool = False,
) -> Path:
    """Write a 2-D array of values in [0, 1] as an 8-bit grey JPG or PNG (by suffix).

    NaN is drawn black. The file is staged (:mod:`dicomarray.staging`): it appears under
    its final name only when complete, with the permissions of the user's umask.

    Parameters
    ----------
    values : numpy.ndarray
        2-D, in [0, 1].
    path : str or os.PathLike
        ``.jpg``, ``.jpeg`` or ``.png``.
    quality : int, default 95
        JPG quality, 1 to 100.
    overwrite : bool, default False
        Replace an existing file; otherwise an existing file is a
        :class:`~dicomarray.errors.WriteError`.

    Raises
    ------
    RenderError
        For a suffix other than .jpg, .jpeg or .png, an array that is not 2-D, or a
        folder that is not writable.
    WriteError
        ``path`` exists and ``overwrite`` is False, or writing it failed (disk full).
    """
    from PIL import Image

    path = _check_target(path, quality, overwrite)
    if values.ndim != 2:
        raise RenderError(f"{path}: a picture needs a 2-D array, got shape {values.shape}")
    grey = np.round(np.clip(np.nan_to_num(values), 0.0, 1.0) * 255).astype(np.uint8)
    kind = _FORMATS[path.suffix.lower()]
    options = {"quality": quality} if kind == "JPEG" else {}
    with staged(path, overwrite=overwrite, kind="picture") as output:
        Image.fromarray(grey, mode="L").save(output.partial, format=kind, **options)
    return output.final


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def _check_target(path: str | os.PathLike[str], quality: int, overwrite: bool) -> Path:
    """Refuse, before anything is read, a picture that could not or may not be written."""
    path = Path(path)
    if path.suffix.lower() not in _FORMATS:
        raise RenderError(f"{path}: unsupported picture suffix; use .jpg, .jpeg or .png")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise RenderError(f"JPG quality must be an integer from 1 to 100, got {quality!r}")
    if path.is_dir():
        raise RenderError(f"{path}: is a folder, not a picture file")
    check_replaceable(path, overwrite=overwrite, kind="picture")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise RenderError(f"{path}: cannot write the picture: {folder} is not a writable folder")
    return path


def _as_volume(
    obj: xr.DataArray, axis: str | None, *, need_volume: bool = False
) -> tuple[xr.DataArray, str]:
    """A ``(z, y, x)`` view of a volume or of one 2-D slice, and the axis to picture."""
    if axis is not None and axis not in AXES:
        raise RenderError(f"unknown axis {axis!r}; use one of {list(AXES)}")
    dims = set(obj.dims)
    if obj.ndim == 3 and dims == {"z", "y", "x"}:
        return obj.transpose("z", "y", "x"), axis or "axial"
    if obj.ndim == 2 and dims < {"z", "y", "x"} and not need_volume:
        (missing,) = {"z", "y", "x"} - dims
        plane = next(name for name, dim in AXES.items() if dim == missing)
        if axis is not None and axis != plane:
            raise RenderError(f"a 2-D array with dims {obj.dims} is a {plane} slice, not {axis}")
        return obj.expand_dims(missing).transpose("z", "y", "x"), plane
    need = "('z', 'y', 'x')" if need_volume else "('z', 'y', 'x') or two of them"
    raise RenderError(f"a picture needs dims {need}, got {obj.dims}")


def _check_index(index: int | None, size: int, axis: str) -> int:
    if index is None:
        return size // 2
    if isinstance(index, bool) or not isinstance(index, int | np.integer):
        raise RenderError(f"{axis} index must be an integer, got {index!r}")
    if not -size <= index < size:
        raise RenderError(
            f"{axis} index {index} is out of range: the volume has {size} {axis} slices "
            f"(0 to {size - 1})"
        )
    return int(index) % size


def _columns(columns: int | None, count: int) -> int:
    if columns is None:
        return math.ceil(math.sqrt(count))
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise RenderError(f"montage columns must be a positive integer, got {columns!r}")
    return columns


# --------------------------------------------------------------------------------------------
# Cuts to pictures
# --------------------------------------------------------------------------------------------


def _pictures(
    volume: xr.DataArray,
    cuts: list[tuple[str, int]],
    window: tuple[float | None, float | None, str | None],
) -> list[np.ndarray]:
    """Pictures of several cuts with one window and one pixel size."""
    center, width, preset = window
    chosen = choose_window(volume, center, width, preset=preset)
    # one compute per cut: computed together, dask would not fuse each selection into
    # its file reads and would read whole chunks
    planes = [modality_values(volume.isel({dim: i})).compute() for dim, i in cuts]
    if chosen.center is None:  # the range of everything shown, so that panels match
        low = min(float(np.nanmin(p.values)) for p in planes)
        high = max(float(np.nanmax(p.values)) for p in planes)
        chosen = Window.from_range(low, high)
    axes = [_display_axes(plane, dim, volume) for plane, (dim, _) in zip(planes, cuts, strict=True)]
    size = _pixel_size(axes)
    return [
        _square_pixels(_display_values(plane, chosen, dim, volume), rows, columns, size)
        for plane, (dim, _), (rows, columns) in zip(planes, cuts, axes, strict=True)
    ]


def _display_axes(plane: xr.DataArray, dim: str, volume: xr.DataArray) -> tuple[_Axis, _Axis]:
    """The picture's rows and columns, rows in display order."""
    row_dim, column_dim = _DISPLAY_DIMS[dim]
    rows = _axis(plane, row_dim, volume)
    if _flip_rows(dim, volume):
        rows = _Axis(rows.positions[::-1], rows.step)
    return rows, _axis(plane, column_dim, volume)


def _display_values(
    plane: xr.DataArray, chosen: Window, dim: str, volume: xr.DataArray
) -> np.ndarray:
    values = apply_window(plane, chosen).transpose(*_DISPLAY_DIMS[dim]).values
    if _is_inverted(volume):
        values = 1.0 - values
    return np.asarray(values[::-1] if _flip_rows(dim, volume) else values, dtype=np.float32)


def _is_inverted(volume: xr.DataArray) -> bool:
    """Whether the minimum value is white: MONOCHROME1 (PS3.3 C.7.6.3.1.2)."""
    return str(volume.attrs.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1"


def _flip_rows(dim: str, volume: xr.DataArray) -> bool:
    """Whether rows run along ``z`` toward the head, so that the top row must be the last."""
    return _DISPLAY_DIMS[dim][0] == "z" and _superior_is_ascending(volume)


def _axis(plane: xr.DataArray, dim: str, volume: xr.DataArray) -> _Axis:
    positions: np.ndarray = np.asarray(plane[dim].values, dtype=np.float64)
    fallback = _fallback_step(volume, dim)
    if dim == "z" and plane["z"].attrs.get("units", "mm") != "mm":
        # slices ordered without positions: the coordinate is a rank, not a distance
        positions = np.arange(positions.size) * fallback
    if positions.size > 1 and positions[-1] != positions[0]:
        return _Axis(positions, float(abs(positions[-1] - positions[0])) / (positions.size - 1))
    return _Axis(positions, fallback)


def _superior_is_ascending(volume: xr.DataArray) -> bool:
    """Whether ``z`` grows toward the head: the slice normal's S component (LPS) is > 0."""
    cosines = orientation_of(volume.attrs)
    return bool(np.cross(cosines[:3], cosines[3:])[2] >= 0)


def _fallback_step(volume: xr.DataArray, dim: str) -> float:
    """Spacing along ``dim`` from the attrs, for when the coordinate cannot tell."""
    attrs = volume.attrs
    if dim != "z":
        return pixel_spacing_of(attrs)[0 if dim == "y" else 1]
    report = attrs.get("dicomarray_assembly")
    candidates = [
        report.get("slice_spacing") if isinstance(report, dict) else None,
        attrs.get("SpacingBetweenSlices"),
        attrs.get("SliceThickness"),
    ]
    for value in candidates:
        try:
            if value is not None and 0 < float(value) < math.inf:
                return float(value)
        except (TypeError, ValueError):
            continue
    return 1.0


def _pixel_size(axes: list[tuple[_Axis, _Axis]]) -> float:
    """The finest spacing shown, coarsened only if a picture would pass :data:`MAX_SIDE`."""
    flat = [axis for pair in axes for axis in pair]
    return max(min(a.step for a in flat), max(a.extent for a in flat) / MAX_SIDE)


def _square_pixels(values: np.ndarray, rows: _Axis, columns: _Axis, size: float) -> np.ndarray:
    """Resample (linearly) so that each pixel is ``size`` mm high and wide."""
    return _resample(_resample(values, rows, size, axis=0), columns, size, axis=1)


def _resample(values: np.ndarray, along: _Axis, size: float, *, axis: int) -> np.ndarray:
    """Samples every ``size`` mm across the extent of ``along`` (uneven positions too)."""
    n = along.positions.size
    count = max(1, round(along.extent / size))
    distance = np.abs(along.positions - along.positions[0])
    if count == n and (n == 1 or np.allclose(np.diff(distance), along.step, rtol=1e-3)):
        return values
    if n == 1:
        return np.repeat(values, count, axis=axis)
    pitch = along.extent / count
    targets = np.clip(-along.step / 2 + (np.arange(count) + 0.5) * pitch, 0.0, distance[-1])
    lower = np.clip(np.searchsorted(distance, targets, side="right") - 1, 0, n - 2)
    gaps = np.maximum(distance[lower + 1] - distance[lower], 1e-9)
    weight = np.clip((targets - distance[lower]) / gaps, 0.0, 1.0).astype(np.float32)
    weight = weight.reshape((count, 1) if axis == 0 else (1, count))
    below = np.take(values, lower, axis=axis)
    above = np.take(values, lower + 1, axis=axis)
    return below * (np.float32(1.0) - weight) + above * weight


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------


def _grid(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    height = max(t.shape[0] for t in tiles)
    width = max(t.shape[1] for t in tiles)
    columns = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    out = np.zeros(
        (rows * height + (rows - 1) * GAP, columns * width + (columns - 1) * GAP), np.float32
    )
    for n, tile in enumerate(tiles):
        top, left = (n // columns) * (height + GAP), (n % columns) * (width + GAP)
        out[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    return out


def _side_by_side(panels: list[np.ndarray]) -> np.ndarray:
    """Panels in a row, vertically centred on a black background."""
    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + GAP * (len(panels) - 1)
    out = np.zeros((height, width), np.float32)
    left = 0
    for panel in panels:
        top = (height - panel.shape[0]) // 2
        out[top : top + panel.shape[0], left : left + panel.shape[1]] = panel
        left += panel.shape[1] + GAP
    return out
