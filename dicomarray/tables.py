"""Index and series tables as files and as text for people.

:func:`write_index` writes a :func:`dicomarray.scan` index as CSV or parquet;
:func:`integers_as_integers` shows integer columns that pandas upcast as integers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import WriteError
from .staging import staged

#: Index file formats by suffix, and the extra that provides each one's writer.
INDEX_FORMATS = {".csv": None, ".parquet": "parquet"}


def check_index_target(path: Path, *, overwrite: bool) -> None:
    """Refuse an index file that could not or should not be written, before scanning."""
    suffix = path.suffix.lower()
    if suffix not in INDEX_FORMATS:
        raise WriteError(
            f"{path}: unknown index format {suffix or '(no suffix)'}; "
            f"use {' or '.join(INDEX_FORMATS)}"
        )
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise WriteError(
                f"{path}: writing parquet needs pyarrow: pip install 'dicomarray[parquet]'"
            ) from None
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise WriteError(f"{path} already exists; pass overwrite=True to replace it")


def write_index(index: pd.DataFrame, path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Write a :func:`dicomarray.scan` index as CSV or parquet (by suffix), atomically.

    Parameters
    ----------
    index : pandas.DataFrame
        The index.
    path : str or os.PathLike
        ``.csv`` or ``.parquet`` (needs pyarrow: the ``parquet`` extra).
    overwrite : bool
        Replace an existing file; otherwise it is a :class:`~dicomarray.errors.WriteError`.

    Returns
    -------
    pathlib.Path
        The file written.

    Notes
    -----
    Parquet keeps each column's type (nullable integers, floats, text, lists of numbers or
    text); CSV writes multi-values as JSON lists (``[0.5, 0.5]``) and missing values as
    empty fields. A column that mixes kinds of values is written as text.
    """
    path = Path(path)
    check_index_target(path, overwrite=overwrite)
    table = _plain_columns(index)
    with staged(path, overwrite=overwrite) as output:
        if path.suffix.lower() == ".parquet":
            table.to_parquet(output.partial, engine="pyarrow", index=False)
        else:
            for name in table.select_dtypes(include="object").columns:
                table[name] = table[name].map(_csv_cell)
            table.to_csv(output.partial, index=False)
    return output.final


def _plain_columns(index: pd.DataFrame) -> pd.DataFrame:
    """Columns of one kind each: lists as lists, numbers as numbers, any mix as text."""
    table = pd.DataFrame(index, copy=True)
    table.attrs = {}
    for name in table.select_dtypes(include="object").columns:
        values = table[name].map(_plain_value)
        kinds = {_kind(v) for v in values if v is not None}
        if len(kinds) > 1:
            values = values.map(lambda v: None if v is None else _csv_cell(v))
        table[name] = values
    return table


def _plain_value(value: Any) -> Any:
    if is_missing(value):
        return None
    if isinstance(value, str | bytes):
        return value
    if isinstance(value, Sequence) or isinstance(value, np.ndarray):
        return [_plain_value(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "list of " + ",".join(sorted({_kind(v) for v in value if v is not None}))
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _csv_cell(value: Any) -> Any:
    """A cell as CSV text: a list as JSON, anything else as it is."""
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


def is_missing(value: Any) -> bool:
    """Whether one cell is a gap: None, NaN, ``pd.NA`` or ``pd.NaT`` (never a list)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and bool(np.isnan(value))


def integers_as_integers(table: pd.DataFrame) -> pd.DataFrame:
    """Columns of whole numbers that pandas holds as floats or objects, as nullable integers.

    One missing value makes pandas hold an integer column (SeriesNumber, Rows) as floats;
    a table for people shows ``2``, not ``2.0``. A float column without gaps is a float
    measure (SliceThickness 5.0) and is left alone.
    """
    table = table.copy()
    for name in table.columns:
        column = table[name]
        if column.dtype.kind not in "fO" or (column.dtype.kind == "f" and column.notna().all()):
            continue
        known = column.dropna()
        if len(known) and all(_is_whole_number(v) for v in known):
            table[name] = column.astype("Int64")
    return table


def _is_whole_number(value: Any) -> bool:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        return False
    return float(value).is_integer()
