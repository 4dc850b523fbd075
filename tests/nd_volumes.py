"""n-D test volumes built as the issue 13 contract says the assembly makes them.

Three-D volumes of one geometry, opened from series written in the test, stacked along
an extra dim (``t``, ``echo``, ...) with its coordinate; the provenance coords
(``source_file``, ``frame``) and any per-volume rescale land on ``(dim, "z")``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

#: The dim coordinate each extra dim gets, with its units (the contract's table).
DIM_UNITS = {"t": "s", "echo": "ms"}

_RESCALE = {"RescaleSlope": "rescale_slope", "RescaleIntercept": "rescale_intercept"}


def stack_volumes(
    volumes: Sequence[xr.DataArray], dim: str = "t", values: Sequence[float] | None = None
) -> xr.DataArray:
    """``volumes`` (3-D, same slice positions) as one ``(dim, z, y, x)`` volume.

    Each volume's own (0028,1053) and (0028,1052), when the volumes disagree, become the
    coords ``rescale_slope`` / ``rescale_intercept`` on ``(dim, "z")``, as a per-frame
    tag does; ``values`` is the dim coordinate (default 0, 1, 2, ...).
    """
    volumes = [_rescale_as_coords(v, volumes) for v in volumes]
    stacked = xr.concat(
        volumes, dim=dim, coords="different", compat="equals", combine_attrs="override"
    )
    coordinate = np.arange(len(volumes), dtype=float) if values is None else values
    stacked = stacked.assign_coords({dim: np.asarray(coordinate, dtype=float)})
    if dim in DIM_UNITS:
        stacked[dim].attrs["units"] = DIM_UNITS[dim]
    for name in _PROVENANCE:  # every frame its own, also where two volumes agree
        if name in stacked.coords and stacked[name].dims == ("z",):
            stacked = stacked.assign_coords({name: stacked[name].expand_dims({dim: len(volumes)})})
    return stacked.transpose(dim, "z", "y", "x", ...)


_PROVENANCE = ("source_file", "frame", "sop_instance_uid")


def _rescale_as_coords(volume: xr.DataArray, volumes: Sequence[xr.DataArray]) -> xr.DataArray:
    differ = [k for k in _RESCALE if len({str(v.attrs.get(k)) for v in volumes}) > 1]
    if not differ:
        return volume
    coords = {
        _RESCALE[k]: ("z", np.full(volume.sizes["z"], float(volume.attrs[k]))) for k in differ
    }
    moved = volume.assign_coords(coords)
    moved.attrs = {k: v for k, v in volume.attrs.items() if k not in differ}
    return moved


def rgb_volume(shape: tuple[int, int, int] = (4, 6, 8), *, dtype=np.uint8) -> xr.DataArray:
    """A ``(z, y, x, channel)`` colour volume with known values: red rises along x,
    green along y, blue along z; geometry of a plain axial stack, 1 mm voxels."""
    z, y, x = shape
    top = np.iinfo(dtype).max if np.dtype(dtype).kind in "iu" else 1.0
    red = np.broadcast_to(np.linspace(0, top, x), shape)
    green = np.broadcast_to(np.linspace(0, top, y)[:, None], shape)
    blue = np.broadcast_to(np.linspace(0, top, z)[:, None, None], shape)
    data = np.round(np.stack([red, green, blue], axis=-1)).astype(dtype)
    return xr.DataArray(
        data,
        dims=("z", "y", "x", "channel"),
        coords={
            "z": ("z", np.arange(z, dtype=float), {"units": "mm"}),
            "y": ("y", np.arange(y, dtype=float), {"units": "mm"}),
            "x": ("x", np.arange(x, dtype=float), {"units": "mm"}),
            "channel": ["R", "G", "B"],
            "image_position_l": ("z", np.zeros(z)),
            "image_position_p": ("z", np.zeros(z)),
            "image_position_s": ("z", np.arange(z, dtype=float)),
        },
        attrs={
            "ImageOrientationPatient": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            "PixelSpacing": [1.0, 1.0],
            "SamplesPerPixel": 3,
            "PhotometricInterpretation": "RGB",
            "BitsStored": 8 * np.dtype(dtype).itemsize,
            "Modality": "OT",
        },
        name="image",
    )
