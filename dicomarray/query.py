"""Finding series by tag rules, and tag tables: dicom_filter, Series, list_series, read_tags.

The rule language (one entry per DICOM keyword, all entries must hold):

========================  ==================================================
rule                      meaning
========================  ==================================================
``"CT"``, ``5``           equality (strings compared after stripping spaces)
``"*HEAD*"``              a glob (``*`` and ``?``), case-sensitive
``["CT", "MR"]``          any of the rules in the list
``{"min": 1, "max": 3}``  inclusive numeric range (either bound optional)
``{"regex": "^AX"}``      a regular expression, searched in the value
``{"not": rule}``         the negation of a rule
========================  ==================================================

A multi-valued tag (ImageType) matches when any of its values matches. Rules on tags are
tested instance by instance; the derived keys ``n_slices`` (matching instances in the
series) and ``is_localizer`` are allowed beside tags.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import xarray as xr
from pydicom.datadict import keyword_dict

from .assembly import assemble
from .attrs import json_safe
from .errors import DicomArrayError
from .header import plain_value, read_dataset
from .index import Source, as_index

Rule = Any
Predicate = Callable[[Any], bool]
DERIVED_KEYS = ("n_slices", "is_localizer")
_SERIES_ORDER = ("PatientID", "StudyInstanceUID", "SeriesNumber", "SeriesInstanceUID")


class RuleError(DicomArrayError):
    """A filter config names an unknown keyword or holds a malformed rule."""


@dataclass(frozen=True)
class Series:
    """One series found by :func:`dicom_filter`.

    Attributes
    ----------
    uid : str
        (0020,000E) *Series Instance UID*.
    files : tuple of str
        The matching instances' paths, in slice order.
    meta : dict
        Index tags with one value across the series, by DICOM keyword.
    """

    uid: str
    files: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def open(self, **kwargs: Any) -> xr.DataArray:
        """The lazy volume of these files; keyword arguments go to :func:`open_series`."""
        from .volume import open_series

        return open_series(list(self.files), self.uid, **kwargs)


def dicom_filter(
    input_dir: Source | pd.DataFrame, config: Mapping[str, Rule] | str | os.PathLike[str]
) -> list[Series]:
    """Every series under ``input_dir`` whose instances match all rules of ``config``.

    Parameters
    ----------
    input_dir : str, os.PathLike, list of paths, or pandas.DataFrame
        Scanned (headers only) with :func:`dicomarray.scan`, or its result.
    config : dict, or path of a JSON file holding one
        DICOM keyword (or ``n_slices`` / ``is_localizer``) to rule; see the module doc.

    Returns
    -------
    list of Series
        Sorted by patient, study and series number.

    Raises
    ------
    RuleError
        An unknown keyword or a malformed rule, named in the message.
    """
    rules = load_config(config)
    index = as_index(input_dir)
    index = index[index["Rows"].notna()] if "Rows" in index else index
    tag_rules = {k: compile_rule(k, r) for k, r in rules.items() if k != "n_slices"}
    index = _with_columns(index, [k for k in tag_rules if k not in DERIVED_KEYS])
    keep = np.ones(len(index), dtype=bool)
    for keyword, predicate in tag_rules.items():
        column = _localizer_flags(index) if keyword == "is_localizer" else index[keyword]
        keep &= np.fromiter((predicate(v) for v in column), dtype=bool, count=len(index))
    matching = index[keep]
    count_rule = compile_rule("n_slices", rules["n_slices"]) if "n_slices" in rules else None
    found = []
    for uid, rows in matching.groupby("SeriesInstanceUID", sort=False, dropna=False):
        if count_rule is None or count_rule(len(rows)):
            found.append((_sort_key(rows.iloc[0]), _series(str(uid), rows)))
    return [series for _key, series in sorted(found, key=lambda item: item[0])]


def load_config(config: Mapping[str, Rule] | str | os.PathLike[str]) -> dict[str, Rule]:
    """A config dict, read from a JSON file when given a path."""
    if isinstance(config, str | os.PathLike):
        try:
            config = json.loads(Path(config).read_text())
        except (OSError, ValueError) as exc:
            raise RuleError(f"{config}: cannot read the filter config: {exc}") from exc
    if not isinstance(config, Mapping):
        raise RuleError(
            f"a filter config is a dict of keyword to rule, not {type(config).__name__}"
        )
    for keyword in config:
        if keyword not in keyword_dict and keyword not in DERIVED_KEYS:
            raise RuleError(f"unknown DICOM keyword in the filter config: {keyword!r}")
    return dict(config)


def compile_rule(keyword: str, rule: Rule) -> Predicate:
    """A predicate on one tag value; a multi-value matches when any of its values does.

    ``not`` negates the whole rule, so ``{"not": "LOCALIZER"}`` rejects an ImageType that
    holds LOCALIZER among its values.
    """
    if isinstance(rule, list):
        options = [compile_rule(keyword, r) for r in rule]
        return lambda v: any(option(v) for option in options)
    if isinstance(rule, Mapping) and set(rule) == {"not"}:
        inner = compile_rule(keyword, rule["not"])
        return lambda v: not inner(v)
    test = _compile_value_test(keyword, rule)
    return lambda v: any(test(x) for x in v) if isinstance(v, list | tuple) else test(v)


def _compile_value_test(keyword: str, rule: Rule) -> Predicate:
    if isinstance(rule, Mapping):
        return _compile_dict(keyword, rule)
    if isinstance(rule, str) and ("*" in rule or "?" in rule):
        return lambda v: v is not None and fnmatch.fnmatchcase(str(v).strip(), rule)
    if isinstance(rule, bool | int | float | str) or rule is None:
        return lambda v: _equal(v, rule)
    raise RuleError(f"malformed rule for {keyword}: {rule!r}")


def _compile_dict(keyword: str, rule: Mapping[str, Any]) -> Predicate:
    keys = set(rule)
    if keys == {"regex"}:
        try:
            pattern = re.compile(rule["regex"])
        except (re.error, TypeError) as exc:
            raise RuleError(f"bad regex for {keyword}: {rule['regex']!r}: {exc}") from exc
        return lambda v: v is not None and pattern.search(str(v)) is not None
    if keys and keys <= {"min", "max"}:
        low, high = (_number(keyword, rule.get(k)) for k in ("min", "max"))
        return lambda v: _in_range(v, low, high)
    raise RuleError(
        f"malformed rule for {keyword}: {dict(rule)!r}; "
        "a dict rule holds 'min'/'max', 'regex' or 'not'"
    )


def _number(keyword: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RuleError(f"range bound for {keyword} must be a number, not {value!r}")
    return float(value)


def _as_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _in_range(value: Any, low: float | None, high: float | None) -> bool:
    number = _as_float(value)
    if number is None:
        return False
    return (low is None or number >= low) and (high is None or number <= high)


def _equal(value: Any, rule: Any) -> bool:
    if value is None or rule is None:
        return value is rule
    if isinstance(rule, str):
        return str(value).strip() == rule.strip()
    if isinstance(rule, bool):
        return value is rule
    return _as_float(value) == float(rule)


def _localizer_flags(index: pd.DataFrame) -> pd.Series:
    return index["ImageType"].map(
        lambda t: any(str(v).upper() == "LOCALIZER" for v in (t if isinstance(t, list) else [t]))
    )


def _with_columns(index: pd.DataFrame, keywords: list[str]) -> pd.DataFrame:
    """Read tags the index lacks from the headers (pydicom, header only)."""
    missing = [k for k in keywords if k not in index.columns]
    if not missing or index.empty:
        return index
    values: dict[str, list[Any]] = {k: [] for k in missing}
    for path in index["path"]:
        ds = read_dataset(path, stop_before_pixels=True, specific_tags=missing)
        for keyword in missing:
            values[keyword].append(plain_value(ds[keyword].value) if keyword in ds else None)
    return index.assign(**values)


def _sort_key(row: pd.Series) -> tuple[Any, ...]:
    return tuple(
        (0, v) if isinstance(v, int | float) else (1, str(v or ""))
        for v in (row.get(k) for k in _SERIES_ORDER)
    )


def _series(uid: str, rows: pd.DataFrame) -> Series:
    files = tuple(dict.fromkeys(assemble(rows, uid).frames["path"]))
    return Series(uid=uid, files=files, meta=common_tags(rows))


def common_tags(rows: pd.DataFrame) -> dict[str, Any]:
    """Index tags with the same value on every row, JSON-safe, by keyword."""
    meta = {}
    for column in rows.columns:
        if column == "path" or column.islower() or column.startswith("pixel_data"):
            continue
        values = rows[column].map(lambda v: tuple(v) if isinstance(v, list) else v)
        if values.nunique(dropna=False) == 1 and values.iloc[0] is not None:
            meta[column] = json_safe(rows[column].iloc[0])
    return meta


def list_series(source: Source | pd.DataFrame) -> pd.DataFrame:
    """One row per series: patient, study, modality, description, size, spacing, orientation.

    Parameters
    ----------
    source : str, os.PathLike, list of paths, or pandas.DataFrame
        What :func:`dicomarray.scan` accepts, or its result.
    """
    index = as_index(source)
    records = []
    for uid, rows in index.groupby("SeriesInstanceUID", sort=False, dropna=False):
        first = rows.iloc[0]
        records.append(
            {
                "PatientID": first["PatientID"],
                "StudyDate": first["StudyDate"],
                "StudyInstanceUID": first["StudyInstanceUID"],
                "SeriesNumber": first["SeriesNumber"],
                "Modality": first["Modality"],
                "SeriesDescription": first["SeriesDescription"],
                "instances": len(rows),
                "size_mb": round(float(pd.to_numeric(rows["file_size"]).sum()) / 2**20, 2),
                "rows": first["Rows"],
                "columns": first["Columns"],
                "pixel_spacing": first["PixelSpacing"],
                "slice_thickness": first["SliceThickness"],
                "orientation": orientation_label(first["ImageOrientationPatient"]),
                "SeriesInstanceUID": uid,
            }
        )
    table = pd.DataFrame.from_records(records)
    if table.empty:
        return table
    order = sorted(range(len(table)), key=lambda i: _sort_key(table.iloc[i]))
    return table.iloc[order].reset_index(drop=True)


def orientation_label(orientation: Any) -> str | None:
    """AXIAL, CORONAL, SAGITTAL or OBLIQUE: the main axis of the slice normal."""
    if not orientation or len(orientation) != 6:
        return None
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    main = int(np.argmax(np.abs(normal)))
    if abs(normal[main]) < 0.8 * np.linalg.norm(normal):
        return "OBLIQUE"
    return ("SAGITTAL", "CORONAL", "AXIAL")[main]


def read_tags(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Every element of one file, one row each: tag, keyword, name, VR, value.

    Sequences are flattened: an item's elements carry a ``path`` such as
    ``AnatomicRegionSequence[0].CodeValue``; binary values show their length, not content.
    """
    try:
        ds = read_dataset(path, stop_before_pixels=False, defer_size=1024)
    except Exception as exc:  # noqa: BLE001 - any parse failure names the file
        raise DicomArrayError(f"{path}: not readable as DICOM: {exc}") from exc
    rows: list[dict[str, Any]] = []
    if getattr(ds, "file_meta", None):
        _flatten(ds.file_meta, "", rows)
    _flatten(ds, "", rows)
    return pd.DataFrame.from_records(
        rows, columns=["path", "tag", "keyword", "name", "VR", "value"]
    )


