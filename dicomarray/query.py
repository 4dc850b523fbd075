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
tested instance by instance; the derived keys ``n_slices`` (the frames of the series'
matching instances: one per file, NumberOfFrames for a multi-frame file) and
``is_localizer`` are allowed beside tags.

Selecting compares tags only: :func:`dicom_filter` and :func:`list_series` never assemble
a volume, so a series that cannot be assembled (two slices at one position, a malformed
NumberOfFrames) is still listed, and its :class:`~dicomarray.errors.AssemblyError` is
raised when that series is opened, never while the others are selected.
"""

from __future__ import annotations

import fnmatch
import json
import logging
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

from .assembly import files_in_slice_order, is_localizer, series_folder
from .attrs import as_count, json_safe, plain_cell, same_orientations
from .errors import DicomArrayError
from .geometry import plane_of_tags
from .header import plain_value, read_dataset
from .index import Source, as_index

logger = logging.getLogger(__name__)

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
        The matching instances' paths, in slice order as their tags give it (position
        along the slice normal, else SliceLocation, else InstanceNumber). Nothing is
        assembled yet: :meth:`open` does that, and raises what assembly finds.
    meta : dict
        Index tags with one value across the series, by DICOM keyword.
    rows : pandas.DataFrame or None
        The matching instances' index rows (as :func:`dicomarray.scan` gives them), which
        :meth:`open` assembles, so the files are not scanned a second time; None for a
        record made from paths alone, which :meth:`open` scans.
    """

    uid: str
    files: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    rows: pd.DataFrame | None = field(default=None, repr=False, hash=False, compare=False)

    def open(self, **kwargs: Any) -> xr.DataArray:
        """The lazy volume of these instances; keyword arguments go to :func:`open_series`."""
        from .volume import open_series

        return open_series(self.source, self.uid, **kwargs)

    @property
    def n_slices(self) -> int:
        """The frames of its instances, as the ``n_slices`` rule counts them (a multi-frame
        file counts its NumberOfFrames); its number of files without rows."""
        return len(self.files) if self.rows is None else slice_count(self.rows)

    @property
    def source(self) -> pd.DataFrame | list[str]:
        """What :func:`open_series` opens: the index rows when known, else the files."""
        return self.rows if self.rows is not None else list(self.files)


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
        Sorted by patient, study and series number. Selection reads tags only: a series
        that cannot be assembled is listed all the same, and fails when opened.

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
        column = (
            _localizer_flags(index) if keyword == "is_localizer" else index[keyword].map(plain_cell)
        )
        keep &= np.fromiter((predicate(v) for v in column), dtype=bool, count=len(index))
    matching = index[keep]
    count_rule = compile_rule("n_slices", rules["n_slices"]) if "n_slices" in rules else None
    found = []
    for uid, rows in matching.groupby("SeriesInstanceUID", sort=False, dropna=False):
        if count_rule is None or count_rule(slice_count(rows)):
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
    return index["ImageType"].map(lambda t: is_localizer(plain_cell(t)))


def _with_columns(index: pd.DataFrame, keywords: list[str]) -> pd.DataFrame:
    """Read tags the index lacks from the headers (pydicom, header only).

    A header that cannot be read gives no values (so its rules do not match) and a logged
    warning: one bad file must not stop the selection of the others.
    """
    missing = [k for k in keywords if k not in index.columns]
    if not missing or index.empty:
        return index
    values: dict[str, list[Any]] = {k: [] for k in missing}
    for path in index["path"]:
        found = _read_tags(path, missing)
        for keyword in missing:
            values[keyword].append(found.get(keyword))
    return index.assign(**values)


def _read_tags(path: str, keywords: list[str]) -> dict[str, Any]:
    try:
        ds = read_dataset(path, stop_before_pixels=True, specific_tags=keywords)
        return {k: plain_value(ds[k].value) for k in keywords if k in ds}
    except Exception as exc:  # noqa: BLE001 - any parse failure: no values for this file
        logger.warning("%s: tags %s not readable: %s: %s", path, keywords, type(exc).__name__, exc)
        return {}


