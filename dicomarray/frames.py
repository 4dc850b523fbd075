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
from pydicom.datadict import keyword_for_tag, tag_for_keyword

from .attrs import as_count, plain_cell, plain_cells
from .errors import InvalidDicomError, PixelDataError
from .header import Location, read_nested_values

# (functional group sequence(s), keyword in its item, frame column): the functional group
# macros of PS3.3 C.7.6.16.2 that hold a frame column's value for one frame. A tuple of
# sequences is a path: the value lies in the first item of each, one inside the other.
_GROUP_VALUES: tuple[tuple[str | tuple[str, ...], str, str], ...] = (
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
    # C.7.6.16.2.2 Frame Content: when and where in the dimensions each frame lies; the
    # temporal position also fills the classic (0020,0100) column, as it always has
    ("FrameContentSequence", "TemporalPositionIndex", "TemporalPositionIdentifier"),
    ("FrameContentSequence", "TemporalPositionIndex", "TemporalPositionIndex"),
    ("FrameContentSequence", "FrameAcquisitionDateTime", "FrameAcquisitionDateTime"),
    ("FrameContentSequence", "FrameReferenceDateTime", "FrameReferenceDateTime"),
    ("FrameContentSequence", "InStackPositionNumber", "InStackPositionNumber"),
    ("FrameContentSequence", "StackID", "StackID"),
    ("FrameContentSequence", "DimensionIndexValues", "DimensionIndexValues"),
    # C.8.13.5: the MR macros, under the names of the classic tags they stand for
    ("MREchoSequence", "EffectiveEchoTime", "EchoTime"),
    ("MRTimingAndRelatedParametersSequence", "RepetitionTime", "RepetitionTime"),
    ("CardiacSynchronizationSequence", "NominalCardiacTriggerDelayTime", "TriggerTime"),
    ("MRDiffusionSequence", "DiffusionBValue", "DiffusionBValue"),
    ("MRDiffusionSequence", "DiffusionDirectionality", "DiffusionDirectionality"),
    (
        ("MRDiffusionSequence", "DiffusionGradientDirectionSequence"),
        "DiffusionGradientOrientation",
        "DiffusionGradientOrientation",
    ),
    # the frame's own image type (magnitude and phase frames in one file)
    ("MRImageFrameTypeSequence", "FrameType", "ImageType"),
    ("CTImageFrameTypeSequence", "FrameType", "ImageType"),
)
#: Frame columns of list values, a list even when the file holds one value.
LIST_COLUMNS = ("DimensionIndexValues",)
#: Frame columns beside the index's: the (0020,9222) *Dimension Index Sequence* of a
#: multi-frame file, the same on each of its frames and None elsewhere. Each is a list,
#: one entry per dimension in the file's order: the keyword of the (0020,9165)
#: *Dimension Index Pointer* (the tag each DimensionIndexValues entry indexes), and of
#: its (0020,9167) *Functional Group Pointer* (None when absent). A tag with no keyword
#: (a private one) is written ``"(gggg,eeee)"``.
DIMENSION_COLUMNS = ("DimensionIndexPointers", "DimensionIndexGroups")


def _path(sequences: str | tuple[str, ...]) -> tuple[int, ...]:
    names = (sequences,) if isinstance(sequences, str) else sequences
    return tuple(int(tag_for_keyword(name) or 0) for name in names)


_KEYWORDS = sorted(
    {keyword for _, keyword, _ in _GROUP_VALUES}
    | {"DimensionIndexPointer", "FunctionalGroupPointer"}
)


def _columns_by_path() -> dict[tuple[tuple[int, ...], str], tuple[str, ...]]:
    """(sequence tags inside a functional group item, keyword) -> its frame columns."""
    columns: dict[tuple[tuple[int, ...], str], tuple[str, ...]] = {}
    for sequences, keyword, column in _GROUP_VALUES:
        key = (_path(sequences), keyword)
        columns[key] = (*columns.get(key, ()), column)
    return columns


_COLUMNS = _columns_by_path()
_SHARED = int(tag_for_keyword("SharedFunctionalGroupsSequence") or 0)
_PER_FRAME = int(tag_for_keyword("PerFrameFunctionalGroupsSequence") or 0)
_DIMENSIONS = int(tag_for_keyword("DimensionIndexSequence") or 0)
_POINTERS = {"DimensionIndexPointer": 0, "FunctionalGroupPointer": 1}


