"""Pictures of volumes: one slice in any plane, montages and orthogonal views, as JPG or PNG.

A picture is made in four steps: read what it shows (only the files, or the rows or
columns of each file, the plane passes through), convert to modality values, apply one
window to everything shown, and resample to square pixels in the display orientation.
Pictures are 8-bit grey (8-bit RGB for colour, below), JPG or PNG by the file's suffix,
and appear under their final name only when complete. Every position comes from the volume's
:class:`~dicomarray.geometry.VolumeGeometry`; nothing here reads the geometry tags.

A MONOCHROME1 series ((0028,0004) *Photometric Interpretation*) is shown inverted, as
``1 - value`` after the window: in MONOCHROME1 the minimum value is white (PS3.3
C.7.6.3.1.2), whereas a picture's 0 is black. Padding ((0028,0120) *Pixel Padding
Value*) is NaN in the modality values (see :func:`dicomarray.transforms.modality_values`):
it is left out of the value-range window and drawn black.

Planes. An axial picture (a ``z`` cut) is one stored slice. Coronal (a ``y`` cut) and
sagittal (an ``x`` cut) pictures are true planes orthogonal to the slices, through the
chosen voxel: each slice is sampled (bilinearly) where the plane crosses it, so a tilted
(sheared) stack is shown in patient space, not sheared as its index space is, and
unevenly spaced slices sit at their own positions. Only a band of rows (columns) of each
file around those the plane crosses is read (at most :data:`BAND_ROWS`).

Display orientation. Each picture is shown as radiology viewers show the anatomical plane
closest to it (by its normal): axial with the patient's right on the left and anterior
at the top, coronal with right on the left and superior at the top, sagittal with
anterior on the left and superior at the top. For the usual axial acquisition this is
the stored slice as it is. The picture does not depend on how the volume is stored: a
feet-first series, a flipped, transposed or reoriented
(:func:`dicomarray.reorient.reorient`) volume gives the same picture, and a montage runs
inferior to superior. The axis names (axial, coronal, sagittal) name the array's cuts
(``z``, ``y``, ``x``): for a sagittal acquisition, the "axial" picture is a sagittal
plane. With ``annotate=True`` the edges carry the patient directions (:func:`edge_labels`)
and the bottom left corner the position of the plane in mm.

Volumes with more dims. A volume with dims beyond ``(z, y, x)`` (``t``, ``echo``,
``diffusion``, ... before them, see :func:`dicomarray.open_series`) is pictured one
volume at a time: ``select={"t": 3}`` picks the volume by index along each extra dim,
in every picture function. An extra dim left out of ``select`` shows its first volume
(index 0), with a :class:`~dicomarray.errors.DicomArrayWarning` naming the dims, so
that a picture of every series (as :mod:`dicomarray.batch` makes) never fails for want
of a choice. :func:`write_montage` with ``over="t"`` lays one slice out along an extra
dim instead (a slice through time), reading that slice of each volume shown and nothing
else. With ``annotate=True`` the position label names the volume too (``t 4.5 s``).

Colour. A volume with a trailing ``"channel"`` dim (RGB, size 3) is drawn in colour, as
an RGB JPG or PNG, in every picture function. It is not windowed: stored values are
scaled from 0 to the largest value (0028,0101) *Bits Stored* allows (255 for 8 bits;
the dtype's largest for integers without that attr, 1 for floats), each channel alike.
A window given (``center`` and ``width``, or ``preset``) is applied to each channel's
stored values instead. Monochrome inversion and padding do not apply to colour.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import xarray as xr

from .errors import DicomArrayWarning, RenderError, warn_data_problem
from .geometry import DIRECTION_LETTERS, VolumeGeometry, positions_along_normal
from .staging import check_replaceable, staged
from .transforms import WINDOW_FUNCTIONS, Window, apply_window, choose_window, modality_values

#: Picture axes and the dim each one cuts.
AXES: dict[str, str] = {"axial": "z", "coronal": "y", "sagittal": "x"}
#: The trailing dim of a colour volume: its three RGB samples.
CHANNEL = "channel"
_SPATIAL = ("z", "y", "x")
#: Longest side of a picture in pixels; larger pictures are drawn with bigger pixels.
MAX_SIDE = 8192
#: Slices in a montage when none are named.
MONTAGE_SLICES = 16
#: Black pixels between the panels of a montage or an orthogonal view.
GAP = 2
#: Smallest share of a patient axis in a picture direction that earns that axis a letter in
#: the edge labels: a direction 15 degrees or more off its main axis is labelled "SA".
LABEL_COSINE = math.sin(math.radians(15.0))

_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}
# the in-plane dim a coronal (y) or sagittal (x) cut keeps as the picture's columns
_KEPT = {"y": "x", "x": "y"}
# below this (pixels) an index is taken as whole: positions in the files are rounded to
# about 1e-5 mm, and the plane of a stack without tilt must read its own row, not two
_WHOLE = 1e-3
#: Most rows (columns) of one file a coronal (sagittal) plane reads: the slices of a tilted
#: stack are read in runs whose bands fit in this many rows, one read per run.
BAND_ROWS = 8


@dataclass(frozen=True)
class _Axis:
    """Where a picture's rows (or columns) lie: positions in mm in display order."""

    positions: np.ndarray
    step: float  # mean spacing; the geometry's own when there is one sample

    @property
    def extent(self) -> float:
        """Length covered: half a step beyond each end sample."""
        return float(abs(self.positions[-1] - self.positions[0])) + self.step


