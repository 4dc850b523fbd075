"""DICOM values to JSON-safe attrs and per-slice coordinates.

Tags common to the series become attrs keyed by DICOM keyword; tags that vary between
slices become coordinates along ``z`` in snake_case. Only JSON-safe values come out (str,
int, float, bool, lists and nested dicts; no bytes, no NaN, no pydicom types), so attrs
survive zarr, netCDF and JSON unchanged.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pydicom
from pydicom.datadict import dictionary_VR, keyword_dict, keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from .header import INDEX_KEYWORDS, plain_value

logger = logging.getLogger(__name__)

_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
_NOT_ATTRS = {"PixelData", "FloatPixelData", "DoubleFloatPixelData"}
#: Coordinates holding file paths: provenance, left out of de-identified exports.
PATH_COORDS = ("source_file",)
#: Per-slice tags never turned into coordinates: the geometry owns them.
GEOMETRY_KEYWORDS = ("ImagePositionPatient",)
_MAX_SEQUENCE_ITEMS = 64
#: Sequences nested deeper than this are left out of attrs: JSON writers and xarray
#: recurse into nested values, and a hostile file can nest hundreds of levels.
MAX_SEQUENCE_DEPTH = 8
#: Largest difference between direction cosines of (0020,0037) *Image Orientation
#: (Patient)* that is rounding noise, not another orientation.
ORIENTATION_TOLERANCE = 1e-4


def plain_cell(value: Any) -> Any:
    """An index cell as plain Python: ``None`` when missing, numpy scalars as int or float.

    Index columns may be object columns holding ``None``, float columns holding NaN or
    nullable ``Int64`` columns holding ``pd.NA``; every reader of index cells sees the same
    values through this function.
    """
    if value is None or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def plain_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell through :func:`plain_cell`, in object columns: index rows as scan made them.

    Columns of integer tags (VR IS, US, SS, UL, SL) hold ints, also when a float column
    turned them into 6.0.
    """
    columns = {}
    for column in frame.columns:
        cells = [plain_cell(v) for v in frame[column].tolist()]
        columns[column] = [_whole(v) for v in cells] if _is_integer_tag(column) else cells
    plain = pd.DataFrame(columns, index=frame.index, columns=frame.columns, dtype=object)
    plain.attrs = dict(frame.attrs)
    return plain


_INTEGER_VRS = {"IS", "US", "SS", "UL", "SL", "UV", "SV"}


def _is_integer_tag(keyword: str) -> bool:
    return keyword in keyword_dict and dictionary_VR(keyword) in _INTEGER_VRS


def _whole(value: Any) -> Any:
    if isinstance(value, list):
        return [_whole(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def as_count(value: Any) -> int | None:
    """An integer tag read from an index cell (``6``, ``6.0``, ``np.int64(6)``), or None.

    Raises
    ------
    ValueError
        A value that is not a whole number.
    """
    value = plain_cell(value)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValueError(f"{value!r} is not a whole number")
    return int(value)


def snake_case(keyword: str) -> str:
    """``RescaleIntercept`` -> ``rescale_intercept``; ``SOPInstanceUID`` -> ``sop_instance_uid``."""
    words = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", keyword)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", words).lower()


def json_safe(value: Any, *, depth: int = 0) -> Any:
    """A plain, JSON-safe version of a DICOM or numpy value (None when it has none).

    Sequences keep their first 64 items and :data:`MAX_SEQUENCE_DEPTH` levels of nesting;
    deeper levels are left out (None).
    """
    if isinstance(value, Dataset | pydicom.sequence.Sequence) and depth >= MAX_SEQUENCE_DEPTH:
        logger.info("left out a sequence nested deeper than %d levels", MAX_SEQUENCE_DEPTH)
        return None
    if isinstance(value, Dataset):
        return dataset_attrs(value, depth=depth + 1)
    if isinstance(value, pydicom.sequence.Sequence):
        return [dataset_attrs(item, depth=depth + 1) for item in value[:_MAX_SEQUENCE_ITEMS]]
    if isinstance(value, np.generic):
        value = value.item()
    # pydicom's DSfloat, IS and UID subclass float, int and str: return the plain types
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list | tuple | np.ndarray):
        return [json_safe(v, depth=depth) for v in value]
    return plain_value(value)


def dataset_attrs(ds: Dataset, *, depth: int = 0) -> dict[str, Any]:
    """Public, non-binary top-level elements of a data set, keyed by keyword.

    ``depth`` is how deep ``ds`` is nested in sequences (0 for a file's data set).
    """
    attrs: dict[str, Any] = {}
    for tag in list(ds.keys()):
        keyword, value = _attr_value(ds, tag, depth)
        if keyword is not None and value is not None and value != [] and value != {}:
            attrs[keyword] = value
    return attrs


def _attr_value(ds: Dataset, tag: int, depth: int = 0) -> tuple[str | None, Any]:
    """The keyword and JSON-safe value of one element; no keyword for what is not an attr."""
    try:
        element = ds[tag]
        keyword = element.keyword
        if not keyword or keyword in _NOT_ATTRS or element.VR in _BINARY_VRS:
            return None, None
        return keyword, json_safe(element.value, depth=depth)
    except Exception as exc:  # noqa: BLE001 - one bad element must not hide the rest
        logger.info("left out element %s: %s", tag, exc)
        return None, None