def _flatten(ds: pydicom.Dataset, prefix: str, rows: list[dict[str, Any]]) -> None:
    for element in ds:
        name = element.keyword or str(element.tag)
        here = f"{prefix}{name}"
        rows.append(
            {
                "path": here,
                "tag": f"({element.tag.group:04X},{element.tag.element:04X})",
                "keyword": element.keyword,
                "name": element.name,
                "VR": element.VR,
                "value": _shown(element),
            }
        )
        if element.VR == "SQ":
            for i, item in enumerate(element.value):
                _flatten(item, f"{here}[{i}].", rows)


def _shown(element: pydicom.DataElement) -> str:
    if element.VR == "SQ":
        return f"<sequence of {len(element.value)} items>"
    value = element.value
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if value is None:
        return ""
    return str(value)


def read_pixels(path: str | os.PathLike[str]) -> np.ndarray:
    """One file's stored pixel values as numpy: (rows, columns), or (frames, rows, columns).

    Frames come in file order, not sorted by position; no rescale is applied.
    """
    from .frames import expand_frames
    from .index import scan
    from .pixels import FrameStack, PixelFormat, check_readable

    index = scan(path)
    if index.empty or index["Rows"].isna().all():
        reason = index.attrs["skipped"][0][1] if index.attrs["skipped"] else "no pixel data"
        raise DicomArrayError(f"{path}: {reason}")
    frames = expand_frames(index)
    fmt = PixelFormat.from_row(frames.iloc[0])
    check_readable(frames, fmt)
    values = FrameStack(frames, fmt)[:]
    return values[0] if len(values) == 1 else values