@dataclass(frozen=True)
class _Cut:
    """One picture: the dim it cuts, the ``(z, y, x)`` voxel its plane passes through and
    the volume it shows: an index along each extra dim (``(("t", 3),)``)."""

    dim: str
    voxel: tuple[int, int, int]
    select: tuple[tuple[str, int], ...] = ()

    @property
    def plane(self) -> str:
        return next(name for name, dim in AXES.items() if dim == self.dim)


@dataclass(frozen=True)
class _Plane:
    """Modality values of a cut as read, and where they lie: for each of the two axes of
    ``values``, the positions (mm) along its unit LPS direction and the step to use when
    positions cannot tell (one sample)."""

    values: np.ndarray
    positions: tuple[np.ndarray, np.ndarray]
    directions: tuple[np.ndarray, np.ndarray]
    steps: tuple[float, float]
    attrs: dict[str, Any]


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


def slice_picture(
    volume: xr.DataArray,
    index: int | None = None,
    *,
    axis: str | None = None,
    select: Mapping[str, int] | None = None,
    center: float | None = None,
    width: float | None = None,
    preset: str | None = None,
    annotate: bool = False,
) -> np.ndarray:
    """One slice as a float32 array in [0, 1], in display orientation, square pixels.

    2-D, 0 black and 1 white: a MONOCHROME1 series, whose minimum value is white, is
    inverted after the window. A colour volume (a trailing ``"channel"`` dim) gives
    ``(rows, columns, 3)`` RGB, not windowed (see the module's docstring).

    Parameters
    ----------
    volume : xarray.DataArray
        A volume with dims ``z``, ``y``, ``x`` in any order (stored or modality values),
        or one 2-D slice of it; extra dims (``t``, ``echo``, ...) before them and a
        trailing ``"channel"`` (colour) are allowed.
    index : int, optional
        Position along the axis (negative counts from the end); default the middle.
    axis : {"axial", "coronal", "sagittal"}, optional
        Default "axial" for a volume; for a 2-D slice, the plane it is. A coronal or
        sagittal picture is the plane orthogonal to the slices through row (column)
        ``index`` of the middle slice.
    select : mapping of str to int, optional
        The volume shown, by index along each extra dim (``{"t": 3}``, negative counts
        from the end); an extra dim not named shows index 0, with a warning.
    center, width, preset
        The window, as :func:`dicomarray.transforms.choose_window` takes it: by default
        the series' own, else a preset for the modality, else the range of the values.
    annotate : bool, default False
        Write the patient directions on the edges (:func:`edge_labels`) and the slice
        position in mm in a corner, in the margins of the picture.

    Raises
    ------
    RenderError
        For an unknown axis, an index out of range, no dims ``z``, ``y``, ``x`` (or two of
        them), a ``select`` naming a dim the volume lacks or an index out of range along
        it, a single row (column) of a tilted stack, which holds no coronal (sagittal) plane,
        or ``annotate=True`` with a Pillow built without FreeType.
    DicomArrayError
        For malformed geometry (see :meth:`VolumeGeometry.of`).
    """
    volume, axis = _as_volume(volume, axis)
    chosen = _selection(volume, select)
    dim = AXES[axis]
    voxel = [volume.sizes[d] // 2 for d in _SPATIAL]
    voxel[_SPATIAL.index(dim)] = _check_index(index, volume.sizes[dim], axis)
    cut = _Cut(dim, (voxel[0], voxel[1], voxel[2]), chosen)
    return _pictures(volume, [cut], (center, width, preset), annotate)[0]


def write_slice(
    volume: xr.DataArray,
    path: str | os.PathLike[str],
    index: int | None = None,
    *,
    axis: str | None = None,
    select: Mapping[str, int] | None = None,
    center: float | None = None,
    width: float | None = None,
    preset: str | None = None,
    annotate: bool = False,
    quality: int = 95,
    overwrite: bool = False,
) -> Path:
    """Write one slice (see :func:`slice_picture`) as a JPG or PNG; returns the path.

    ``quality`` and ``overwrite`` are those of :func:`save_image`: an existing file is
    replaced only with ``overwrite=True``.
    """
    path = _check_target(path, quality, overwrite)
    picture = slice_picture(
        volume,
        index,
        axis=axis,
        select=select,
        center=center,
        width=width,
        preset=preset,
        annotate=annotate,
    )
    return save_image(picture, path, quality=quality, overwrite=overwrite)


def write_montage(
    volume: xr.DataArray,
    path: str | os.PathLike[str],
    indices: Sequence[int] | None = None,
    *,
    over: str = "z",
    z: int | None = None,
    select: Mapping[str, int] | None = None,
    columns: int | None = None,
    center: float | None = None,
    width: float | None = None,
    preset: str | None = None,
    annotate: bool = False,
    quality: int = 95,
    overwrite: bool = False,
) -> Path:
    """Write axial slices as one picture: a grid filled row by row, inferior to superior,
    or one axial slice along an extra dim (``over="t"``: the slice through time).

    Parameters
    ----------
    indices : sequence of int, optional
        The positions along ``over`` to show; default up to :data:`MONTAGE_SLICES`
        evenly spaced ones. Only these slices' files are read. Along ``z``, whatever
        their order (and the order of the slices in the volume: feet-first, flipped,
        sorted), the tiles run from the most inferior slice to the most superior, by the
        slice normal; along an extra dim, in the order of its index.
    over : str, default "z"
        ``"z"`` for slices of one volume, or an extra dim (``"t"``, ``"echo"``, ...) for
        slice ``z`` of each volume along it.
    z : int, optional
        With ``over`` an extra dim: the slice shown (default the middle one).
    select : mapping of str to int, optional
        The volume, by index along each extra dim other than ``over`` (see
        :func:`slice_picture`).
    columns : int, optional
        Tiles per row; default about the square root of the number of slices.
    annotate : bool, default False
        Label each tile as :func:`slice_picture` does.
    quality, overwrite
        As for :func:`save_image`.

    All slices share one window and one pixel size.

    Raises
    ------
    RenderError
        As :func:`slice_picture`; also for ``over`` that is not ``"z"`` or an extra dim
        of the volume, ``z`` given for a montage over ``z``, or no index.
    """
    path = _check_target(path, quality, overwrite)
    volume, _ = _as_volume(volume, "axial", need_volume=True)
    geometry = VolumeGeometry.of(volume)
    cuts = _montage_cuts(volume, geometry, indices, over, z, select)
    tiles = _pictures(volume, cuts, (center, width, preset), annotate, geometry)
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
    select: Mapping[str, int] | None = None,
    center: float | None = None,
    width: float | None = None,
    preset: str | None = None,
    annotate: bool = False,
    quality: int = 95,
    overwrite: bool = False,
) -> Path:
    """Write axial, coronal and sagittal planes through one voxel side by side.

    One scale and one window for the three. ``z``, ``y`` and ``x`` are the indices of the
    voxel (default the middle of each axis); the coronal and sagittal planes are orthogonal
    to the slices (see :func:`slice_picture`). The axial plane reads one file; the coronal
    and sagittal ones read the rows (columns) of each file they cross. ``annotate`` labels
    each panel as :func:`slice_picture` does; ``select`` picks the volume of an n-D one
    as there; ``quality`` and ``overwrite`` are those of :func:`save_image`.
    """
    path = _check_target(path, quality, overwrite)
    volume, _ = _as_volume(volume, "axial", need_volume=True)
    chosen = _selection(volume, select)
    voxel = tuple(
        _check_index(i, volume.sizes[dim], axis)
        for dim, i, axis in (("z", z, "axial"), ("y", y, "coronal"), ("x", x, "sagittal"))
    )
    cuts = [_Cut(dim, (voxel[0], voxel[1], voxel[2]), chosen) for dim in _SPATIAL]
    panels = _pictures(volume, cuts, (center, width, preset), annotate)
    return save_image(_side_by_side(panels), path, quality=quality, overwrite=overwrite)