def series_attrs(
    headers: Sequence[Dataset], *, decided_elsewhere: Collection[str] = ()
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Attrs common to every header of a series, and the tags whose value differs.

    Every header is compared, not only the first: a tag such as (0018,1151) *X-Ray Tube
    Current* that changes between slices is never written as one series value.

    Parameters
    ----------
    headers : sequence of pydicom.Dataset
        One data set per file of the series (pixel data not needed).
    decided_elsewhere : collection of str
        Keywords left to the caller (the index columns, compared frame by frame).

    Returns
    -------
    common : dict
        JSON-safe attrs of the first header, without the varying tags.
    varying : dict
        Keyword to its JSON-safe value in each header (None where absent), in header order.
    """
    # raw values first: decoding the first header's elements for its attrs would make them
    # compare unequal to the still raw elements of the others
    differing = _differing_tags(headers, decided_elsewhere)
    common = dataset_attrs(headers[0])
    varying: dict[str, list[Any]] = {}
    for tag in sorted(differing):
        keyword = _keyword(tag)
        values = [_attr_value(ds, tag)[1] if tag in ds else None for ds in headers]
        if any(v != values[0] for v in values[1:]):
            varying[keyword] = values
            common.pop(keyword, None)
    return common, varying


def _differing_tags(headers: Sequence[Dataset], decided_elsewhere: Collection[str]) -> set[int]:
    """Public tags whose raw value is not the same in every header: a cheap first pass.

    Raw bytes may differ for one value (padding, another transfer syntax), so the caller
    compares the decoded values of these tags again.
    """
    decided = frozenset(decided_elsewhere)

    def compared(ds: Dataset) -> set[int]:
        return {tag for tag in ds.keys() if _keyword(tag) not in decided and _keyword(tag)}

    first_tags = compared(headers[0])
    first = {tag: _raw_value(headers[0], tag) for tag in first_tags}
    differing: set[int] = set()
    for ds in headers[1:]:
        tags = compared(ds)
        differing |= tags ^ first_tags
        for tag in (tags & first_tags) - differing:
            if not _same_raw(_raw_value(ds, tag), first[tag]):
                differing.add(tag)
    return differing


@functools.lru_cache(maxsize=8192)
def _keyword(tag: int) -> str:
    return keyword_for_tag(tag)


def _raw_value(ds: Dataset, tag: int) -> Any:
    try:
        item = ds.get_item(tag)
    except Exception as exc:  # noqa: BLE001 - a malformed element (an unknown VR, say)
        return ("unreadable", type(exc).__name__)
    return (item.VR, item.value) if isinstance(item, RawDataElement) else item


def _same_raw(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - values that cannot be compared count as different
        return False


def varying_keywords(frames: pd.DataFrame) -> list[str]:
    """Index tags whose value is not the same on every frame.

    (0020,0037) *Image Orientation (Patient)* varies only beyond
    :data:`ORIENTATION_TOLERANCE`: rounding noise in the cosines is one orientation.
    """
    varying = []
    for keyword in INDEX_KEYWORDS:
        if keyword == "ImageOrientationPatient":
            if not same_orientations(frames[keyword]):
                varying.append(keyword)
        elif len({_comparable(v) for v in frames[keyword].tolist()}) > 1:
            varying.append(keyword)
    return varying


def same_orientations(values: pd.Series) -> bool:
    """Whether every orientation equals the first within :data:`ORIENTATION_TOLERANCE`."""
    vectors = [orientation_vector(v) for v in values.tolist()]
    return all(same_orientation(vectors[0], other) for other in vectors[1:])


def same_orientation(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Two :func:`orientation_vector` results within :data:`ORIENTATION_TOLERANCE`."""
    if a is None or b is None:
        return a is b
    return bool(np.abs(a - b).max() <= ORIENTATION_TOLERANCE)


def orientation_vector(value: Any) -> np.ndarray | None:
    """Six direction cosines as floats, or None when the value is not six finite numbers."""
    return finite_numbers(value, 6)


def finite_numbers(value: Any, count: int) -> np.ndarray | None:
    """A cell of ``count`` finite numbers as floats, or None when it is anything else."""
    value = plain_cell(value)
    if not isinstance(value, list | tuple) or len(value) != count:
        return None
    try:
        numbers = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    return numbers if np.isfinite(numbers).all() else None


def _comparable(value: Any) -> Any:
    value = plain_cell(value)
    return tuple(value) if isinstance(value, list) else value


def slice_coordinate(values: pd.Series) -> np.ndarray:
    """One varying tag as a 1-D coordinate: numbers stay numbers, the rest become text.

    Multi-valued entries are joined with a backslash, as DICOM writes them; missing
    values become NaN for numbers and an empty string for text.
    """
    cells = [plain_cell(v) for v in values]
    plain = [("\\".join(map(str, v)) if isinstance(v, list) else v) for v in cells]
    present = [v for v in plain if v is not None]
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        if all(isinstance(v, int) for v in present) and len(present) == len(plain):
            return np.asarray(plain, dtype=np.int64)
        return np.asarray([np.nan if v is None else v for v in plain], dtype=np.float64)
    return np.asarray(["" if v is None else str(v) for v in plain], dtype=str)
