"""Checks that a volume's affine agrees with the positions its frames were read at.

Issue 13 asks that, whatever the layout (classic slices, enhanced frames, mosaics, n-D),
the affine reproduce every frame's (0020,0032) *Image Position (Patient)* within
0.01 mm. The checks:

* :class:`GeometryGuard` (:func:`affine_disagreement`), run by ``tests/conftest.py`` on
  every volume any test opens: the affine against the ``image_position_*`` coordinates
  and against every frame's position as the index read it (every volume of an n-D
  series), from coords and the assembly's frames, reading no pixels;
* :func:`assert_affine_matches_positions` from the volume alone: its ``image_position_*``
  coordinates are the positions assembly read for each slice;
* :func:`assert_affine_matches_files` against the files themselves, read again by pydicom
  (an independent reader, enhanced functional groups included): each frame's first voxel,
  last column and last row, so that a wrong orientation or pixel spacing shows too.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pydicom
import xarray as xr

from dicomarray.assembly import Assembly
from dicomarray.errors import DicomArrayError
from dicomarray.geometry import POSITION_COORDS, VolumeGeometry

#: How far (mm) the affine may put a frame's voxel from where its file says it is.
POSITION_TOL_MM = 0.01


def _slice_indices(geometry: VolumeGeometry) -> np.ndarray:
    """(slices, 3) array indices (in the volume's dim order) of each slice's voxel at
    y index 0, x index 0."""
    indices = np.zeros((geometry.n_slices, len(geometry.dims)))
    indices[:, geometry.dims.index("z")] = np.arange(geometry.n_slices)
    return indices


#: The assembly's warning that the affine misses a slice's position, with the figure.
_MISS_WARNING = re.compile(
    r"the affine .*misses slice \d+\S* (?:ImagePositionPatient )?by ([0-9.e+-]+) mm"
)


def warned_miss_mm(volume: xr.DataArray) -> float | None:
    """How far (mm) the assembly report warns that the affine misses a slice, or None."""
    warnings = volume.attrs.get("dicomarray_assembly", {}).get("warnings", [])
    found = [float(m.group(1)) for w in warnings if (m := _MISS_WARNING.search(w))]
    return max(found) if found else None


def flagged_irregular(volume: xr.DataArray) -> bool:
    """Whether the stack has no one slice step and its assembly report warns so: then no
    affine maps every slice, and the checks use the exact per-slice
    :meth:`~dicomarray.geometry.VolumeGeometry.world` instead."""
    warnings = volume.attrs.get("dicomarray_assembly", {}).get("warnings", [])
    irregular = not VolumeGeometry.of(volume).is_regular
    return irregular and any("uneven spacing" in warning for warning in warnings)


def _to_world(volume: xr.DataArray, geometry: VolumeGeometry, indices: np.ndarray) -> np.ndarray:
    """LPS mm of (n, 3) indices: through the affine, or world() for a flagged stack."""
    if flagged_irregular(volume):
        return geometry.world(indices)
    return indices @ geometry.affine()[:3, :3].T + geometry.affine()[:3, 3]


def _moved_by_selection(
    volume: xr.DataArray, geometry: VolumeGeometry, positions: np.ndarray
) -> np.ndarray:
    """(n, 3) positions of a source frame's first voxel moved to the volume's first voxel.

    A selection in y or x moves the affine's origin with it, so a position is moved by
    the rows and columns left out (the ``origin`` attr of the ``y`` and ``x`` coords).
    """
    for dim in ("y", "x"):
        coord = volume[dim]
        shift = float(coord.values[0]) - coord.attrs.get("origin", float(coord.values[0]))
        positions = positions + shift * geometry.direction(dim)
    return positions


def affine_position_errors(volume: xr.DataArray) -> np.ndarray:
    """Distance (mm) from each slice's ImagePositionPatient to where the affine puts it."""
    missing = [name for name in POSITION_COORDS if name not in volume.coords]
    if missing:
        raise AssertionError(f"volume has no {missing} coordinates to check the affine against")
    geometry = VolumeGeometry.of(volume)
    positions = np.stack([np.asarray(volume[n].values, float) for n in POSITION_COORDS], 1)
    positions = _moved_by_selection(volume, geometry, positions)
    mapped = _to_world(volume, geometry, _slice_indices(geometry))
    return np.linalg.norm(mapped - positions, axis=1)


def frame_position_errors(volume: xr.DataArray, frames: pd.DataFrame) -> np.ndarray:
    """Distance (mm) from every frame's ImagePositionPatient, as the index read it from
    its file, to where the affine puts the first voxel of the grid cell it fills.

    Every frame of every volume of an n-D series is checked (the ``source_file`` and
    ``frame`` coords, dims ``(*extra, "z")``, say which frame fills which cell), not only
    the positions kept on ``z``. Mosaic tiles (a ``tile`` column) are left out: their
    file's position is the corner of the whole mosaic, not of the tile.

    Parameters
    ----------
    volume : xarray.DataArray
        A volume as :func:`dicomarray.open_series` returns it.
    frames : pandas.DataFrame
        The assembly's frames (``path``, ``frame``, ``ImagePositionPatient``).
    """
    geometry = VolumeGeometry.of(volume)
    files, numbers = (
        coord.transpose(..., "z").values.reshape(-1)
        for coord in xr.broadcast(volume["source_file"], volume["frame"])
    )
    z_index = np.resize(np.arange(volume.sizes["z"]), len(files))
    own = frames if "tile" not in frames else frames[frames["tile"].isna()]
    position_of = {
        (str(path), int(frame)): position
        for path, frame, position in zip(
            own["path"], own["frame"], own["ImagePositionPatient"], strict=True
        )
        if _is_position(position)
    }
    cells = [
        (k, position_of[(str(path), int(frame))])
        for k, path, frame in zip(z_index, files, numbers, strict=True)
        if (str(path), int(frame)) in position_of
    ]
    if not cells:
        return np.zeros(0)
    indices = np.zeros((len(cells), len(geometry.dims)))
    indices[:, geometry.dims.index("z")] = [k for k, _ in cells]
    positions = np.array([position for _, position in cells], dtype=float)
    mapped = _to_world(volume, geometry, indices)
    return np.linalg.norm(mapped - _moved_by_selection(volume, geometry, positions), axis=1)


def _is_position(value: object) -> bool:
    return isinstance(value, list | tuple | np.ndarray) and len(value) == 3


def affine_disagreement(volume: xr.DataArray, frames: pd.DataFrame) -> str | None:
    """Why the affine of a freshly opened volume disagrees with its frames' positions,
    or None when it agrees within :data:`POSITION_TOL_MM`, when the assembly warned that
    it misses them by as much (:func:`warned_miss_mm`), or when it offers no affine.

    Reads no pixels: the coords, the attrs and the assembly's frames only. A volume
    without ``image_position_*`` coords has no positions to reproduce, and one whose
    geometry cannot be built (uneven rows) offers no affine: neither is a disagreement.
    """
    if not all(name in volume.coords for name in POSITION_COORDS):
        return None
    try:
        errors = np.concatenate(
            [affine_position_errors(volume), frame_position_errors(volume, frames)]
        )
    except DicomArrayError:
        return None
    off = errors > POSITION_TOL_MM
    warned = warned_miss_mm(volume)
    # the warning's figure is rounded to 3 digits
    if not off.any() or (warned is not None and errors.max() <= warned * 1.001 + POSITION_TOL_MM):
        return None
    return (
        f"affine misses ImagePositionPatient by up to {errors.max():.4g} mm "
        f"({int(off.sum())} of {errors.size} slice and frame positions off by more than "
        f"{POSITION_TOL_MM} mm), with no warning saying so; assembly warnings: "
        f"{volume.attrs.get('dicomarray_assembly', {}).get('warnings', [])}"
    )


@dataclass
class GeometryGuard:
    """Every volume a test opens, checked by :func:`affine_disagreement` as it is built.

    ``tests/conftest.py`` wraps :func:`dicomarray.volume.volume_from_assembly` with
    :meth:`check` for every test and fails the test at teardown when ``failures`` is not
    empty (a failure is recorded, not raised, so that code catching exceptions, such as
    a batch, cannot hide it).
    """

    checked: int = 0
    failures: list[str] = field(default_factory=list)

    def check(self, volume: xr.DataArray, assembly: Assembly) -> None:
        """Check one volume built from ``assembly``; record a failure naming its series."""
        self.checked += 1
        message = affine_disagreement(volume, assembly.frames)
        if message is not None:
            first = assembly.frames["path"].iloc[0]
            self.failures.append(f"series {assembly.series_uid} ({first}): {message}")


def assert_affine_matches_positions(volume: xr.DataArray, tol: float = POSITION_TOL_MM) -> None:
    """Fail unless the affine puts every slice's first voxel at its ImagePositionPatient.

    A stack the assembly flagged as unevenly spaced (:func:`flagged_irregular`) is
    checked through its exact per-slice mapping instead: no affine can map it.

    Parameters
    ----------
    volume : xarray.DataArray
        A volume from :func:`dicomarray.open_series` (any dim order; the
        ``image_position_l/p/s`` coordinates along ``z`` are the frames' positions).
    tol : float
        Largest distance allowed, in mm.
    """
    _assert_within(affine_position_errors(volume), tol, "ImagePositionPatient")


def frame_geometry(ds: pydicom.Dataset, frame: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(position, orientation, (row, column) spacing) of one frame of a pydicom data set.

    An enhanced file's frame takes its own functional group over the shared one
    (PS3.3 C.7.6.16); a classic file's values are at the top level.
    """
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    own = per_frame[frame] if per_frame else None
    shared_groups = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_groups[0] if shared_groups else None

    def value(sequence: str, keyword: str) -> np.ndarray:
        for groups in (own, shared):
            if groups is not None and sequence in groups and keyword in groups[sequence][0]:
                return np.array(groups[sequence][0][keyword].value, float)
        return np.array(ds[keyword].value, float)

    return (
        value("PlanePositionSequence", "ImagePositionPatient"),
        value("PlaneOrientationSequence", "ImageOrientationPatient"),
        value("PixelMeasuresSequence", "PixelSpacing"),
    )


def affine_file_errors(volume: xr.DataArray) -> np.ndarray:
    """(slices, 3) distance (mm) between the affine and the files at each frame's first
    voxel, last column and last row (the whole source frame; no y or x selection)."""
    geometry = VolumeGeometry.of(volume)
    rows, columns = volume.sizes["y"], volume.sizes["x"]
    indices = _slice_indices(geometry)
    errors = np.zeros((geometry.n_slices, 3))
    paths, frames = volume["source_file"].values, volume["frame"].values
    headers = {path: pydicom.dcmread(path, stop_before_pixels=True) for path in set(paths)}
    for k, (path, frame) in enumerate(zip(paths, frames, strict=True)):
        position, orientation, spacing = frame_geometry(headers[path], int(frame))
        row_dir, col_dir = orientation[:3], orientation[3:]
        truth = [
            position,
            position + (columns - 1) * spacing[1] * row_dir,
            position + (rows - 1) * spacing[0] * col_dir,
        ]
        for j, (dim, n) in enumerate(((None, 0), ("x", columns - 1), ("y", rows - 1))):
            index = indices[k].copy()
            if dim is not None:
                index[geometry.dims.index(dim)] = n
            errors[k, j] = np.linalg.norm(_to_world(volume, geometry, index[None])[0] - truth[j])
    return errors


def assert_affine_matches_files(volume: xr.DataArray, tol: float = POSITION_TOL_MM) -> None:
    """Fail unless the affine puts each frame's corners where its file (read by pydicom) says.

    As :func:`assert_affine_matches_positions`, a stack flagged as unevenly spaced is
    checked through its exact per-slice mapping.

    Parameters
    ----------
    volume : xarray.DataArray
        A whole-frame volume from :func:`dicomarray.open_series` (``source_file`` and
        ``frame`` coordinates along ``z``; any dim order).
    tol : float
        Largest distance allowed, in mm.
    """
    _assert_within(affine_file_errors(volume).max(axis=1), tol, "the files' frame corners")


def _assert_within(errors: np.ndarray, tol: float, what: str) -> None:
    assert errors.size, "no slices to check"
    worst = int(np.argmax(errors))
    assert errors.max() <= tol, (
        f"affine misses {what} by {errors.max():.4g} mm at slice {worst} (tolerance {tol} mm); "
        f"{int((errors > tol).sum())} of {errors.size} slices are off"
    )


def corner_world(volume: xr.DataArray) -> np.ndarray:
    """World (LPS mm) positions of the 8 corner voxels through the volume's affine, in
    (z, y, x) index order whatever the array's dim order."""
    geometry = VolumeGeometry.of(volume)
    sizes = {dim: volume.sizes[dim] for dim in geometry.dims}
    corners = []
    for corner in itertools.product(*[(0, sizes[dim] - 1) for dim in ("z", "y", "x")]):
        index = [dict(zip(("z", "y", "x"), corner, strict=True))[dim] for dim in geometry.dims]
        corners.append([*index, 1.0])
    return (np.array(corners) @ geometry.affine().T)[:, :3]