def edge_labels(geometry: VolumeGeometry, plane: str) -> dict[str, str]:
    """The patient directions at the edges of a picture, as radiology viewers label them.

    Parameters
    ----------
    geometry : VolumeGeometry
        The geometry of the volume pictured.
    plane : {"axial", "coronal", "sagittal"}
        The picture's plane (the array's ``z``, ``y`` or ``x`` cut).

    Returns
    -------
    dict
        ``{"top": ..., "bottom": ..., "left": ..., "right": ...}``: the letters (``L``/``R``,
        ``A``/``P``, ``S``/``I``) of the patient directions each edge faces, main one first;
        a direction :data:`LABEL_COSINE` or more toward a second axis gets its letter too.
        A plain axial picture is ``{"top": "A", "bottom": "P", "left": "R", "right": "L"}``.
    """
    if plane not in AXES:
        raise RenderError(f"unknown plane {plane!r}; use one of {list(AXES)}")
    right, down = _screen_directions(geometry, AXES[plane])
    return {
        "top": direction_letters(-down),
        "bottom": direction_letters(down),
        "left": direction_letters(-right),
        "right": direction_letters(right),
    }


def direction_letters(vector: np.ndarray) -> str:
    """The patient direction an LPS vector points to, as letters, main one first.

    Every axis whose share is at least :data:`LABEL_COSINE` is named: ``(0, 0, 1)`` is
    ``"S"``, ``(0, -0.34, 0.94)`` (20 degrees toward anterior) is ``"SA"``.
    """
    vector = np.asarray(vector, dtype=float)
    vector = vector / np.linalg.norm(vector)
    order = np.argsort(-np.abs(vector), kind="stable")
    return "".join(
        DIRECTION_LETTERS[a][0 if vector[a] > 0 else 1]
        for a in order
        if abs(vector[a]) >= LABEL_COSINE
    )


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
    """Write values in [0, 1] as an 8-bit grey (2-D) or RGB (``(rows, columns, 3)``) JPG
    or PNG (by suffix).

    NaN is drawn black. The file is staged (:mod:`dicomarray.staging`): it appears under
    its final name only when complete, with the permissions of the user's umask.

    Parameters
    ----------
    values : numpy.ndarray
        2-D (grey) or ``(rows, columns, 3)`` (RGB), in [0, 1].
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
        For a suffix other than .jpg, .jpeg or .png, an array that is neither 2-D nor
        ``(rows, columns, 3)``, or a folder that is not writable.
    WriteError
        ``path`` exists and ``overwrite`` is False, or writing it failed (disk full).
    """
    from PIL import Image

    path = _check_target(path, quality, overwrite)
    colour = values.ndim == 3 and values.shape[2] == 3
    if values.ndim != 2 and not colour:
        raise RenderError(
            f"{path}: a picture needs a 2-D (grey) or (rows, columns, 3) (RGB) array, got "
            f"shape {values.shape}"
        )
    pixels = np.round(np.clip(np.nan_to_num(values), 0.0, 1.0) * 255).astype(np.uint8)
    kind = _FORMATS[path.suffix.lower()]
    options = {"quality": quality} if kind == "JPEG" else {}
    with staged(path, overwrite=overwrite, kind="picture") as output:
        image = Image.fromarray(pixels, mode="RGB" if colour else "L")
        image.save(output.partial, format=kind, **options)
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
    """A ``(*extra, z, y, x[, channel])`` view of a volume or of one 2-D slice, and the
    axis to picture."""
    if axis is not None and axis not in AXES:
        raise RenderError(f"unknown axis {axis!r}; use one of {list(AXES)}")
    spatial = {str(d) for d in obj.dims} & set(_SPATIAL)
    colour = [CHANNEL] if CHANNEL in obj.dims else []
    if colour and obj.sizes[CHANNEL] != 3:
        raise RenderError(f"a colour picture needs 3 channels (RGB), got {obj.sizes[CHANNEL]}")
    if len(spatial) == 2 and not need_volume:
        (missing,) = set(_SPATIAL) - spatial
        plane = next(name for name, dim in AXES.items() if dim == missing)
        if axis is not None and axis != plane:
            raise RenderError(f"a 2-D array with dims {obj.dims} is a {plane} slice, not {axis}")
        obj, axis = obj.expand_dims(missing), plane
    elif len(spatial) != 3:
        need = "('z', 'y', 'x')" if need_volume else "('z', 'y', 'x') or two of them"
        raise RenderError(f"a picture needs dims {need}, got {obj.dims}")
    extra = _extra_dims(obj)
    return obj.transpose(*extra, *_SPATIAL, *colour), axis or "axial"


