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
from pydicom.datadict import tag_for_keyword

from .attrs import as_count, plain_cell, plain_cells
from .errors import InvalidDicomError, PixelDataError
from .header import Location, read_nested_values

# (functional group sequence, keyword in its item, index column): the functional group
# macros of PS3.3 C.7.6.16.2 that hold an index column's value for one frame
_GROUP_VALUES: tuple[tuple[str, str, str], ...] = (
    ("PlanePositionSequence", "ImagePositionPatient", "ImagePositionPatient"),
    ("PlaneOrientationSequence", "ImageOrientationPatient", "ImageOrientationPatient"),
    ("PixelMeasuresSequence", "PixelSpacing", "PixelSpacing"),
    ("PixelMeasuresSequence", "SliceThickness", "SliceThickness"),
    ("PixelMeasuresSequence", "SpacingBetweenSlices", "SpacingBetweenSlices"),
    ("PixelValueTransformationSequence", "RescaleSlope", "RescaleSlope"),
    ("PixelValueTransformationSequence", "RescaleIntercept", "RescaleIntercept"),
    ("PixelValueTransformationSequence", "RescaleType", "RescaleType"),
    ("FrameVOILUTSequence", "WindowCenter", "WindowCenter"),
    ("FrameVOILUTSequence", "WindowWidth", "WindowWidth"),
    ("FrameContentSequence", "TemporalPositionIndex", "TemporalPositionIdentifier"),
)
_KEYWORDS = sorted({keyword for _, keyword, _ in _GROUP_VALUES})
# (functional group sequence tag, keyword) -> index column
_COLUMNS = {
    (int(tag_for_keyword(sequence) or 0), keyword): column
    for sequence, keyword, column in _GROUP_VALUES
}
_SHARED = int(tag_for_keyword("SharedFunctionalGroupsSequence") or 0)
_PER_FRAME = int(tag_for_keyword("PerFrameFunctionalGroupsSequence") or 0)


#: More frames than this in one instance is refused as malformed, before any expansion.
MAX_FRAMES = 100_000


def expand_frames(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per frame, with a 0-based ``frame`` column; single frames pass through.

    Cells come out plain (:func:`dicomarray.attrs.plain_cells`): ``None`` when missing,
    Python numbers, integer tags as ints, whatever the index's column types (nullable
    ``Int64``, float with NaN, object with None), so every reader of frames sees one
    value model.

    Raises
    ------
    PixelDataError
        A (0028,0008) *Number of Frames* that is not a count between 1 and
        :data:`MAX_FRAMES`.
    InvalidDicomError
        Functional groups that cannot be parsed, or that do not match the frame count.
    """
    counts = pd.Series(
        [
            _frame_count(path, n)
            for path, n in zip(rows["path"], rows["NumberOfFrames"], strict=True)
        ],
        index=rows.index,
        dtype=int,
    )
    if (counts <= 1).all():
        return plain_cells(rows.assign(frame=0))
    parts = []
    for (_, row), n in zip(rows.iterrows(), counts, strict=True):
        parts.append(_frame_rows(row, n) if n > 1 else pd.DataFrame([row]).assign(frame=0))
    return plain_cells(pd.concat(parts, ignore_index=True))


def _frame_count(path: str, value: Any) -> int:
    """(0028,0008) *Number of Frames* of one row: 1 when absent, whatever the column type."""
    try:
        count = as_count(value)
    except ValueError:
        count = -1
    if count is None:
        return 1
    if not 1 <= count <= MAX_FRAMES:
        raise PixelDataError(
            f"{path}: NumberOfFrames {plain_cell(value)!r} is not a count of 1 to {MAX_FRAMES}"
        )
    return count


def _frame_rows(row: pd.Series, n_frames: int) -> pd.DataFrame:
    path = row["path"]
    values = _functional_group_values(path, n_frames)
    records = [{**row.to_dict(), "frame": frame, **own} for frame, own in enumerate(values)]
    return pd.DataFrame.from_records(records)


def _functional_group_values(path: str, n_frames: int) -> list[dict[str, Any]]:
    """Each frame's values from the functional groups: its own item over the shared one.

    One walk of the header (the same that bounds it) reads every frame's values; pydicom
    would build a data set of each frame's every item first, which takes most of the time
    an enhanced series takes to open.
    """
    found = read_nested_values(path, _KEYWORDS)
    n_items = found.top_items.get(_PER_FRAME, 0)
    if n_items and n_items != n_frames:
        raise InvalidDicomError(
            f"{path}: NumberOfFrames is {n_frames} but the Per-Frame Functional Groups "
            f"Sequence holds {n_items} items"
        )
    shared: dict[str, Any] = {}
    own: list[dict[str, Any]] = [{} for _ in range(n_frames)]
    for where, keyword, value in found.values:
        column = _column(where, keyword)
        if column is None:
            continue
        (groups, item), _ = where
        if groups == _SHARED and item == 0:
            shared[column] = value
        elif groups == _PER_FRAME and item < n_frames:
            own[item][column] = value
    return [{**shared, **mine} for mine in own]  # a frame's own value overrides the shared one


def _column(where: Location, keyword: str) -> str | None:
    """The index column of a value in the first item of a functional group, or None for a
    value elsewhere (a private group, a nested sequence, a second item)."""
    if len(where) != 2 or where[1][1] != 0:
        return None
    return _COLUMNS.get((where[1][0], keyword))