def _sort_key(row: pd.Series) -> tuple[Any, ...]:
    keys = []
    for value in (plain_cell(row.get(k)) for k in _SERIES_ORDER):
        number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
        keys.append((0, number, "") if number is not None else (1, 0, str(value or "")))
    return tuple(keys)


def _series(uid: str, rows: pd.DataFrame) -> Series:
    rows = rows.copy()
    rows.attrs = {}  # the whole tree's skipped files and notes: not this series', nor pickled
    return Series(
        uid=uid, files=tuple(files_in_slice_order(rows)), meta=common_tags(rows), rows=rows
    )


def common_tags(rows: pd.DataFrame) -> dict[str, Any]:
    """Index tags with the same value on every row, JSON-safe, by keyword."""
    meta = {}
    for column in rows.columns:
        if column == "path" or column.islower() or column.startswith("pixel_data"):
            continue
        values = rows[column].map(plain_cell).map(lambda v: tuple(v) if isinstance(v, list) else v)
        if values.nunique(dropna=False) == 1 and values.iloc[0] is not None:
            meta[column] = json_safe(plain_cell(rows[column].iloc[0]))
    return meta


#: Columns of :func:`list_series` holding whole numbers: pandas nullable ``Int64``.
SERIES_INT_COLUMNS = ("SeriesNumber", "instances", "rows", "columns")


def list_series(source: Source | pd.DataFrame) -> pd.DataFrame:
    """One row per series: patient, study, modality, description, size, spacing, orientation.

    Reads tags only: a series that cannot be assembled is listed like the others.

    Parameters
    ----------
    source : str, os.PathLike, list of paths, or pandas.DataFrame
        What :func:`dicomarray.scan` accepts, or its result.

    Returns
    -------
    pandas.DataFrame
        Sorted by patient, study and series number. Values come from each series' first
        image instance (by path; its first instance when it holds no image), except
        ``slice_spacing``, the one distance in mm between the planes of all its images
        (by their positions along the normal), missing when there is none (a gap,
        blocks of different spacing, several volumes at the same positions, slices of
        several planes) or the tags cannot tell; ``orientation`` is AXIAL, CORONAL,
        SAGITTAL or OBLIQUE, the plane of the images (see
        :func:`dicomarray.geometry.plane_of_tags`);
        ``instances`` counts its indexed files, ``size_mb`` their size, ``folder`` is the
        deepest folder holding all of them. The
        :data:`SERIES_INT_COLUMNS` are nullable ``Int64``, so a missing SeriesNumber never
        turns the others into floats; ``slice_spacing`` is nullable ``Float64`` (``<NA>``
        when the series has no one step), whatever the other series hold.
    """
    index = as_index(source)
    records = [
        _series_record(uid, rows)
        for uid, rows in index.groupby("SeriesInstanceUID", sort=False, dropna=False)
    ]
    table = pd.DataFrame.from_records(records)
    if table.empty:
        return table
    table = table.astype({column: "Int64" for column in SERIES_INT_COLUMNS})
    table["slice_spacing"] = pd.to_numeric(table["slice_spacing"]).astype("Float64")
    order = sorted(range(len(table)), key=lambda i: _sort_key(table.iloc[i]))
    return table.iloc[order].reset_index(drop=True)


def _series_record(uid: Any, rows: pd.DataFrame) -> dict[str, Any]:
    # the first image instance describes the series: a raw-data or report object in the
    # same series would leave rows, columns and spacing empty
    by_path = rows.sort_values("path", kind="stable")
    images = by_path[by_path["Rows"].notna()]
    first = (images if len(images) else by_path).iloc[0]
    tag = {k: plain_cell(first.get(k)) for k in first.index}
    plane = _plane(tag["ImageOrientationPatient"], images)
    return {
        "PatientID": tag["PatientID"],
        "StudyDate": tag["StudyDate"],
        "StudyInstanceUID": tag["StudyInstanceUID"],
        "SeriesNumber": _whole_number(tag["SeriesNumber"]),
        "Modality": tag["Modality"],
        "SeriesDescription": tag["SeriesDescription"],
        "instances": len(rows),
        "size_mb": round(float(pd.to_numeric(rows["file_size"], errors="coerce").sum()) / 2**20, 2),
        "rows": _whole_number(tag["Rows"]),
        "columns": _whole_number(tag["Columns"]),
        "pixel_spacing": tag["PixelSpacing"],
        "slice_thickness": tag["SliceThickness"],
        "slice_spacing": plane["slice_spacing"],
        "orientation": plane["plane"],
        "folder": series_folder(rows["path"]),
        "SeriesInstanceUID": plain_cell(uid),
    }