def _extra_dims(volume: xr.DataArray) -> list[str]:
    """The dims beyond the spatial ones and the colour channel: ``t``, ``echo``, ..."""
    return [str(d) for d in volume.dims if d not in (*_SPATIAL, CHANNEL)]


def _selection(
    volume: xr.DataArray, select: Mapping[str, int] | None, *, free: str | None = None
) -> tuple[tuple[str, int], ...]:
    """The volume shown: an index along every extra dim but ``free`` (a montage's).

    An extra dim ``select`` does not name shows index 0, with a warning naming it.
    """
    extra = _extra_dims(volume)
    given = dict(select or {})
    unknown = sorted(set(given) - set(extra))
    if unknown:
        raise RenderError(
            f"select names {unknown}, which this volume does not have beyond (z, y, x); "
            f"its extra dims: {_dims_text(volume, extra) or 'none'}"
        )
    if free is not None and free in given:
        raise RenderError(f"a montage over {free!r} shows every {free}: do not select it too")
    missing = [d for d in extra if d not in given and d != free]
    if missing:
        warn_data_problem(
            f"a volume with dims {_dims_text(volume, missing)} beyond (z, y, x) is pictured "
            f"at the first of each ({', '.join(f'{d}=0' for d in missing)}); pass "
            f"select={{{missing[0]!r}: index}} to choose",
            DicomArrayWarning,
        )
    chosen = {d: _check_index(given[d], volume.sizes[d], d, "positions") for d in given}
    return tuple((d, chosen.get(d, 0)) for d in extra if d != free)


def _dims_text(volume: xr.DataArray, dims: Sequence[str]) -> str:
    """``"t (20), echo (2)"``: dims and their sizes, for messages."""
    return ", ".join(f"{d} ({volume.sizes[d]})" for d in dims)


