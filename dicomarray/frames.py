"""Index rows to frame rows: one row per 2-D frame, multi-frame instances expanded.

An enhanced multi-frame instance (NumberOfFrames > 1) keeps each frame's position,
orientation, spacing and rescale in its functional groups (PS3.3 C.7.6.16): the
*Per-Frame Functional Groups Sequence* for what varies and the *Shared Functional Groups
Sequence* for what does not. This module reads those (header only) so that assembly can
treat every frame like a single-frame instance.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .errors import InvalidDicomError, PixelDataError
from .header import plain_value, read_dataset

# functional group sequence -> (item keyword, index column)
_GROUP_VALUES: tuple[tuple[str, str, str], ...] = (
    ("PlanePositionSequence", "ImagePositionPatient", "ImagePositionPatient"),
    ("PlaneOrientationSequence", "ImageOrientationPatient", "ImageOrientationPatient"),
    ("PixelMeasuresSequence", "PixelSpacing", "PixelSpacing"),
    ("PixelMeasuresSequence", "SliceThickness", "SliceThickness"),
    ("PixelValueTransformationSequence", "RescaleSlope", "RescaleSlope"),
    ("PixelValueTransformationSequence", "RescaleIntercept", "RescaleIntercept"),
    ("FrameVOILUTSequence", "WindowCenter", "WindowCenter"),
    ("FrameVOILUTSequence", "WindowWidth", "WindowWidth"),
    ("FrameContentSequence", "TemporalPositionIndex", "TemporalPositionIdentifier"),
)


#: More frames than this in one instance is refused as malformed, before any expansion.
MAX_FRAMES = 100_000


def expand_frames(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per frame, with a 0-based ``frame`` column; single frames pass through.

    Raises
    ------
    PixelDataError
        A (0028,0008) *Number of Frames* that is not a count between 1 and
        :data:`MAX_FRAMES`.
    """
    counts = rows["NumberOfFrames"].map(lambda n: 1 if n is None else n)
    for path, count in zip(rows["path"], counts, strict=True):
        if not isinstance(count, int) or not 1 <= count <= MAX_FRAMES:
            raise PixelDataError(
                f"{path}: NumberOfFrames {count!r} is not a count of 1 to {MAX_FRAMES}"
            )
    if (counts <= 1).all():
        return rows.assign(frame=0)
    parts = []
    for (_, row), n in zip(rows.iterrows(), counts, strict=True):
        parts.append(_frame_rows(row, n) if n > 1 else pd.DataFrame([row]).assign(frame=0))
    return pd.concat(parts, ignore_index=True)


def _frame_rows(row: pd.Series, n_frames: int) -> pd.DataFrame:
    path = row["path"]
    try:
        ds = read_dataset(path, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure of a listed file
        raise InvalidDicomError(f"{path}: cannot read the functional groups: {exc}") from exc
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if per_frame and len(per_frame) != n_frames:
        raise InvalidDicomError(
            f"{path}: NumberOfFrames is {n_frames} but the Per-Frame Functional Groups "
            f"Sequence holds {len(per_frame)} items"
        )
    records = []
    for frame in range(n_frames):
        record = row.to_dict()
        record["frame"] = frame
        record.update(_frame_values(shared, per_frame[frame] if per_frame else None))
        records.append(record)
    return pd.DataFrame.from_records(records)


def _frame_values(shared: Any, own: Any) -> dict[str, Any]:
    values = {}
    for sequence, keyword, column in _GROUP_VALUES:
        for groups in (shared, own):  # a frame's own value overrides the shared one
            item = _first_item(groups, sequence) if groups is not None else None
            if item is not None and keyword in item:
                values[column] = plain_value(item[keyword].value)
    return values


def _first_item(ds: Any, keyword: str) -> Any:
    sequence = ds.get(keyword) if ds is not None else None
    return sequence[0] if sequence else None
