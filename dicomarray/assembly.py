"""From index rows to one ordered stack of frames, with a report of what was kept and why.

Assembly never opens pixel data. It picks a series, drops copied instances, expands
multi-frame instances into frames, splits the series into stacks of one orientation and
image size (localizers apart), orders the largest stack along the slice normal and checks
its spacing. Every decision lands in :attr:`Assembly.report`, and every data problem is
also a :class:`~dicomarray.errors.GeometryWarning`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .attrs import finite_numbers, orientation_vector, plain_cell, same_orientation
from .errors import (
    AmbiguousSeriesError,
    AssemblyError,
    SeriesNotFoundError,
    SeriesSelectionWarning,
    warn_data_problem,
)
from .frames import expand_frames
from .geometry import (
    POSITION_TOLERANCE_MM,
    SPACING_RTOL,
    TILT_TOLERANCE_DEGREES,
    SeriesGeometry,
    describe_steps,
    positions_along_normal,
    regular_step,
    slice_normal,
    slice_spacing_report,
    tilt_degrees,
)
from .mosaic import expand_mosaics
from .split import Grid, split_volumes

logger = logging.getLogger(__name__)

#: Pixel spacings within this relative difference belong to one stack.
SPACING_MATCH_RTOL = 1e-4
_PIXEL_FORMAT = ("SamplesPerPixel", "BitsAllocated", "PixelRepresentation")


@dataclass
class Assembly:
    """One ordered stack of frames and the record of how it was made.

    Attributes
    ----------
    series_uid : str
        (0020,000E) *Series Instance UID* of the stack.
    frames : pandas.DataFrame
        One row per 2-D frame in C order over :attr:`shape` (volumes, each along the
        normal): the index columns plus ``frame`` (0-based frame number within its file).
    geometry : SeriesGeometry
        Orientation, positions, ``z`` values, pixel spacing and shape of one volume
        (every volume of a grid has the same slice positions).
    grid : Grid
        The extra dims and their coordinates (none for one 3-D volume).
    report : dict
        ``sorted_by``, ``dims`` (the extra dims: ``{"dim", "size", "split_by"}``),
        ``split_candidates``, ``slice_spacing``, ``left_out`` (list of
        ``{"path", "reason"}``) and ``warnings`` (list of str). JSON-safe.
    """

    series_uid: str
    frames: pd.DataFrame
    geometry: SeriesGeometry
    grid: Grid
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        """Sizes of the frame grid: the extra dims, then ``z``."""
        return self.grid.shape


def assemble(
    index: pd.DataFrame,
    series_uid: str | None = None,
    *,
    rtol: float = SPACING_RTOL,
    tilt_tolerance: float = TILT_TOLERANCE_DEGREES,
    split_by: Sequence[str] | None = None,
    dims: Sequence[str] | None = None,
) -> Assembly:
    """Choose, order and check the frames of one series from an index.

    Parameters
    ----------
    index : pandas.DataFrame
        Rows of :func:`dicomarray.scan`.
    series_uid : str, optional
        The series to assemble; default: the image series with the most instances (a
        :class:`~dicomarray.errors.SeriesSelectionWarning` names the others).
    rtol : float, default 0.05
        Relative deviation from the median slice step that counts as uneven spacing.
    tilt_tolerance : float, default 0.05
        Angle in degrees between the slice step and the normal that counts as a tilt.
    split_by, dims
        How frames that repeat slice positions make extra dims; see
        :func:`dicomarray.split.split_volumes`. Default: decided from the data.

    Raises
    ------
    SeriesNotFoundError
        No image series, or not the one asked for.
    AmbiguousSeriesError
        No ``series_uid`` and several series share the largest number of instances; the
        message lists them (UID, number, description, folder).
    AssemblyError
        Frames that cannot form one volume or grid of volumes (mixed pixel formats,
        repeated positions no rule arranges as a full grid, volumes whose slice positions
        differ, an ImageOrientationPatient, ImagePositionPatient or PixelSpacing that
        is not 6, 3 or 2 finite numbers), naming the file.
    PixelDataError
        A (0028,0008) *Number of Frames* that is not a count.
    InvalidDicomError
        Functional groups of a multi-frame file that cannot be parsed.
    """
    left_out: list[dict[str, str]] = []
    warnings: list[str] = []
    rows = _choose_series(index, series_uid, warnings)
    uid = str(rows["SeriesInstanceUID"].iloc[0])
    rows = _drop_copies(rows, left_out, warnings)
    frames = expand_frames(rows)  # plain cells from here on, whatever the index's types
    frames = expand_mosaics(frames, warnings)  # a Siemens mosaic: one row per slice
    _check_geometry_values(frames)
    frames = _largest_stack(frames, left_out, warnings)
    _check_pixel_format(frames)
    frames, z, sorted_by, grid = _order(frames, warnings, split_by, dims)
    _check_pixel_spacing(frames, warnings)
    first_volume = frames.iloc[: grid.n_slices]
    _check_same_positions(frames, grid)
    geometry = _geometry(first_volume, z[: grid.n_slices])
    _check_spacing(geometry, sorted_by, rtol, tilt_tolerance, warnings)
    report = {
        "series_uid": uid,
        "sorted_by": sorted_by,
        "n_frames": len(frames),
        "dims": [dim.report() for dim in grid.dims],
        "split_candidates": grid.candidates,
        **_slice_spacing(geometry.z, sorted_by, rtol),
        "left_out": left_out,
        "warnings": warnings,
    }
    return Assembly(uid, frames, geometry, grid, report)


def _choose_series(
    index: pd.DataFrame, series_uid: str | None, warnings: list[str]
) -> pd.DataFrame:
    images = index[index["Rows"].notna() & index["Columns"].notna()]
    if images.empty:
        where = index["path"].iloc[0] if len(index) else "index"
        raise SeriesNotFoundError(
            f"{where}: no image instances (Rows and Columns) among {len(index)} indexed files"
        )
    uids = images["SeriesInstanceUID"].map(lambda v: "" if plain_cell(v) is None else str(v))
    counts = uids.value_counts(sort=True)
    if series_uid is not None:
        if series_uid not in counts.index:
            raise SeriesNotFoundError(_not_found(index, series_uid, counts))
        return images[uids == series_uid]
    tied = [str(uid) for uid, n in counts.items() if n == counts.iloc[0]]
    if len(tied) > 1:
        candidates = "; ".join(describe_series(images[uids == uid]) for uid in tied)
        raise AmbiguousSeriesError(
            f"{len(tied)} series share the largest number of instances ({counts.iloc[0]}); "
            f"pass series_uid to choose one: {candidates}"
        )
    chosen = str(counts.index[0])
    if len(counts) > 1:
        others = ", ".join(f"{uid} ({n} instances)" for uid, n in counts.iloc[1:].items())
        message = (
            f"source holds {len(counts)} series; opened {chosen} "
            f"({counts.iloc[0]} instances). Others: {others}"
        )
        warn_data_problem(message, SeriesSelectionWarning)
    return images[uids == chosen]


def _not_found(index: pd.DataFrame, series_uid: str, counts: pd.Series) -> str:
    """Why a requested series cannot open: absent, or present without image instances."""
    held = index["path"][index["SeriesInstanceUID"].map(lambda v: str(plain_cell(v))) == series_uid]
    if len(held):
        files = ", ".join(map(str, held.iloc[:3])) + (" ..." if len(held) > 3 else "")
        return (
            f"{files}: series {series_uid} holds {len(held)} instance(s) and no image "
            "(no Rows and Columns): nothing to open as a volume"
        )
    return f"series {series_uid} not found; available: {', '.join(counts.index[:10])}"


def describe_series(rows: pd.DataFrame) -> str:
    """One series in a message: UID, SeriesNumber, SeriesDescription, folder, instances."""
    first = rows.iloc[0]
    number, description = (
        plain_cell(first.get(key)) for key in ("SeriesNumber", "SeriesDescription")
    )
    return (
        f"{plain_cell(first.get('SeriesInstanceUID'))} (number {number}, "
        f"{description or 'no description'!r}, folder {series_folder(rows['path'])}, "
        f"{len(rows)} instances)"
    )


def series_folder(paths: pd.Series) -> str:
    """The deepest folder holding every file of a series."""
    folders = {os.path.dirname(os.path.abspath(str(p))) for p in paths}
    return os.path.commonpath(sorted(folders)) if folders else ""


def _drop_copies(
    rows: pd.DataFrame, left_out: list[dict[str, str]], warnings: list[str]
) -> pd.DataFrame:
    """The same SOP Instance UID twice is a copied file only when it is the same slice.

    A copy has the same ImagePositionPatient and the same pixel data length (the file size
    when the index does not know it); the first path is kept. Files that share a UID but
    differ in either are both kept, with a warning: dropping one would lose a slice.
    """
    rows = rows.sort_values("path", kind="stable")
    keys = pd.Series(
        [
            _copy_key(*values)
            for values in zip(*(rows[k].tolist() for k in _COPY_KEYS), strict=True)
        ],
        index=rows.index,
        dtype=object,
    )
    copies = keys.notna() & keys.duplicated(keep="first")
    if copies.any():
        first = dict(zip(keys[~copies], rows["path"][~copies], strict=True))
        for path, key in zip(rows["path"][copies], keys[copies], strict=True):
            left_out.append(
                {"path": path, "reason": f"copy of {first.get(key)} (same SOPInstanceUID)"}
            )
        logger.info("dropped %d copied instances", int(copies.sum()))
    kept = rows[~copies]
    uids = kept["SOPInstanceUID"].map(plain_cell)
    shared = uids.notna() & uids.duplicated(keep=False)
    for uid, paths in kept["path"][shared].groupby(uids[shared], sort=True):
        message = (
            f"SOPInstanceUID {uid} is held by {len(paths)} files that differ in position or "
            f"pixel data length ({', '.join(paths)}); kept them as distinct slices"
        )
        warnings.append(message)
        warn_data_problem(message)
    return kept


_COPY_KEYS = ("SOPInstanceUID", "ImagePositionPatient", "pixel_data_length", "file_size")


def _copy_key(uid: Any, position: Any, length: Any, size: Any) -> tuple[Any, ...] | None:
    """What two files share when one is a copy of the other; None without a UID."""
    if plain_cell(uid) is None:
        return None
    length = plain_cell(length)
    return (str(uid), _hashable(position), plain_cell(size) if length is None else length)


def _has_value(wanted: str) -> Any:
    def test(image_type: Any) -> bool:
        values = image_type if isinstance(image_type, list) else [image_type]
        return any(str(v).upper() == wanted for v in values if v)

    return test


def _check_geometry_values(frames: pd.DataFrame) -> None:
    """Present geometry tags hold the number of finite values DICOM gives them."""
    for keyword, count in _GEOMETRY_VALUE_COUNTS.items():
        for path, value in zip(frames["path"], frames[keyword].map(plain_cell), strict=True):
            if value is not None and not _usable(keyword, finite_numbers(value, count)):
                raise AssemblyError(
                    f"{path}: {keyword} {value!r} is not {count} finite numbers "
                    f"{_GEOMETRY_RULES.get(keyword, '')}; the slice cannot be placed"
                )


_GEOMETRY_VALUE_COUNTS = {
    "ImageOrientationPatient": 6,
    "ImagePositionPatient": 3,
    "PixelSpacing": 2,
}
_GEOMETRY_RULES = {
    "ImageOrientationPatient": "with non-parallel row and column cosines",
    "PixelSpacing": "above 0",
}


def _usable(keyword: str, numbers: np.ndarray | None) -> bool:
    if numbers is None:
        return False
    if keyword == "PixelSpacing":
        return bool((numbers > 0).all())
    if keyword == "ImageOrientationPatient":
        try:
            slice_normal(numbers)
        except ValueError:
            return False
    return True


@dataclass
class _Groups:
    """Values that count as one within a tolerance, numbered in order of first sight.

    Each new value joins the first group it is close to, so rounding noise never splits a
    stack (rounding to a fixed number of decimals would, at a rounding boundary).
    """

    same: Any  # (a, b) -> bool
    members: list[Any] = field(default_factory=list)

    def of(self, value: Any) -> int:
        for i, seen in enumerate(self.members):
            if self.same(seen, value):
                return i
        self.members.append(value)
        return len(self.members) - 1


def _same_spacing(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is b
    return bool(np.allclose(a, b, rtol=SPACING_MATCH_RTOL, atol=0.0))


def _stack_keys(frames: pd.DataFrame) -> tuple[pd.Series, _Groups, _Groups]:
    """Each frame's stack: (localizer, orientation group, rows, columns, spacing group).

    Orientations within :data:`~dicomarray.attrs.ORIENTATION_TOLERANCE`, and pixel
    spacings within :data:`SPACING_MATCH_RTOL`, count as one.
    """
    orientations, spacings = _Groups(same_orientation), _Groups(_same_spacing)
    keys = []
    names = ("ImageOrientationPatient", "ImageType", "Rows", "Columns", "PixelSpacing")
    for orientation, image_type, rows, columns, spacing in zip(
        *(frames[k].tolist() for k in names), strict=True
    ):
        keys.append(
            (
                is_localizer(image_type),
                orientations.of(orientation_vector(orientation)),
                plain_cell(rows),
                plain_cell(columns),
                spacings.of(finite_numbers(spacing, 2)),
            )
        )
    return pd.Series(keys, index=frames.index, dtype=object), orientations, spacings


#: Whether an (0008,0008) *Image Type* value holds LOCALIZER.
is_localizer = _has_value("LOCALIZER")


def _largest_stack(
    frames: pd.DataFrame, left_out: list[dict[str, str]], warnings: list[str]
) -> pd.DataFrame:
    keys, orientations, spacings = _stack_keys(frames)
    counts = keys.value_counts(sort=True)
    if len(counts) == 1:
        return frames
    # most frames wins; a localizer stack never wins against an image stack
    ranked = sorted(counts.index, key=lambda k: (k[0], -counts[k]))
    chosen = ranked[0]
    for key in ranked[1:]:
        reason = _why_apart(key, chosen, orientations, spacings)
        for path in frames["path"][keys == key]:
            left_out.append({"path": path, "reason": reason})
        message = f"left out {counts[key]} frame(s): {reason}"
        warnings.append(message)
        warn_data_problem(message)
    return frames[keys == chosen]


def _why_apart(
    key: tuple[Any, ...], chosen: tuple[Any, ...], orientations: _Groups, spacings: _Groups
) -> str:
    if key[0]:
        return "localizer image"
    if key[1] != chosen[1]:
        return (
            f"orientation {_shown_values(orientations.members[key[1]])} differs from "
            f"{_shown_values(orientations.members[chosen[1]])}"
        )
    if key[2:4] != chosen[2:4]:
        return f"image size {key[2]}x{key[3]} differs from {chosen[2]}x{chosen[3]}"
    return (
        f"PixelSpacing {_shown_values(spacings.members[key[4]])} differs from "
        f"{_shown_values(spacings.members[chosen[4]])}"
    )


def _shown_values(values: np.ndarray | None) -> list[float] | None:
    """Cosines or spacings for a message: 3 decimals, no -0.0."""
    return None if values is None else [round(float(v), 3) + 0.0 for v in values]


def _hashable(value: Any) -> Any:
    value = plain_cell(value)
    return "\\".join(map(str, value)) if isinstance(value, list) else value


def _normal_positions(frames: pd.DataFrame) -> np.ndarray | None:
    positions = frames["ImagePositionPatient"]
    orientation = frames["ImageOrientationPatient"].iloc[0]
    if positions.isna().any() or plain_cell(orientation) is None:
        return None
    try:
        stacked = np.array(positions.tolist(), dtype=float).reshape(len(frames), 3)
        return positions_along_normal(stacked, slice_normal(orientation))
    except (TypeError, ValueError):  # malformed values: order by other tags
        return None


def _check_pixel_format(frames: pd.DataFrame) -> None:
    for key in _PIXEL_FORMAT:
        present = frames[frames[key].notna()]
        first_with = present.drop_duplicates(key)  # the first file holding each value
        if len(first_with) > 1:
            shown = ", ".join(
                f"{v} in {p}" for v, p in zip(first_with[key], first_with["path"], strict=True)
            )
            raise AssemblyError(
                f"{first_with['path'].iloc[1]}: frames of one stack differ in {key} "
                f"({shown}); they cannot share one array"
            )


def _order(
    frames: pd.DataFrame,
    warnings: list[str],
    split_by: Sequence[str] | None,
    dims: Sequence[str] | None,
) -> tuple[pd.DataFrame, np.ndarray, str, Grid]:
    """Frames in grid order (volumes, each along the normal), their z and the grid.

    Slices are sorted along the normal; by SliceLocation, then InstanceNumber, only
    without positions.
    """
    z, sorted_by = _sort_positions(frames)
    if sorted_by != "ImagePositionPatient" and len(frames) > 1:
        message = f"no usable ImagePositionPatient; slices ordered by {sorted_by}"
        warnings.append(message)
        warn_data_problem(message)
    grid = split_volumes(frames, z, _slice_order(frames, z), split_by=split_by, dims=dims)
    if grid.dims:
        shape = " x ".join(f"{d.name} {d.size}" for d in grid.dims)
        logger.info("%d frames as %s x z %d", len(frames), shape, grid.n_slices)
    order = grid.order
    return frames.iloc[order].reset_index(drop=True), z[order], sorted_by, grid


def _check_same_positions(frames: pd.DataFrame, grid: Grid) -> None:
    """Every volume of a grid lies where the first does: one geometry serves them all."""
    if not grid.dims or frames["ImagePositionPatient"].isna().any():
        return
    positions = np.array(frames["ImagePositionPatient"].tolist(), dtype=float)
    volumes = positions.reshape(-1, grid.n_slices, 3)
    off = np.linalg.norm(volumes - volumes[:1], axis=-1)
    if off.max() > POSITION_TOLERANCE_MM:
        volume, slice_index = np.unravel_index(int(off.argmax()), off.shape)
        path = frames["path"].iloc[volume * grid.n_slices + slice_index]
        raise AssemblyError(
            f"{path}: slice {slice_index} of volume {volume} lies {off.max():.3g} mm from "
            "the same slice of the first volume: the volumes of this series do not share "
            "their slice positions, so no one geometry describes them; filter the index "
            "rows to one volume"
        )


def _sort_positions(frames: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Each frame's place along the stack, and the tag it comes from."""
    z = _normal_positions(frames)
    if z is not None:
        return z, "ImagePositionPatient"
    # InStackPositionNumber (enhanced frames) places frames of several volumes at their
    # slice, where InstanceNumber would make one stack of them all
    for key in ("SliceLocation", "InStackPositionNumber", "InstanceNumber"):
        if key not in frames:
            continue
        values = frames[key].map(plain_cell)
        if values.notna().all():
            try:
                return values.to_numpy(dtype=float), key
            except (TypeError, ValueError):
                continue
    return np.arange(len(frames), dtype=float), "path"