def _montage_cuts(
    volume: xr.DataArray,
    geometry: VolumeGeometry,
    indices: Sequence[int] | None,
    over: str,
    z: int | None,
    select: Mapping[str, int] | None,
) -> list[_Cut]:
    """The tiles of a montage: slices of one volume (``over="z"``), inferior to superior,
    or slice ``z`` of each volume along an extra dim, in index order."""
    if over != "z" and over not in _extra_dims(volume):
        raise RenderError(
            f"a montage runs over 'z' or an extra dim of the volume, not {over!r}; its extra "
            f"dims: {_dims_text(volume, _extra_dims(volume)) or 'none'}"
        )
    if over == "z" and z is not None:
        raise RenderError("z= picks the slice of a montage over an extra dim (over='t', ...)")
    chosen = _selection(volume, select, free=None if over == "z" else over)
    size = volume.sizes[over]
    noun = "slices" if over == "z" else "positions"
    picked = [
        _check_index(i, size, "axial" if over == "z" else over, noun)
        for i in (montage_indices(size) if indices is None else indices)
    ]
    if not picked:
        raise RenderError("a montage needs at least one slice index")
    middle = (volume.sizes["y"] // 2, volume.sizes["x"] // 2)
    if over == "z":
        heights = positions_along_normal(geometry.slice_positions, geometry.superior_normal)
        return [_Cut("z", (k, *middle), chosen) for k in sorted(picked, key=lambda k: heights[k])]
    k = _check_index(z, volume.sizes["z"], "axial")
    return [_Cut("z", (k, *middle), ((over, i), *chosen)) for i in picked]


def _check_index(index: int | None, size: int, axis: str, noun: str = "slices") -> int:
    if index is None:
        return size // 2
    if isinstance(index, bool) or not isinstance(index, int | np.integer):
        raise RenderError(f"{axis} index must be an integer, got {index!r}")
    if not -size <= index < size:
        raise RenderError(
            f"{axis} index {index} is out of range: the volume has {size} {axis} {noun} "
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
    cuts: list[_Cut],
    window: tuple[float | None, float | None, str | None],
    annotate: bool,
    geometry: VolumeGeometry | None = None,
) -> list[np.ndarray]:
    """Pictures of several cuts of a ``(*extra, z, y, x[, channel])`` volume, each of the
    volume its cut selects, with one window and one pixel size."""
    geometry = geometry or VolumeGeometry.of(volume)
    planes = [_plane(volume.isel(dict(cut.select)), geometry, cut) for cut in cuts]
    shown = [
        _on_screen(plane, _screen_directions(geometry, cut.dim))
        for plane, cut in zip(planes, cuts, strict=True)
    ]
    size = _pixel_size([(rows, columns) for _, rows, columns in shown])
    display = _display(volume, planes, window)
    pictures = [
        _square_pixels(display(values, plane.attrs), rows, columns, size)
        for (values, rows, columns), plane in zip(shown, planes, strict=True)
    ]
    if annotate:
        pictures = [
            _annotated(
                picture, edge_labels(geometry, cut.plane), _label_text(volume, geometry, cut)
            )
            for picture, cut in zip(pictures, cuts, strict=True)
        ]
    return pictures


def _display(
    volume: xr.DataArray,
    planes: list[_Plane],
    window: tuple[float | None, float | None, str | None],
) -> Callable[[np.ndarray, dict[str, Any]], np.ndarray]:
    """What turns the values read into display values in [0, 1], the same for every plane."""
    center, width, preset = window
    if CHANNEL in volume.dims:
        asked = (center, width, preset) != (None, None, None)
        chosen = choose_window(volume, center, width, preset=preset) if asked else None
        top = _colour_top(volume)
        return lambda values, _: _colour_values(values, chosen, top)
    chosen = choose_window(volume, center, width, preset=preset)
    if chosen.center is None:  # the range of everything shown, so that panels match
        chosen = _value_range(planes)
    inverted = _is_inverted(volume)
    return lambda values, attrs: _display_values(values, attrs, chosen, inverted)


def _colour_top(volume: xr.DataArray) -> float:
    """The stored value drawn at full intensity: the largest (0028,0101) *Bits Stored*
    allows, else the integer dtype's largest, else 1."""
    bits = volume.attrs.get("BitsStored")
    if isinstance(bits, int) and not isinstance(bits, bool) and 0 < bits <= 64:
        return float(2**bits - 1)
    dtype = np.dtype(volume.dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "iu" else 1.0


def _colour_values(values: np.ndarray, chosen: Window | None, top: float) -> np.ndarray:
    """RGB stored values to [0, 1]: scaled by ``top``, or through ``chosen`` per channel."""
    if chosen is None or chosen.center is None:
        return np.clip(values / np.float32(top), 0.0, 1.0).astype(np.float32)
    width = cast(float, chosen.width)  # set whenever center is: Window checks it
    return np.asarray(WINDOW_FUNCTIONS[chosen.function](values, chosen.center, width))


def _label_text(volume: xr.DataArray, geometry: VolumeGeometry, cut: _Cut) -> str:
    """The position of a cut's plane and, for an n-D volume, the volume it shows:
    ``"S 52.0 mm, t 4.5 s"`` (the dim's coordinate and units, else its index)."""
    parts = [_position_text(geometry, cut)]
    for dim, index in cut.select:
        value = volume[dim].values[index] if dim in volume.coords else index
        units = volume[dim].attrs.get("units", "") if dim in volume.coords else ""
        number = isinstance(value, float | np.floating)
        parts.append(f"{dim} {value:.1f} {units}".strip() if number else f"{dim} {value}")
    return ", ".join(parts)


def _value_range(planes: list[_Plane]) -> Window:
    finite = [p.values[np.isfinite(p.values)] for p in planes]
    shown = np.concatenate(finite) if finite else np.empty(0)
    if not shown.size:  # nothing but padding or the outside of the field
        return Window.from_range(0.0, 1.0)
    return Window.from_range(float(shown.min()), float(shown.max()))


def _display_values(
    values: np.ndarray, attrs: dict[str, Any], chosen: Window, inverted: bool
) -> np.ndarray:
    shown = apply_window(xr.DataArray(values, attrs=attrs), chosen).values
    return np.asarray(1.0 - shown if inverted else shown, dtype=np.float32)


def _is_inverted(volume: xr.DataArray) -> bool:
    """Whether the minimum value is white: MONOCHROME1 (PS3.3 C.7.6.3.1.2)."""
    return str(volume.attrs.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1"


def _plane(volume: xr.DataArray, geometry: VolumeGeometry, cut: _Cut) -> _Plane:
    return (
        _axial_plane(volume, geometry, cut)
        if cut.dim == "z"
        else _orthogonal_plane(volume, geometry, cut)
    )


def _axial_plane(volume: xr.DataArray, geometry: VolumeGeometry, cut: _Cut) -> _Plane:
    """One stored slice: rows along the column direction, columns along the row direction."""
    values, attrs = _read(volume, {"z": cut.voxel[0]})
    rows = np.arange(volume.sizes["y"]) * geometry.row_step
    columns = np.arange(volume.sizes["x"]) * geometry.column_step
    return _Plane(
        values,
        (rows, columns),
        _plane_directions(geometry, "z"),
        (abs(geometry.row_step), abs(geometry.column_step)),
        attrs,
    )


def _orthogonal_plane(volume: xr.DataArray, geometry: VolumeGeometry, cut: _Cut) -> _Plane:
    """The plane through ``cut.voxel`` orthogonal to the slices, containing the kept in-plane
    direction: each slice sampled where the plane crosses it; rows are slices."""
    kept = _KEPT[cut.dim]
    if volume.sizes[cut.dim] == 1 and geometry.is_sheared:
        raise RenderError(
            f"one {cut.dim} row of a stack tilted by {geometry.tilt_degrees:.1f} degrees is "
            f"not a {cut.plane} plane: picture the whole volume with axis={cut.plane!r}"
        )
    direction, step = _in_plane(geometry, kept)
    anchor = geometry.world(np.asarray(cut.voxel, dtype=float))
    along = (np.arange(volume.sizes[kept]) - cut.voxel[("z", "y", "x").index(kept)]) * step
    normal = geometry.normal
    # where the plane meets each slice's plane: the anchor moved along the normal to it
    offsets = (geometry.slice_positions - anchor) @ normal
    points = anchor + offsets[:, None, None] * normal + along[None, :, None] * direction
    values, attrs = _sample_slices(volume, cut.dim, geometry.in_slice_indices(points))
    heights = positions_along_normal(geometry.slice_positions, geometry.superior_normal)
    return _Plane(
        values,
        (heights, along),
        _plane_directions(geometry, cut.dim),
        (geometry.fallback_step or 1.0, abs(step)),
        attrs,
    )


def _in_plane(geometry: VolumeGeometry, dim: str) -> tuple[np.ndarray, float]:
    """The (0020,0037) direction of ``y`` or ``x`` and the signed mm per index along it."""
    if dim == "y":
        return geometry.orientation[3:], geometry.row_step
    return geometry.orientation[:3], geometry.column_step


def _plane_directions(geometry: VolumeGeometry, dim: str) -> tuple[np.ndarray, np.ndarray]:
    """Unit LPS directions of the two axes of a cut through ``dim``, as it is read: a slice's
    rows and columns, or for a coronal (sagittal) cut the slices and the columns (rows)."""
    if dim == "z":
        return _in_plane(geometry, "y")[0], _in_plane(geometry, "x")[0]
    return geometry.superior_normal, _in_plane(geometry, _KEPT[dim])[0]


#: Where radiology viewers put the patient, by the anatomical plane closest to a picture's
#: (the patient axis its normal is nearest, L, P or S): the LPS directions of right and down.
_VIEWS = {
    0: (np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])),  # sagittal: A left, S top
    1: (np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, -1.0])),  # coronal: R left, S top
    2: (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])),  # axial: R left, A top
}


