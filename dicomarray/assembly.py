"""From index rows to one ordered stack of frames, with a report of what was kept and why.

Assembly never opens pixel data. It picks a series, drops copied instances, expands
multi-frame instances into frames, splits the series into stacks of one orientation and
image size (localizers apart), orders the largest stack along the slice normal and checks
its spacing. Every decision lands in :attr:`Assembly.report`, and every data problem is
also a :class:`~dicomarray.errors.GeometryWarning`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .errors import AssemblyError, SeriesNotFoundError, SeriesSelectionWarning, warn_data_problem
from .frames import expand_frames
from .geometry import (
    SPACING_RTOL,
    TILT_TOLERANCE_DEGREES,
    SeriesGeometry,
    positions_along_normal,
    slice_normal,
    tilt_degrees,
    uneven_steps,
)

logger = logging.getLogger(__name__)

#: Tags that may tell apart stacks sharing slice positions (echoes, phases, repeats).
REPEAT_KEYS: tuple[str, ...] = (
    "EchoNumbers",
    "TemporalPositionIdentifier",
    "AcquisitionNumber",
    "SeriesNumber",
    "ImageType",
)
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
    AssemblyError
        Frames that cannot form one volume (mixed pixel formats, repeated positions no tag
        tells apart).
    """
    left_out: list[dict[str, str]] = []
    warnings: list[str] = []
    rows = _choose_series(index, series_uid, warnings)
    uid = str(rows["SeriesInstanceUID"].iloc[0])
    rows = _drop_copies(rows, left_out)
    frames = expand_frames(rows)
    frames = _largest_stack(frames, left_out, warnings)
    frames = _separate_repeats(frames, left_out, warnings)
    _check_pixel_format(frames)
    frames, z, sorted_by = _order(frames, warnings)
    geometry = _geometry(frames, z)
    _check_spacing(geometry, sorted_by, rtol, tilt_tolerance, warnings)
    report = {
        "series_uid": uid,
        "sorted_by": sorted_by,
        "n_frames": len(frames),
        "slice_spacing": _json_float(geometry.slice_spacing),
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
    uids = images["SeriesInstanceUID"].map(lambda v: "" if v is None else str(v))
    counts = uids.value_counts(sort=True)
    if series_uid is not None:
        if series_uid not in counts.index:
            raise SeriesNotFoundError(
                f"series {series_uid} not found; available: {', '.join(counts.index[:10])}"
            )
        return images[uids == series_uid]
    chosen = str(counts.index[0])
    if len(counts) > 1:
        others = ", ".join(f"{uid} ({n} instances)" for uid, n in counts.iloc[1:].items())
        message = (
            f"source holds {len(counts)} series; opened {chosen} "
            f"({counts.iloc[0]} instances). Others: {others}"
        )
        warn_data_problem(message, SeriesSelectionWarning)
    return images[uids == chosen]


def _drop_copies(rows: pd.DataFrame, left_out: list[dict[str, str]]) -> pd.DataFrame:
    """The same SOP Instance UID twice is one instance (a copied file): keep the first path."""
    rows = rows.sort_values("path", kind="stable")
    uids = rows["SOPInstanceUID"]
    copies = uids.notna() & uids.duplicated(keep="first")
    if copies.any():
        first = dict(zip(uids[~copies], rows["path"][~copies], strict=True))
        for path, uid in zip(rows["path"][copies], uids[copies], strict=True):
            left_out.append(
                {"path": path, "reason": f"copy of {first.get(uid)} (same SOPInstanceUID)"}
            )
        logger.info("dropped %d copied instances", int(copies.sum()))
    return rows[~copies]


def _stack_key(row: pd.Series) -> tuple[Any, ...]:
    orientation = row["ImageOrientationPatient"]
    rounded = tuple(round(float(v), 3) + 0.0 for v in orientation) if orientation else None
    return (_is_localizer(row["ImageType"]), rounded, row["Rows"], row["Columns"])


def _is_localizer(image_type: Any) -> bool:
    values = image_type if isinstance(image_type, list) else [image_type]
    return any(str(v).upper() == "LOCALIZER" for v in values if v)


def _largest_stack(
    frames: pd.DataFrame, left_out: list[dict[str, str]], warnings: list[str]
) -> pd.DataFrame:
    keys = frames.apply(_stack_key, axis=1)
    counts = keys.value_counts(sort=True)
    if len(counts) == 1:
        return frames
    # most frames wins; a localizer stack never wins against an image stack
    ranked = sorted(counts.index, key=lambda k: (k[0], -counts[k]))
    chosen = ranked[0]
    for key in ranked[1:]:
        reason = _why_apart(key, chosen)
        for path in frames["path"][keys == key]:
            left_out.append({"path": path, "reason": reason})
        message = f"left out {counts[key]} frame(s): {reason}"
        warnings.append(message)
        warn_data_problem(message)
    return frames[keys == chosen]


def _why_apart(key: tuple[Any, ...], chosen: tuple[Any, ...]) -> str:
    if key[0]:
        return "localizer image"
    if key[1] != chosen[1]:
        return f"orientation {list(key[1]) if key[1] else None} differs from {list(chosen[1])}"
    return f"image size {key[2]}x{key[3]} differs from {chosen[2]}x{chosen[3]}"


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
    where = np.unique(np.round(z[_repeated(z)], 3))[:5]
    raise AssemblyError(
        f"{frames['path'].iloc[0]}: {int(_repeated(z).sum())} frames share slice positions "
        f"(z = {', '.join(map(str, where))} mm) and none of {', '.join(REPEAT_KEYS)} tells "
        "them apart; filter the index rows before opening"
    )


def _hashable(value: Any) -> Any:
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
    if positions.isna().any() or not orientation:
        return None
    try:
        stacked = np.array(positions.tolist(), dtype=float).reshape(len(frames), 3)
        return positions_along_normal(stacked, slice_normal(orientation))
    except ValueError:
        return None


def _check_pixel_format(frames: pd.DataFrame) -> None:
    for key in _PIXEL_FORMAT:
        values = frames[key].dropna().unique()
        if len(values) > 1:
            raise AssemblyError(
                f"{frames['path'].iloc[0]}: frames of one stack differ in {key} "
                f"({', '.join(map(str, values))}); they cannot share one array"
            )


def _order(frames: pd.DataFrame, warnings: list[str]) -> tuple[pd.DataFrame, np.ndarray, str]:
    """Sort along the normal; SliceLocation, then InstanceNumber, only without positions."""
    z = _normal_positions(frames)
    sorted_by = "ImagePositionPatient"
    if z is None:
        for key in ("SliceLocation", "InstanceNumber"):
            if frames[key].notna().all():
                z, sorted_by = frames[key].to_numpy(dtype=float), key
                break
        else:
            z, sorted_by = np.arange(len(frames), dtype=float), "path"
        if len(frames) > 1:
            message = f"no usable ImagePositionPatient; slices ordered by {sorted_by}"
            warnings.append(message)
            warn_data_problem(message)
    instance = frames["InstanceNumber"].fillna(0).to_numpy(dtype=float)
    order = np.lexsort((frames["frame"].to_numpy(), instance, z))
    return frames.iloc[order].reset_index(drop=True), z[order], sorted_by


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
    if sorted_by in ("ImagePositionPatient", "SliceLocation"):
        steps = uneven_steps(geometry.z, rtol=rtol)
        if steps:
            where = "; ".join(
                f"{s:.3g} mm after z = {geometry.z[i]:.2f} mm (slice {i})" for i, s in steps[:5]
            )
            messages.append(
                f"uneven spacing: median step {geometry.slice_spacing:.3g} mm, but {where}"
            )
    if sorted_by == "ImagePositionPatient":
        angle = tilt_degrees(geometry.positions, geometry.normal)
        if angle > tilt_tolerance:
            messages.append(f"gantry tilt of {angle:.2f} degrees: slices are sheared")
    for message in messages:
        warnings.append(message)
        warn_data_problem(message)


def _json_float(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