#: More frames than this in one instance is refused as malformed, before any expansion.
MAX_FRAMES = 100_000


def expand_frames(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per frame, with a 0-based ``frame`` column; single frames pass through.

    A multi-frame instance's frames take their values from its functional groups, under
    the names of the index columns they stand for (see :data:`_GROUP_VALUES`), and gain
    the :data:`DIMENSION_COLUMNS`; every row has those columns (None for a single frame).
    Cells come out plain (:func:`dicomarray.attrs.plain_cells`): ``None`` when missing,
    Python numbers, integer tags as ints, whatever the index's column types (nullable
    ``Int64``, float with NaN, object with None), so every reader of frames sees one
    value model; the :data:`LIST_COLUMNS` hold lists.

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
        frames = rows.assign(frame=0, **dict.fromkeys(DIMENSION_COLUMNS))
    else:
        parts = []
        for (_, row), n in zip(rows.iterrows(), counts, strict=True):
            single = pd.DataFrame([row]).assign(frame=0, **dict.fromkeys(DIMENSION_COLUMNS))
            parts.append(_frame_rows(row, n) if n > 1 else single)
        frames = pd.concat(parts, ignore_index=True)
    return _as_lists(plain_cells(frames))


def _as_lists(frames: pd.DataFrame) -> pd.DataFrame:
    """The :data:`LIST_COLUMNS` as lists: a file holding one value gives a bare number."""
    for column in LIST_COLUMNS:
        if column in frames:
            frames[column] = [
                [value] if value is not None and not isinstance(value, list) else value
                for value in frames[column].tolist()
            ]
    return frames


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
    values, dimensions = _functional_group_values(row["path"], n_frames)
    common = {**row.to_dict(), **dimensions}
    records = [{**common, "frame": frame, **own} for frame, own in enumerate(values)]
    return pd.DataFrame.from_records(records)


def _functional_group_values(
    path: str, n_frames: int
) -> tuple[list[dict[str, Any]], dict[str, list[Any] | None]]:
    """Each frame's values from the functional groups (its own item over the shared one),
    and the file's :data:`DIMENSION_COLUMNS`.

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
    pointers: list[list[Any]] = []
    for where, keyword, value in found.values:
        if not where:
            continue  # a top-level element: the index read it already
        (top, item), *_ = where
        if top == _DIMENSIONS:
            _add_pointer(pointers, where, keyword, value)
            continue
        for column in _columns(where, keyword):
            if top == _SHARED and item == 0:
                shared[column] = value
            elif top == _PER_FRAME and item < n_frames:
                own[item][column] = value
    # a frame's own value overrides the shared one
    return [{**shared, **mine} for mine in own], _dimension_columns(pointers)


def _columns(where: Location, keyword: str) -> tuple[str, ...]:
    """The frame columns of a value in the first item of a functional group (and of each
    sequence inside it), or none for a value elsewhere (a private group, another
    sequence, a second item)."""
    inner = where[1:]
    if not inner or any(item != 0 for _, item in inner):
        return ()
    return _COLUMNS.get((tuple(tag for tag, _ in inner), keyword), ())


def _add_pointer(pointers: list[list[Any]], where: Location, keyword: str, value: Any) -> None:
    """Note a pointer of one item of the Dimension Index Sequence (items in file order)."""
    if len(where) != 1 or keyword not in _POINTERS:
        return
    item = where[0][1]
    while len(pointers) <= item:
        pointers.append([None, None])
    pointers[item][_POINTERS[keyword]] = _tag_name(value)


def _dimension_columns(pointers: list[list[Any]]) -> dict[str, list[Any] | None]:
    if not pointers:
        return dict.fromkeys(DIMENSION_COLUMNS)
    return {
        "DimensionIndexPointers": [index for index, _ in pointers],
        "DimensionIndexGroups": [group for _, group in pointers],
    }


def _tag_name(value: Any) -> str | None:
    """The keyword of an AT value, ``"(gggg,eeee)"`` for a tag without one."""
    if not isinstance(value, int):
        return None
    return keyword_for_tag(value) or f"({value >> 16:04X},{value & 0xFFFF:04X})"
