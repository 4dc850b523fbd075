"""Reorientation: lazy flips and transposes that point a volume's axes where asked.

Orientation codes name, for each spatial axis of the array from the fastest (the last
numpy axis, columns) to the slowest (the first, slices), the patient direction that
increasing index runs toward: ``L``/``R``, ``P``/``A``, ``S``/``I``. This is how ITK,
nibabel and dcm2niix name orientations: an axial head-first series as stored is
``"LPS"`` (columns toward the patient's left, rows toward posterior, slices toward the
head), and nibabel's ``as_closest_canonical`` gives ``"RAS"``.

Reorienting never interpolates: each dim is at most reversed and the dims are put in a
new order, so the dims keep their names and coordinates (``z`` is still the position
along the slice normal), every coordinate and the provenance of each slice follow, and
the geometry (:class:`dicomarray.geometry.VolumeGeometry`) of the result describes it
exactly. An oblique series goes to the closest orientation, as nibabel's does.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import xarray as xr

from .errors import DicomArrayError
from .geometry import DIRECTION_LETTERS, VolumeGeometry

#: The attr recording a reorientation: the code asked and the source's code (an export
#: adds the dims written, :func:`dicomarray.writers.common.oriented`).
ORIENTATION_ATTR = "dicomarray_orientation"

#: Each direction letter and the LPS unit vector it names: (axis, sign).
DIRECTIONS: dict[str, tuple[int, int]] = {
    letter: (axis, sign)
    for axis, pair in enumerate(DIRECTION_LETTERS)
    for letter, sign in zip(pair, (1, -1), strict=True)
}


def orientation_code(volume: xr.DataArray) -> str:
    """The volume's orientation code, fastest axis first: ``"LPS"`` for a plain axial.

    Raises
    ------
    DicomArrayError
        If the volume has no geometry (see :meth:`VolumeGeometry.of`).
    """
    return VolumeGeometry.of(volume).orientation_code()


def reorient(volume: xr.DataArray, code: str = "RAS") -> xr.DataArray:
    """The volume with its axes flipped and reordered to the closest match of ``code``.

    Lazy: the result reads the same files, slice by slice, as the source would.

    Parameters
    ----------
    volume : xarray.DataArray
        A volume with dims ``z``, ``y`` and ``x``; other dims (``t``, ``echo``, ...) stay
        first, in their order, and a colour ``"channel"`` stays last, each untouched.
    code : str, default "RAS"
        Three letters, one of each pair L/R, P/A, S/I, fastest axis first (see the
        module's docstring): ``"RAS"`` is nibabel's canonical, ``"LPS"`` ITK's.

    Returns
    -------
    xarray.DataArray
        The same values, dims reversed where needed and transposed; the spatial dims end
        in the order the code asks, slowest first. ``attrs["dicomarray_orientation"]``
        records the code asked and the code of the source.

    Raises
    ------
    DicomArrayError
        For a code that is not three letters naming the three axes, or a volume without
        geometry.

    Examples
    --------
    >>> canonical = volume.dicom.reorient("RAS")  # doctest: +SKIP
    >>> canonical.dicom.orientation_code()  # doctest: +SKIP
    'RAS'
    """
    wanted = _checked_code(code)
    geometry = VolumeGeometry.of(volume)
    dims, flips = _closest(geometry, wanted)
    reoriented = volume.isel({dim: slice(None, None, -1) for dim in flips})
    # extra dims (t, echo, ...) stay first, in their order; a colour channel stays last
    others = [d for d in volume.dims if d not in geometry.dims and d != "channel"]
    colour = ["channel"] if "channel" in volume.dims else []
    reoriented = reoriented.transpose(*others, *reversed(dims), *colour)
    reoriented.attrs[ORIENTATION_ATTR] = {
        "code": wanted,
        "source_code": geometry.orientation_code(),
    }
    return reoriented


def _checked_code(code: Any) -> str:
    letters = str(code).upper() if isinstance(code, str) else ""
    axes = sorted(DIRECTIONS[c][0] for c in letters if c in DIRECTIONS)
    if len(letters) != 3 or axes != [0, 1, 2]:
        raise DicomArrayError(
            f"orientation code {code!r} must be three letters, one of each pair L/R, P/A "
            "and S/I (for example 'RAS' or 'LPS')"
        )
    return letters


def _closest(geometry: VolumeGeometry, code: str) -> tuple[tuple[str, ...], list[str]]:
    """The dims to put at each letter of ``code`` (fastest first) and the dims to flip.

    Of the six ways to give each letter one dim, the one whose directions best match the
    letters' (largest sum of absolute cosines) wins, as nibabel's ``io_orientation``.
    """
    targets = []
    for letter in code:
        axis, sign = DIRECTIONS[letter]
        target = np.zeros(3)
        target[axis] = sign
        targets.append(target)
    directions = {dim: geometry.direction(dim) for dim in geometry.dims}

    def fit(dims: tuple[str, ...]) -> float:
        return float(sum(abs(float(directions[d] @ t)) for d, t in zip(dims, targets, strict=True)))

    best = max(itertools.permutations(geometry.dims), key=fit)
    flips = [d for d, t in zip(best, targets, strict=True) if directions[d] @ t < 0]
    return best, flips
