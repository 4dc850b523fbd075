"""DICOM values to JSON-safe attrs and per-slice coordinates.

Tags common to the series become attrs keyed by DICOM keyword; tags that vary between
slices become coordinates along ``z`` in snake_case. Only JSON-safe values come out (str,
int, float, bool, lists and nested dicts; no bytes, no NaN, no pydicom types), so attrs
survive zarr, netCDF and JSON unchanged.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import numpy as np
import pandas as pd
import pydicom
from pydicom.dataset import Dataset

from .header import INDEX_KEYWORDS, plain_value

logger = logging.getLogger(__name__)

_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
_NOT_ATTRS = {"PixelData", "FloatPixelData", "DoubleFloatPixelData"}
#: Per-slice tags never turned into coordinates: the geometry owns them.
GEOMETRY_KEYWORDS = ("ImagePositionPatient",)
#: Coordinate names for the three components of (0020,0032) *Image Position (Patient)*.
POSITION_COORDS = ("image_position_l", "image_position_p", "image_position_s")
_MAX_SEQUENCE_ITEMS = 64


def snake_case(keyword: str) -> str:
    """``RescaleIntercept`` -> ``rescale_intercept``; ``SOPInstanceUID`` -> ``sop_instance_uid``."""
    words = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", keyword)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", words).lower()


def json_safe(value: Any) -> Any:
    """A plain, JSON-safe version of a DICOM or numpy value (None when it has none)."""
    if isinstance(value, Dataset):
        return dataset_attrs(value)
    if isinstance(value, pydicom.sequence.Sequence):
        return [dataset_attrs(item) for item in value[:_MAX_SEQUENCE_ITEMS]]
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
        return [json_safe(v) for v in value]
    return plain_value(value)


def dataset_attrs(ds: Dataset) -> dict[str, Any]:
    """Public, non-binary top-level elements of a data set, keyed by keyword."""
    attrs: dict[str, Any] = {}
    for tag in list(ds.keys()):
        try:
            element = ds[tag]
            keyword = element.keyword
            if not keyword or keyword in _NOT_ATTRS or element.VR in _BINARY_VRS:
                continue
            value = json_safe(element.value)
        except Exception as exc:  # noqa: BLE001 - one bad element must not hide the rest
            logger.info("left out element %s: %s", tag, exc)
            continue
        if value is not None and value != [] and value != {}:
            attrs[keyword] = value
    return attrs


def varying_keywords(frames: pd.DataFrame) -> list[str]:
    """Index tags whose value is not the same on every frame."""
    varying = []
    for keyword in INDEX_KEYWORDS:
        values = frames[keyword].map(_comparable)
        if values.nunique(dropna=False) > 1:
            varying.append(keyword)
    return varying


def _comparable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def slice_coordinate(values: pd.Series) -> np.ndarray:
    """One varying tag as a 1-D coordinate: numbers stay numbers, the rest become text.

    Multi-valued entries are joined with a backslash, as DICOM writes them; missing
    values become NaN for numbers and an empty string for text.
    """
    plain = [("\\".join(map(str, v)) if isinstance(v, list) else v) for v in values]
    present = [v for v in plain if v is not None]
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        if all(isinstance(v, int) for v in present) and len(present) == len(plain):
            return np.asarray(plain, dtype=np.int64)
        return np.asarray([np.nan if v is None else v for v in plain], dtype=np.float64)
    return np.asarray(["" if v is None else str(v) for v in plain], dtype=str)