def _slice_order(frames: pd.DataFrame, z: np.ndarray) -> np.ndarray:
    """Indices sorting by z, then InstanceNumber, then frame number."""
    instance = pd.to_numeric(frames["InstanceNumber"].map(plain_cell), errors="coerce")
    frame = frames["frame"] if "frame" in frames else pd.Series(0, index=frames.index)
    return np.lexsort((frame.to_numpy(), instance.fillna(0).to_numpy(dtype=float), z))


def files_in_slice_order(rows: pd.DataFrame) -> list[str]:
    """The paths of index rows in slice order, from their tags alone.

    The order :func:`assemble` would give, without its checks: it never raises on odd
    values, so a selection can list a series that will not assemble, and leave the error
    to the moment the series is opened.
    """
    rows = rows.sort_values("path", kind="stable")
    z, _sorted_by = _sort_positions(rows)
    ordered = rows["path"].to_numpy()[_slice_order(rows, z)]
    return list(dict.fromkeys(map(str, ordered)))


def _check_pixel_spacing(frames: pd.DataFrame, warnings: list[str]) -> None:
    """Without (0028,0030) *Pixel Spacing* the y and x steps are 1 mm by assumption: say so."""
    if frames["PixelSpacing"].isna().any():
        message = (
            f"{frames['path'].iloc[0]}: no PixelSpacing; rows and columns are taken as 1 mm "
            "apart, so y and x (and the affine) are in pixels, not mm"
        )
        warnings.append(message)
        warn_data_problem(message)