def _plane(orientation: Any, images: pd.DataFrame) -> dict[str, Any]:
    """The series' plane, and its slice spacing when its images share that orientation
    (slices of other planes, as a three-plane localizer's, have no one spacing)."""
    positions = images["ImagePositionPatient"].map(plain_cell).tolist()
    one_plane = len(images) > 0 and same_orientations(images["ImageOrientationPatient"])
    return plane_of_tags(orientation, positions if one_plane else None)


def slice_count(rows: pd.DataFrame) -> int:
    """The ``n_slices`` of index rows: their frames, each instance counting NumberOfFrames.

    One enhanced multi-frame file holds a whole volume, so counting files would leave it out
    of ``{"n_slices": {"min": 20}}``. An absent or malformed NumberOfFrames counts 1:
    selection never fails on a value, opening the series does.
    """
    if "NumberOfFrames" not in rows:
        return len(rows)
    frames = (_whole_number(value) for value in rows["NumberOfFrames"])
    return sum(n if n is not None and n > 0 else 1 for n in frames)


def _whole_number(value: Any) -> int | None:
    """An integer tag for an Int64 column; a value that is not a whole number is missing."""
    try:
        return as_count(value)
    except ValueError:
        return None


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
        _flatten(ds.file_meta, "", rows, 0)
    _flatten(ds, "", rows, 0)
    return pd.DataFrame.from_records(
        rows, columns=["path", "tag", "keyword", "name", "VR", "value"]
    )


#: Sequence levels :func:`read_tags` shows; deeper items are summarised in one row.
MAX_TABLE_DEPTH = 64


def _flatten(ds: pydicom.Dataset, prefix: str, rows: list[dict[str, Any]], depth: int) -> None:
    for tag in list(ds.keys()):
        try:
            element = ds[tag]  # pydicom converts values here: a malformed one raises
        except Exception as exc:  # noqa: BLE001 - one bad element must not hide the rest
            rows.append(_row(f"{prefix}{tag}", tag, "", "", "", f"<unreadable: {exc}>"))
            continue
        name = element.keyword or str(element.tag)
        here = f"{prefix}{name}"
        shown = _shown(element)
        nested = element.VR == "SQ" and depth < MAX_TABLE_DEPTH
        if element.VR == "SQ" and not nested:
            shown += f", nested deeper than {MAX_TABLE_DEPTH} levels: not shown"
        rows.append(_row(here, element.tag, element.keyword, element.name, element.VR, shown))
        if nested:
            for i, item in enumerate(element.value):
                _flatten(item, f"{here}[{i}].", rows, depth + 1)


def _row(path: str, tag: Any, keyword: str, name: str, vr: str, value: str) -> dict[str, Any]:
    tag = pydicom.tag.Tag(tag)
    return {
        "path": path,
        "tag": f"({tag.group:04X},{tag.element:04X})",
        "keyword": keyword,
        "name": name,
        "VR": vr,
        "value": value,
    }


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
    """One file's stored pixel values as numpy: (rows, columns), or (frames, rows, columns);
    colour adds a trailing RGB axis of 3.

    Frames come in file order, not sorted by position; no rescale is applied.
    """
    from .frames import expand_frames
    from .pixels import FrameStack, PixelFormat, check_readable

    index = as_index(path)
    if index.empty or index["Rows"].isna().all():
        reason = index.attrs["skipped"][0][1] if index.attrs["skipped"] else "no pixel data"
        raise DicomArrayError(f"{path}: {reason}")
    frames = expand_frames(index)
    fmt = PixelFormat.from_row(frames.iloc[0])
    check_readable(frames, fmt)
    values = FrameStack(frames, fmt)[:]
    return values[0] if len(values) == 1 else values