def _screen_directions(geometry: VolumeGeometry, dim: str) -> tuple[np.ndarray, np.ndarray]:
    """The LPS directions of a picture's right and down, for a cut through ``dim``: each of
    the cut's axes goes where the closest anatomical view (:data:`_VIEWS`) wants it."""
    normal = geometry.normal if dim == "z" else _in_plane(geometry, dim)[0]
    right, down = _VIEWS[int(np.argmax(np.abs(normal)))]
    across, upright = _plane_directions(geometry, dim)
    if abs(across @ right) <= abs(upright @ right):
        across, upright = upright, across
    return _toward(across, right), _toward(upright, down)


def _toward(direction: np.ndarray, target: np.ndarray) -> np.ndarray:
    return direction if direction @ target >= 0 else -direction


def _on_screen(
    plane: _Plane, screen: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, _Axis, _Axis]:
    """A plane's values with its axes where ``screen`` (right, down) puts them, whatever
    the order they were stored and read in, and the picture's rows and columns."""
    right, down = screen
    values = plane.values
    (a, b), (da, db), (sa, sb) = plane.positions, plane.directions, plane.steps
    if abs(da @ right) > abs(db @ right):  # the first axis runs across the picture
        values, a, b, da, db, sa, sb = np.swapaxes(values, 0, 1), b, a, db, da, sb, sa
    values, rows = _ordered(values, a if da @ down >= 0 else -a, axis=0)
    values, columns = _ordered(values, b if db @ right >= 0 else -b, axis=1)
    return values, _axis(rows, sa), _axis(columns, sb)