def _geometry(frames: pd.DataFrame, z: np.ndarray) -> SeriesGeometry:
    first = frames.iloc[0]
    orientation = first["ImageOrientationPatient"] or [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    spacing = first["PixelSpacing"] or [1.0, 1.0]
    positions = np.full((len(frames), 3), np.nan)
    if frames["ImagePositionPatient"].notna().all():
        positions = np.array(frames["ImagePositionPatient"].tolist(), dtype=float)
    return SeriesGeometry(
        orientation=np.asarray(orientation, dtype=float),
        positions=positions,
        z=np.asarray(z, dtype=float),
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        shape=(len(frames), int(first["Rows"]), int(first["Columns"])),
    )


def _check_spacing(
    geometry: SeriesGeometry,
    sorted_by: str,
    rtol: float,
    tilt_tolerance: float,
    warnings: list[str],
) -> None:
    messages = []
    positioned = sorted_by in ("ImagePositionPatient", "SliceLocation")
    off = _affine_miss(geometry) if sorted_by == "ImagePositionPatient" else None
    if positioned and len(geometry.z) > 1 and regular_step(geometry.z, rtol=rtol) is None:
        messages.append(
            f"uneven spacing, {describe_steps(geometry.z, rtol=rtol)}: no one slice spacing "
            "(see the slice_steps of the assembly report)"
            + (f"; the affine misses slice {off[0]} by {off[1]:.3g} mm" if off else "")
        )
    elif off:
        messages.append(
            f"the affine (first slice plus the mean slice step) misses slice {off[0]}'s "
            f"ImagePositionPatient by {off[1]:.3g} mm (more than {POSITION_TOLERANCE_MM} mm): "
            "the slices are not evenly spaced; .dicom.world() places every slice exactly"
        )
    if sorted_by == "ImagePositionPatient":
        angle = tilt_degrees(geometry.positions, geometry.normal)
        if angle > tilt_tolerance:
            messages.append(f"gantry tilt of {angle:.2f} degrees: slices are sheared")
    for message in messages:
        warnings.append(message)
        warn_data_problem(message)


def _affine_miss(geometry: SeriesGeometry) -> tuple[int, float] | None:
    """The slice whose position the affine misses most, and by how much (mm), when that is
    more than :data:`~dicomarray.geometry.POSITION_TOLERANCE_MM`.

    The affine puts slice ``k`` at the first position plus ``k`` mean steps (see
    :meth:`~dicomarray.geometry.VolumeGeometry.affine`).
    """
    positions = geometry.positions
    n = len(positions)
    if n < 3 or not np.isfinite(positions).all():
        return None
    line = positions[0] + np.outer(np.arange(n), (positions[-1] - positions[0]) / (n - 1))
    off = np.linalg.norm(positions - line, axis=1)
    worst = int(off.argmax())
    return (worst, float(off[worst])) if off[worst] > POSITION_TOLERANCE_MM else None


def _slice_spacing(z: np.ndarray, sorted_by: str, rtol: float) -> dict[str, Any]:
    """The report's ``slice_spacing`` (None unless the slices have one step) and
    ``slice_steps`` (runs of one step), along the normal or SliceLocation."""
    if sorted_by not in ("ImagePositionPatient", "SliceLocation"):
        return {"slice_spacing": None, "slice_steps": []}
    return slice_spacing_report(z, rtol=rtol)
