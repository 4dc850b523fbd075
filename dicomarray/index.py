"""Walking study trees and building the index: one row of header tags per DICOM instance."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pydicom

from .errors import DicomArrayError, SeriesNotFoundError
from .header import FILE_COLUMNS, INDEX_KEYWORDS, read_header

logger = logging.getLogger(__name__)

#: The columns of every index DataFrame, in order.
INDEX_COLUMNS: tuple[str, ...] = ("path", *INDEX_KEYWORDS, *FILE_COLUMNS)

Source = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def scan(
    path: Source,
    *,
    recursive: bool = True,
    workers: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Index DICOM instances from their headers, never reading pixel data.

    Parameters
    ----------
    path : str, os.PathLike or sequence of those
        A folder, one file, or a list of files. A folder holding a ``DICOMDIR`` is listed
        from the DICOMDIR's records.
    recursive : bool, default True
        Walk sub-folders.
    workers : int, optional
        Threads reading headers; default: the number of CPUs (at least 2, at most 8).
    progress : bool, default False
        Show a progress count on stderr.

    Returns
    -------
    pandas.DataFrame
        One row per DICOM instance, sorted by path, with the columns :data:`INDEX_COLUMNS`:
        ``path`` (str), the tags of :data:`dicomarray.header.INDEX_KEYWORDS` as plain
        Python values (``None`` when absent), ``TransferSyntaxUID``, the byte offset and
        length of the pixel data (``None`` when unknown), and ``file_size``.
        ``df.attrs["skipped"]`` lists ``(path, reason)`` for every file that is not DICOM
        or cannot be read; these are not errors.

    Raises
    ------
    SeriesNotFoundError
        When ``path`` does not exist.
    """
    files = list_files(path, recursive=recursive)
    rows: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    for count, (file, result) in enumerate(_read_headers(files, workers), start=1):
        if isinstance(result, str):
            skipped.append((file, result))
            logger.info("skipped %s: %s", file, result)
        else:
            rows.append({"path": file, **result})
        if progress:
            _show_progress(count, len(files))
    frame = pd.DataFrame.from_records(rows, columns=list(INDEX_COLUMNS))
    frame = frame.astype(object).where(frame.notna(), None)
    frame.attrs["skipped"] = skipped
    return frame


def list_files(path: Source, *, recursive: bool = True) -> list[str]:
    """The candidate files of a source, sorted: a folder's files, one file, or a list."""
    if isinstance(path, str | os.PathLike):
        root = Path(path)
        if root.is_file():
            return [str(root)]
        if not root.is_dir():
            raise SeriesNotFoundError(f"{root}: no such file or folder")
        dicomdir = root / "DICOMDIR"
        listed = _files_from_dicomdir(dicomdir) if dicomdir.is_file() else None
        files = listed if listed is not None else _walk(root, recursive)
    else:
        files = [str(p) for p in path]
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise SeriesNotFoundError(f"{missing[0]}: no such file ({len(missing)} missing)")
    return sorted(dict.fromkeys(files))


def _walk(root: Path, recursive: bool) -> Iterator[str]:
    if not recursive:
        yield from (str(p) for p in root.iterdir() if p.is_file())
        return
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        yield from (os.path.join(folder, n) for n in names if n != "DICOMDIR")


def _files_from_dicomdir(dicomdir: Path) -> list[str] | None:
    """Files referenced by a DICOMDIR's records, or None when it cannot be used."""
    try:
        ds = pydicom.dcmread(dicomdir)
        records = ds.DirectoryRecordSequence
    except Exception as exc:  # noqa: BLE001 - any unreadable DICOMDIR means: walk instead
        logger.info("%s unusable (%s); walking the folder instead", dicomdir, exc)
        return None
    files = []
    for record in records:
        parts = record.get("ReferencedFileID")
        if parts:
            parts = [parts] if isinstance(parts, str) else list(parts)
            files.append(str(dicomdir.parent.joinpath(*parts)))
    existing = [f for f in files if os.path.isfile(f)]
    logger.info("%s lists %d files (%d present)", dicomdir, len(files), len(existing))
    return existing


def _read_headers(
    files: list[str], workers: int | None
) -> Iterator[tuple[str, dict[str, Any] | str]]:
    workers = workers or min(8, max(2, os.cpu_count() or 1))
    if workers == 1 or len(files) < 16:
        yield from zip(files, map(_read_one, files), strict=True)
        return
    # threads: most of the time goes to opening and reading files, which releases the GIL
    with ThreadPoolExecutor(workers) as pool:
        yield from zip(files, pool.map(_read_one, files, chunksize=32), strict=True)


def _read_one(path: str) -> dict[str, Any] | str:
    """The header of one file, or the reason it was skipped."""
    try:
        return read_header(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is skipped, never fatal
        return f"not readable as DICOM: {type(exc).__name__}: {exc}"


def _show_progress(count: int, total: int) -> None:
    if count == total or count % 100 == 0:
        end = "\n" if count == total else ""
        print(f"\rscanned {count}/{total} files", end=end, file=sys.stderr, flush=True)


def as_index(source: Source | pd.DataFrame) -> pd.DataFrame:
    """An index DataFrame for a source: rows of a :func:`scan` result pass through."""
    if isinstance(source, pd.DataFrame):
        missing = [c for c in ("path", "SeriesInstanceUID") if c not in source.columns]
        if missing:
            raise DicomArrayError(f"index DataFrame lacks the columns {missing}")
        return source
    return scan(source)