def _ordered(
    values: np.ndarray, positions: np.ndarray, *, axis: int
) -> tuple[np.ndarray, np.ndarray]:
    """Values and positions along ``axis`` sorted by position, whatever the stored order."""
    order = np.argsort(positions, kind="stable")
    return np.take(values, order, axis=axis), positions[order]


def _axis(positions: np.ndarray, step: float) -> _Axis:
    """An axis at ``positions``; ``step`` is its spacing when positions cannot tell."""
    if positions.size > 1 and positions[-1] != positions[0]:
        return _Axis(positions, float(abs(positions[-1] - positions[0])) / (positions.size - 1))
    return _Axis(positions, step)


# --------------------------------------------------------------------------------------------
# Reading and sampling
# --------------------------------------------------------------------------------------------


def _read(volume: xr.DataArray, selection: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Modality values (colour: stored values) of one selection, computed alone so that
    dask fuses it into the reads (computed with others, it would read whole chunks)."""
    block = volume.isel(selection)
    if CHANNEL not in volume.dims:  # colour samples have no modality values
        block = modality_values(block)
    block = block.compute()
    return np.asarray(block.values, dtype=np.float32), dict(block.attrs)


def _sample_slices(
    volume: xr.DataArray, dim: str, where: np.ndarray
) -> tuple[np.ndarray, dict[str, Any]]:
    """Values at fractional ``(y, x)`` indices ``where[k]`` of each slice ``k``, reading only
    a band of rows (``dim`` "y") or columns ("x") around them; NaN outside the slices.

    Consecutive slices are read together while their bands fit in :data:`BAND_ROWS` (a
    stack without tilt is one read of one row a file)."""
    where = np.where(np.abs(where - np.rint(where)) < _WHOLE, np.rint(where), where)
    axis = 0 if dim == "y" else 1
    size = volume.sizes[dim]
    bands = [_band(cuts, size) for cuts in where[..., axis]]
    samples = tuple(volume.sizes[d] for d in volume.dims if d == CHANNEL)  # RGB: 3 a point
    lines = np.full((*where.shape[:2], *samples), np.nan, dtype=np.float32)
    attrs: dict[str, Any] = {}
    for first, stop, (low, high) in _runs(bands):
        block, attrs = _read(volume, {"z": slice(first, stop), dim: slice(low, high)})
        local = where[first:stop] - np.eye(2)[axis] * low
        lines[first:stop] = _bilinear(block, local[..., 0], local[..., 1])
    return lines, attrs


def _band(at: np.ndarray, size: int) -> tuple[int, int] | None:
    """The rows (columns) ``[start, stop)`` that fractional indices ``at`` need, or None."""
    low, high = math.floor(float(at.min())), math.ceil(float(at.max()))
    if high < 0 or low > size - 1:
        return None
    return max(low, 0), min(high, size - 1) + 1


def _runs(bands: list[tuple[int, int] | None]) -> list[tuple[int, int, tuple[int, int]]]:
    """Runs ``(first slice, stop, (low, high))`` of consecutive slices with a band whose
    union spans at most :data:`BAND_ROWS`; slices without a band are in none."""
    runs: list[tuple[int, int, tuple[int, int]]] = []
    for k, band in enumerate(bands):
        if band is None:
            continue
        if runs and runs[-1][1] == k:
            first, _, (low, high) = runs[-1]
            low, high = min(low, band[0]), max(high, band[1])
            if high - low <= BAND_ROWS:
                runs[-1] = (first, k + 1, (low, high))
                continue
        runs.append((k, k + 1, band))
    return runs


def _bilinear(block: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Values of a ``(slices, rows, columns)`` block at fractional indices, ``rows[k]`` and
    ``columns[k]`` in slice ``k``; NaN outside it. Whole indices give the stored values
    exactly, and a neighbour with no weight (padding, NaN) does not enter."""
    height, width = block.shape[1:3]
    inside = (rows >= 0) & (rows <= height - 1) & (columns >= 0) & (columns <= width - 1)
    rows, columns = np.clip(rows, 0, height - 1), np.clip(columns, 0, width - 1)
    k = np.arange(block.shape[0])[:, None]
    samples = (...,) + (None,) * (block.ndim - 3)  # a colour block's channels trail
    inside = inside[samples]
    if (rows == np.rint(rows)).all() and (columns == np.rint(columns)).all():  # no tilt
        whole = block[k, rows.astype(int), columns.astype(int)]
        return np.where(inside, whole, np.nan).astype(np.float32)
    r0, c0 = np.floor(rows).astype(int), np.floor(columns).astype(int)
    r1, c1 = np.minimum(r0 + 1, height - 1), np.minimum(c0 + 1, width - 1)
    fr, fc = (rows - r0)[samples], (columns - c0)[samples]
    upper = _lerp(block[k, r0, c0], block[k, r0, c1], fc)
    lower = _lerp(block[k, r1, c0], block[k, r1, c1], fc)
    return np.where(inside, _lerp(upper, lower, fr), np.nan).astype(np.float32)


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``a`` to ``b`` by ``t``; exactly ``a`` (``b``) at 0 (1), whatever the other (NaN)."""
    return np.where(t == 0, a, np.where(t == 1, b, a + (b - a) * t))


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


def _position_text(geometry: VolumeGeometry, cut: _Cut) -> str:
    """Where the plane lies along its normal, turned toward L, P or S as DICOM's patient
    coordinates are (for a plain axial slice: its S coordinate), e.g. ``"S 52.0 mm"``."""
    normal = geometry.normal if cut.dim == "z" else _in_plane(geometry, cut.dim)[0]
    main = int(np.argmax(np.abs(normal)))
    normal = _toward(normal, np.eye(3)[main])
    position = float(geometry.world(np.asarray(cut.voxel, dtype=float)) @ normal)
    return f"{DIRECTION_LETTERS[main][0]} {position:.1f} mm"


def _annotated(picture: np.ndarray, labels: dict[str, str], position: str) -> np.ndarray:
    """The picture with ``labels`` at the middle of its edges and ``position`` at the bottom
    left, white on a black outline, within one line of the edges."""
    from PIL import Image, ImageDraw, ImageFont

    height, width = picture.shape[:2]
    size = int(np.clip(min(height, width) // 20, 8, 32))
    font = ImageFont.load_default(size=size)
    if not isinstance(font, ImageFont.FreeTypeFont):  # Pillow built without FreeType
        raise RenderError("annotate=True needs Pillow with FreeType, for its built-in font")
    stroke = max(1, size // 8)
    texts = _placements(font, width, height, stroke + 1, labels, position)
    masks = []
    for outline in (stroke, 0):  # a black outline, then the white letters
        mask = Image.new("L", (width, height))
        draw = ImageDraw.Draw(mask)
        for xy, anchor, text, face in texts:
            draw.text(xy, text, fill=255, font=face, anchor=anchor, stroke_width=outline)
        masks.append(np.asarray(mask, dtype=np.float32) / 255)
    # a colour picture's channels trail: each gets the same white letters, black outline
    dark, light = (m.reshape(m.shape + (1,) * (picture.ndim - 2)) for m in masks)
    shaded = np.nan_to_num(picture) * (1 - dark) * (1 - light) + light
    return np.where(dark > 0, shaded, picture).astype(np.float32)


def _placements(
    font: Any, width: int, height: int, pad: int, labels: dict[str, str], position: str
) -> list[tuple[tuple[float, float], str, str, Any]]:
    """Where each text goes: ((x, y), Pillow anchor, text, font). The position, at the bottom
    left, is drawn smaller when it would run into the bottom letter of a small picture."""
    texts = [
        ((width / 2, pad), "mt", labels["top"], font),
        ((width / 2, height - pad), "md", labels["bottom"], font),
        ((pad, height / 2), "lm", labels["left"], font),
        ((width - pad, height / 2), "rm", labels["right"], font),
    ]
    room = width / 2 - font.getlength(labels["bottom"]) / 2 - 2 * pad
    needed = font.getlength(position)
    small = (
        font if needed <= room else font.font_variant(size=max(6, int(font.size * room / needed)))
    )
    texts.append(((pad, height - pad), "ld", position, small))
    return texts


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
    shape = [1] * values.ndim  # a colour picture's channels trail
    shape[axis] = count
    weight = weight.reshape(shape)
    return _lerp(np.take(values, lower, axis=axis), np.take(values, lower + 1, axis=axis), weight)


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------


def _grid(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    height = max(t.shape[0] for t in tiles)
    width = max(t.shape[1] for t in tiles)
    columns = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    out = np.zeros(
        (
            rows * height + (rows - 1) * GAP,
            columns * width + (columns - 1) * GAP,
            *tiles[0].shape[2:],
        ),
        np.float32,
    )
    for n, tile in enumerate(tiles):
        top, left = (n // columns) * (height + GAP), (n % columns) * (width + GAP)
        out[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    return out


def _side_by_side(panels: list[np.ndarray]) -> np.ndarray:
    """Panels in a row, vertically centred on a black background."""
    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + GAP * (len(panels) - 1)
    out = np.zeros((height, width, *panels[0].shape[2:]), np.float32)
    left = 0
    for panel in panels:
        top = (height - panel.shape[0]) // 2
        out[top : top + panel.shape[0], left : left + panel.shape[1]] = panel
        left += panel.shape[1] + GAP
    return out
