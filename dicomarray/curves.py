"""Time-attenuation curves: the mean value of a small region of a volume over time, and a
picture of them.

:func:`region_curve` selects a square of a few voxels in every slice, converts only those
to modality values (HU for CT) and averages them per time point, lazily: nothing is read
until the curve is computed, and then only the files the region lies in, one region's
voxels at a time. :func:`write_curves_picture` draws curves as a line plot with labelled
axes, a PNG made with Pillow as the other pictures are (:mod:`dicomarray.render`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from .errors import RenderError
from .staging import check_replaceable, staged
from .transforms import modality_values

if TYPE_CHECKING:
    from PIL import ImageDraw, ImageFont

__all__ = ["region_curve", "write_curves_picture"]

#: Size of a curves picture in pixels (width, height).
PICTURE_SIZE = (720, 440)
#: Line colours, one per curve in order (red, blue, green, orange).
COLOURS = ((200, 30, 30), (30, 80, 200), (20, 140, 60), (220, 120, 0))
_MARGINS = {"left": 78, "right": 24, "top": 44, "bottom": 62}


def region_curve(
    volume: xr.DataArray, *, x: float, y: float, half_width: float, dim: str = "t"
) -> xr.DataArray:
    """Mean modality value of a square region in every slice, per step of `dim` (lazy).

    Parameters
    ----------
    volume : xarray.DataArray
        Stored values with dims ``(..., dim, ..., "z", "y", "x")``, as
        :func:`dicomarray.open_series` gives them.
    x, y : float
        Centre of the square in the volume's ``x`` and ``y`` coordinates (mm along the
        row and column directions; for an axial series, patient x and y).
    half_width : float
        Half the square's side in mm: voxels whose centres lie within it are averaged.
    dim : str, default "t"
        The dim the curve runs along; every other dim is averaged.

    Returns
    -------
    xarray.DataArray
        Dask-backed float, dims ``(dim,)`` with the volume's coordinate of `dim`. Each of
        the volume's chunks is read whole and cut to the region: open the series with
        ``chunks={dim: 1}`` to hold one volume at a time (the sample perfusion series:
        1.2 MiB at the peak instead of 11).

    Raises
    ------
    RenderError
        If the volume has no `dim` or the square holds no voxel centre.
    """
    if dim not in volume.dims:
        raise RenderError(f"{_name(volume)}: a curve along {dim!r} needs that dim: {volume.dims}")
    columns = np.flatnonzero(np.abs(volume["x"].values - x) <= half_width)
    rows = np.flatnonzero(np.abs(volume["y"].values - y) <= half_width)
    if not (len(columns) and len(rows)):
        raise RenderError(
            f"{_name(volume)}: the {2 * half_width:g} mm square at x = {x:g}, y = {y:g} mm "
            "holds no voxel centre"
        )
    # Selected before the conversion, so that only the region's voxels are converted.
    box = modality_values(volume.isel(x=columns, y=rows))
    return box.mean(dim=[d for d in box.dims if d != dim])


def write_curves_picture(
    curves: Mapping[str, xr.DataArray],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    units: str = "HU",
    overwrite: bool = False,
) -> Path:
    """Draw curves over time as a PNG: one coloured line per curve, labelled axes, a legend.

    Parameters
    ----------
    curves : mapping of str to xarray.DataArray
        Legend text to a 1-D curve whose dim coordinate is the time in seconds (e.g. from
        :func:`region_curve`); lazy curves are computed together, so files shared by their
        regions are read once.
    path : str or os.PathLike
        The ``.png`` to write, staged (:mod:`dicomarray.staging`).
    title : str, optional
        Text above the plot.
    units : str, default "HU"
        The value axis' label.
    overwrite : bool, default False
        Replace an existing file; otherwise an existing file is a
        :class:`~dicomarray.errors.WriteError`.

    Returns
    -------
    pathlib.Path
        The written picture.

    Raises
    ------
    RenderError
        For a path that is not a .png, no curve, more curves than :data:`COLOURS`, or a
        curve that is not 1-D.
    WriteError
        ``path`` exists and ``overwrite`` is False, or writing it failed.
    """
    import dask
    from PIL import Image

    path = Path(path)
    _check_curves(curves, path)
    check_replaceable(path, overwrite=overwrite, kind="picture")
    computed = dict(zip(curves, dask.compute(*curves.values()), strict=True))
    picture = _plot(computed, title, units)
    with staged(path, overwrite=overwrite, kind="picture") as output:
        Image.fromarray(picture, mode="RGB").save(output.partial, format="PNG")
    return output.final


def _check_curves(curves: Mapping[str, xr.DataArray], path: Path) -> None:
    if path.suffix.lower() != ".png":
        raise RenderError(f"{path}: a curves picture is a .png")
    if not 1 <= len(curves) <= len(COLOURS):
        raise RenderError(f"{path}: draws 1 to {len(COLOURS)} curves, got {len(curves)}")
    for name, curve in curves.items():
        if curve.ndim != 1:
            raise RenderError(f"{path}: curve {name!r} is not 1-D: dims {curve.dims}")


def _name(volume: xr.DataArray) -> str:
    return f"series {volume.attrs.get('SeriesInstanceUID', volume.name or '(unnamed)')}"


class _Frame:
    """The plot area in pixels and the data ranges it shows, with nice tick steps."""

    def __init__(self, times: np.ndarray, values: np.ndarray) -> None:
        width, height = PICTURE_SIZE
        self.left, self.top = _MARGINS["left"], _MARGINS["top"]
        self.right, self.bottom = width - _MARGINS["right"], height - _MARGINS["bottom"]
        self.t_ticks = _ticks(0.0 if times.min() >= 0 else times.min(), times.max())
        self.v_ticks = _ticks(min(0.0, values.min()), values.max())

    def xy(self, t: float, v: float) -> tuple[float, float]:
        (t0, t1), (v0, v1) = self.t_ticks[[0, -1]], self.v_ticks[[0, -1]]
        px = self.left + (t - t0) / (t1 - t0) * (self.right - self.left)
        py = self.bottom - (v - v0) / (v1 - v0) * (self.bottom - self.top)
        return px, py


def _ticks(low: float, high: float, count: int = 6) -> np.ndarray:
    """Tick values at a 1, 2 or 5 times a power of ten step covering [low, high]."""
    span = max(high - low, 1e-9)
    raw = span / count
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first, last = math.floor(low / step), math.ceil(high / step)
    return np.arange(first, max(last, first + 1) + 1) * step


def _plot(curves: Mapping[str, xr.DataArray], title: str, units: str) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    times = {name: _seconds(curve) for name, curve in curves.items()}
    values = {name: np.asarray(curve.values, dtype=float) for name, curve in curves.items()}
    frame = _Frame(np.concatenate(list(times.values())), np.concatenate(list(values.values())))
    image = Image.new("RGB", PICTURE_SIZE, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=15)
    if not isinstance(font, ImageFont.FreeTypeFont):  # Pillow built without FreeType
        raise RenderError("a curves picture needs Pillow with FreeType, for its built-in font")
    _axes(draw, frame, font, units)
    for (name, t), colour in zip(times.items(), COLOURS, strict=False):
        points = [frame.xy(a, b) for a, b in zip(t, values[name], strict=True)]
        draw.line(points, fill=colour, width=3, joint="curve")
        for px, py in points:
            draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=colour)
    _legend(draw, frame, font, list(curves))
    if title:
        draw.text((PICTURE_SIZE[0] / 2, 14), title, fill=(0, 0, 0), font=font, anchor="mt")
    return np.asarray(image)


def _seconds(curve: xr.DataArray) -> np.ndarray:
    (dim,) = curve.dims
    return np.asarray(curve[dim].values, dtype=float)


def _axes(
    draw: ImageDraw.ImageDraw, frame: _Frame, font: ImageFont.FreeTypeFont, units: str
) -> None:
    grid, ink = (225, 225, 225), (0, 0, 0)
    for t in frame.t_ticks:
        px, _ = frame.xy(t, frame.v_ticks[0])
        draw.line([(px, frame.top), (px, frame.bottom)], fill=grid)
        draw.text((px, frame.bottom + 6), f"{t:g}", fill=ink, font=font, anchor="mt")
    for v in frame.v_ticks:
        _, py = frame.xy(frame.t_ticks[0], v)
        draw.line([(frame.left, py), (frame.right, py)], fill=grid)
        draw.text((frame.left - 6, py), f"{v:g}", fill=ink, font=font, anchor="rm")
    draw.rectangle((frame.left, frame.top, frame.right, frame.bottom), outline=ink)
    middle = (frame.left + frame.right) / 2
    draw.text((middle, frame.bottom + 30), "time (s)", fill=ink, font=font, anchor="mt")
    draw.text((14, (frame.top + frame.bottom) / 2), units, fill=ink, font=font, anchor="lm")


def _legend(
    draw: ImageDraw.ImageDraw, frame: _Frame, font: ImageFont.FreeTypeFont, names: list[str]
) -> None:
    for i, (name, colour) in enumerate(zip(names, COLOURS, strict=False)):
        y = frame.top + 14 + 20 * i
        x = frame.right - 170
        draw.line([(x, y), (x + 24, y)], fill=colour, width=3)
        draw.text((x + 32, y), name, fill=(0, 0, 0), font=font, anchor="lm")
