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

logger = logging.getLogger(__name__)

#: Tags that may tell apart stacks sharing slice positions (echoes, phases, repeats).
REPEAT_KEYS: tuple[str, ...] = (
    "EchoNumbers",
    "TemporalPositionIdentifier",
    "AcquisitionNumber",
    "SeriesNumber",
    "ImageType",
)
#: Pixel spacings within this relative difference belong to one stack.
SPACING_MATCH_RTOL = 1e-4
#: Two slices closer than this along the normal (mm) are at the same position.
SAME_POSITION_TOLERANCE = 1e-3
_PIXEL_FORMAT = ("SamplesPerPixel", "BitsAllocated", "PixelRepresentation")


@dataclass
class Assembly:
    """One ordered stack of frames and the record of how it was made.

    Attributes
    ----------
    series_uid : str
        (0020,000E) *Series Instance UID* of the stack.
    frames : pandas.DataFrame
        One row per 2-D frame in volume order: the index columns plus ``frame``
        (0-based frame number within its file).
    geometry : SeriesGeometry
        Orientation, positions, ``z`` values, pixel spacing and shape.
    report : dict
        ``sorted_by``, ``slice_spacing``, ``left_out`` (list of ``{"path", "reason"}``)
        and ``warnings`` (list of str). JSON-safe.
    """

    series_uid: str
    frames: pd.DataFrame
    geometry: SeriesGeometry
    report: dict[str, Any] = field(default_factory=dict)


def assemble(
    index: pd.DataFrame,
    series_uid: str | None = None,
    *,
    rtol: float = SPACING_RTOL,
    tilt_tolerance: float = TILT_TOLERANCE_DEGREES,
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

    Raises
    ------
    SeriesNotFoundError
        No image series, or not the one asked for.
    AmbiguousSeriesError
        No ``series_uid`` and several series share the largest number of instances; the
        message lists them (UID, number, description, folder).
    AssemblyError
        Frames that cannot form one volume (mixed pixel formats, repeated positions no tag
        tells apart, an ImageOrientationPatient, ImagePositionPatient or PixelSpacing that
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
    frames = _separate_repeats(frames, left_out, warnings)
    _check_pixel_format(frames)
    frames, z, sorted_by = _order(frames, warnings)
    _check_pixel_spacing(frames, warnings)
    geometry = _geometry(frames, z)
    _check_spacing(geometry, sorted_by, rtol, tilt_tolerance, warnings)
    report = {
        "series_uid": uid,
        "sorted_by": sorted_by,
        "n_frames": len(frames),
        **_slice_spacing(geometry.z, sorted_by, rtol),
        "left_out": left_out,
        "warnings": warnings,
    }
    return Assembly(uid, frames, geometry, report)


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


def _separate_repeats(
    frames: pd.DataFrame, left_out: list[dict[str, str]], warnings: list[str]
) -> pd.DataFrame:
    """Frames at the same position: split by the first tag that tells them apart."""
    z = _normal_positions(frames)
    if z is None or not _has_repeats(z):
        return frames
    for key in REPEAT_KEYS:
        labels = frames[key].map(_hashable)
        groups = labels.value_counts(sort=True)
        if len(groups) < 2:
            continue
        if all(not _has_repeats(z[(labels == g).to_numpy()]) for g in groups.index):
            chosen = groups.index[0]
            keep = (labels == chosen).to_numpy()
            for path, value in zip(frames["path"][~keep], labels[~keep], strict=True):
                left_out.append({"path": path, "reason": f"{key} {value} (repeated positions)"})
            message = (
                f"series repeats slice positions in {len(groups)} stacks told apart by {key}; "
                f"using {key} = {chosen} ({groups.iloc[0]} frames)"
            )
            warnings.append(message)
            warn_data_problem(message)
            return frames[keep]
    repeated = _repeated(z)
    where = np.unique(np.round(z[repeated], 3))[:5]
    files = list(dict.fromkeys(frames["path"][repeated]))
    shown = ", ".join(files[:4]) + (f" and {len(files) - 4} more" if len(files) > 4 else "")
    raise AssemblyError(
        f"{shown}: {int(repeated.sum())} frames share slice positions "
        f"(z = {', '.join(map(str, where))} mm) and none of {', '.join(REPEAT_KEYS)} tells "
        f"them apart{_looks_4d(z)}; filter the index rows before opening"
    )


def _looks_4d(z: np.ndarray) -> str:
    """A hint when every position holds the same number of frames: volumes in one series."""
    _positions, counts = np.unique(np.round(z / SAME_POSITION_TOLERANCE), return_counts=True)
    if len(counts) > 1 and counts.min() == counts.max() > 1:
        return (
            f" (each of {len(counts)} positions holds {counts[0]} frames: {counts[0]} volumes "
            "in one series, e.g. told apart by InstanceNumber or AcquisitionTime)"
        )
    return ""


def _hashable(value: Any) -> Any:
    value = plain_cell(value)
    return "\\".join(map(str, value)) if isinstance(value, list) else value


def _repeated(z: np.ndarray) -> np.ndarray:
    order = np.argsort(z, kind="stable")
    close = np.abs(np.diff(z[order])) < SAME_POSITION_TOLERANCE
    flags = np.zeros(len(z), dtype=bool)
    flags[order[1:][close]] = True
    flags[order[:-1][close]] = True
    return flags


def _has_repeats(z: np.ndarray) -> bool:
    return bool(_repeated(z).any())


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


def _order(frames: pd.DataFrame, warnings: list[str]) -> tuple[pd.DataFrame, np.ndarray, str]:
    """Sort along the normal; SliceLocation, then InstanceNumber, only without positions."""
    z, sorted_by = _sort_positions(frames)
    if sorted_by != "ImagePositionPatient" and len(frames) > 1:
        message = f"no usable ImagePositionPatient; slices ordered by {sorted_by}"
        warnings.append(message)
        warn_data_problem(message)
    order = _slice_order(frames, z)
    return frames.iloc[order].reset_index(drop=True), z[order], sorted_by


def _sort_positions(frames: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Each frame's place along the stack, and the tag it comes from."""
    z = _normal_positions(frames)
    if z is not None:
        return z, "ImagePositionPatient"
    for key in ("SliceLocation", "InstanceNumber"):
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
    if positioned and len(geometry.z) > 1 and regular_step(geometry.z, rtol=rtol) is None:
        messages.append(
            f"uneven spacing, {describe_steps(geometry.z, rtol=rtol)}: no one slice spacing "
            "(see the slice_steps of the assembly report)"
        )
    if sorted_by == "ImagePositionPatient":
        angle = tilt_degrees(geometry.positions, geometry.normal)
        if angle > tilt_tolerance:
            messages.append(f"gantry tilt of {angle:.2f} degrees: slices are sheared")
    for message in messages:
        warnings.append(message)
        warn_data_problem(message)


def _slice_spacing(z: np.ndarray, sorted_by: str, rtol: float) -> dict[str, Any]:
    """The report's ``slice_spacing`` (None unless the slices have one step) and
    ``slice_steps`` (runs of one step), along the normal or SliceLocation."""
    if sorted_by not in ("ImagePositionPatient", "SliceLocation"):
        return {"slice_spacing": None, "slice_steps": []}
    return slice_spacing_report(z, rtol=rtol)
