"""Walking study trees and building the index: one row of header tags per DICOM instance.

What is read, and what is left alone:

* A folder is always walked in full. A DICOMDIR (or a DIRFILE it points to) is a Media
  Storage Directory, not an instance: it is listed in ``attrs["skipped"]`` as a directory
  record and used only as a hint, to warn when its records and the walked files disagree.
  Nothing is ever read from a path a DICOMDIR names, so a record pointing outside the
  tree (``..`` or an absolute component) can only be refused and reported.
* Symbolic links are followed only when their target lies inside the input tree (the
  default, ``symlinks="inside"``); ``"never"`` follows none, ``"always"`` all. A file or
  folder reached twice (a link to something already walked, a hard link, a loop) is read
  once.
* Only regular files are opened: named pipes, sockets and devices are skipped without
  being opened, so they can neither block nor be read.
* Every header is read through :mod:`dicomarray.header` within its
  :class:`~dicomarray.header.HeaderLimits`; a truncated, malformed or oversized header
  is skipped with its reason.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydicom.datadict import dictionary_VM, dictionary_VR

from .errors import DicomArrayError, DicomArrayWarning, SeriesNotFoundError, warn_data_problem
from .header import (
    DIRECTORY_SOP_CLASS,
    FILE_COLUMNS,
    INDEX_KEYWORDS,
    HeaderLimits,
    file_kind,
    read_header,
    referenced_file_ids,
)

logger = logging.getLogger(__name__)

#: The columns of every index DataFrame, in order.
INDEX_COLUMNS: tuple[str, ...] = ("path", *INDEX_KEYWORDS, *FILE_COLUMNS)

_INTEGER_VRS = {"IS", "US", "SS", "UL", "SL"}
_DECIMAL_VRS = {"DS", "FL", "FD"}


def _column_dtype(keyword: str) -> str:
    if dictionary_VM(keyword) != "1":
        return "object"
    vr = dictionary_VR(keyword)
    return "Int64" if vr in _INTEGER_VRS else "Float64" if vr in _DECIMAL_VRS else "object"


#: The dtype of every index column, whatever the tree holds. Single-valued integer tags
#: (SeriesNumber, InstanceNumber, NumberOfFrames, Rows, ...) and the byte counts are
#: pandas' nullable ``Int64``, single-valued decimals (SliceThickness, RescaleSlope, ...)
#: nullable ``Float64``: a missing value is ``pd.NA`` and never turns the column into
#: floats. Everything else is ``object``: ``str``, a list (multi-valued tags), or ``None``.
COLUMN_DTYPES: dict[str, str] = {
    "path": "object",
    **{keyword: _column_dtype(keyword) for keyword in INDEX_KEYWORDS},
    "TransferSyntaxUID": "object",
    "pixel_data_offset": "Int64",
    "pixel_data_length": "Int64",
    "file_size": "Int64",
}

Source = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
Symlinks = Literal["inside", "never", "always"]


@dataclass
class _Listing:
    """The candidate files of a source and what was left out while listing them."""

    root: str | None
    files: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def scan(
    path: Source,
    *,
    recursive: bool = True,
    workers: int | None = None,
    progress: bool = False,
    symlinks: Symlinks = "inside",
    limits: HeaderLimits | None = None,
) -> pd.DataFrame:
    """Index DICOM instances from their headers, never reading pixel data.

    Parameters
    ----------
    path : str, os.PathLike or sequence of those
        A folder (walked in full, whether or not it holds a ``DICOMDIR``), one file, or a
        list of files. A file named ``DICOMDIR`` stands for its folder, which is walked.
    recursive : bool, default True
        Walk sub-folders.
    workers : int, optional
        Threads reading headers; default: the number of CPUs (at least 2, at most 8).
    progress : bool, default False
        Show a progress count on stderr.
    symlinks : {"inside", "never", "always"}, default "inside"
        Which symbolic links met while walking a folder are followed: those whose target
        lies inside the folder, none, or all. Files named explicitly are always read.
    limits : dicomarray.header.HeaderLimits, optional
        Bounds on each file's header (bytes, elements, sequence items, nesting depth);
        by default :data:`dicomarray.header.DEFAULT_LIMITS`.

    Returns
    -------
    pandas.DataFrame
        One row per DICOM instance, sorted by path, with the columns :data:`INDEX_COLUMNS`
        of the dtypes :data:`COLUMN_DTYPES`: ``path`` (str), the tags of
        :data:`dicomarray.header.INDEX_KEYWORDS` (``None`` or ``pd.NA`` when absent),
        ``TransferSyntaxUID``, the byte offset and length of the pixel data (``pd.NA``
        when unknown), and ``file_size``. Two lists ride along:

        * ``df.attrs["skipped"]``: ``(path, reason)`` for every file that is not an
          instance: not DICOM, unreadable, truncated, past a header limit, a directory
          record (DICOMDIR, DIRFILE), a FIFO or device, a link not followed, a file seen
          twice, a DICOMDIR record refused. These are not errors.
        * ``df.attrs["notes"]``: sentences about the tree as a whole: a DICOMDIR that
          disagrees with the walked files, values that do not fit their column's dtype.
          Each is also logged, and DICOMDIR disagreements warn (``DicomArrayWarning``).

    Raises
    ------
    SeriesNotFoundError
        When ``path`` does not exist.
    """
    listing = _list(path, recursive=recursive, symlinks=symlinks)
    rows: list[dict[str, Any]] = []
    skipped = list(listing.skipped)
    directories: list[str] = []
    total = len(listing.files)
    results = _read_headers(listing.files, workers, limits)
    for count, (file, result) in enumerate(results, start=1):
        reason = _not_an_instance(result)
        if reason is None and isinstance(result, dict):
            rows.append({"path": file, **result})
        else:
            skipped.append((file, reason or ""))
            logger.info("skipped %s: %s", file, reason)
            if isinstance(result, dict):
                directories.append(file)
        if progress:
            _show_progress(count, total)
    notes: list[str] = []
    if directories and listing.root is not None:
        indexed = [row["path"] for row in rows]
        skipped += _check_directories(directories, indexed, listing.root, limits, notes)
    frame = _typed_frame(rows, notes)
    frame.attrs["skipped"] = skipped
    frame.attrs["notes"] = notes
    return frame


def list_files(path: Source, *, recursive: bool = True, symlinks: Symlinks = "inside") -> list[str]:
    """The candidate files of a source, sorted: a folder's files, one file, or a list.

    Files and links left out by the rules of :func:`scan` are not listed.
    """
    return _list(path, recursive=recursive, symlinks=symlinks).files


def _list(path: Source, *, recursive: bool, symlinks: Symlinks) -> _Listing:
    if isinstance(path, str | os.PathLike):
        root = os.fspath(path)
        if _is_dicomdir(root):
            # a DICOMDIR stands for its file set (PS3.10 names it so): walk the set's folder,
            # where it is a hint, rather than index a directory record and nothing else
            root = os.path.dirname(os.path.abspath(root))
        if os.path.isdir(root):
            listing = _Listing(root)
            _walk(listing, root, recursive=recursive, symlinks=symlinks)
            listing.files.sort()
            return listing
        if not os.path.lexists(root):
            raise SeriesNotFoundError(f"{root}: no such file or folder")
        names = [root]
    else:
        names = [os.fspath(p) for p in path]
        missing = [f for f in names if not os.path.lexists(f)]
        if missing:
            raise SeriesNotFoundError(f"{missing[0]}: no such file ({len(missing)} missing)")
    listing = _Listing(None)
    for name in dict.fromkeys(names):
        reason = _not_regular(name)
        if reason:
            listing.skipped.append((name, reason))
        else:
            listing.files.append(name)
    listing.files.sort()
    return listing


def _is_dicomdir(path: str) -> bool:
    """A regular file named DICOMDIR (in any case), the root of a PS3.10 file set."""
    return os.path.basename(path).upper() == "DICOMDIR" and os.path.isfile(path)


def _not_regular(path: str) -> str | None:
    """Why a named path cannot be read as a file, or None when it can."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}"
    return None if stat.S_ISREG(mode) else f"not a regular file: {file_kind(mode)}"


def _walk(listing: _Listing, root: str, *, recursive: bool, symlinks: Symlinks) -> None:
    """List a folder's regular files by the symlink policy, each file and folder once.

    Links are followed after everything else is walked, so that a file reached both
    directly and through a link is indexed under its own path.
    """
    real_root = os.path.realpath(root)
    root_stat = os.stat(root)
    seen: dict[tuple[int, int], str] = {(root_stat.st_dev, root_stat.st_ino): root}
    folders: list[str] = [root]
    links: list[tuple[str, os.stat_result]] = []
    while folders or links:
        if folders:
            found = _folder_entries(listing, folders.pop(), real_root, symlinks)
            direct = [(path, st) for path, st, is_link in found if not is_link]
            links += [(path, st) for path, st, is_link in found if is_link]
        else:
            direct = [links.pop(0)]
        subfolders = []
        for path, st in direct:
            key = (st.st_dev, st.st_ino)
            is_folder = stat.S_ISDIR(st.st_mode)
            if key in seen:
                what = "folder" if is_folder else "file"
                listing.skipped.append((path, f"the same {what} as {seen[key]}, read once"))
                continue
            seen[key] = path
            if not is_folder:
                listing.files.append(path)
            elif recursive:
                subfolders.append(path)
        folders.extend(reversed(subfolders))  # depth first, in name order


def _folder_entries(
    listing: _Listing, folder: str, real_root: str, symlinks: Symlinks
) -> list[tuple[str, os.stat_result, bool]]:
    """A folder's entries to walk, in name order: (path, stat through links, is a link)."""
    try:
        with os.scandir(folder) as scanned:
            entries = sorted(scanned, key=lambda e: e.name)
    except OSError as exc:
        listing.skipped.append((folder, f"cannot list the folder: {exc.strerror or exc}"))
        return []
    found = []
    for entry in entries:
        reason, st = _entry_reason(entry, real_root, symlinks)
        if reason is not None or st is None:
            listing.skipped.append((entry.path, reason or "cannot stat"))
        else:
            found.append((entry.path, st, entry.is_symlink()))
    return found


def _entry_reason(
    entry: os.DirEntry[str], real_root: str, symlinks: Symlinks
) -> tuple[str | None, os.stat_result | None]:
    """Why a folder entry is left out (or None), and its stat through any link."""
    try:
        if entry.is_symlink():
            if symlinks == "never":
                return "a symbolic link, not followed (symlinks='never')", None
            target = os.path.realpath(entry.path)
            if symlinks == "inside" and not _is_inside(target, real_root):
                return "a symbolic link to outside the input tree, not followed", None
        st = entry.stat(follow_symlinks=True)
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}", None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return f"not a regular file: {file_kind(st.st_mode)}, not opened", None
    return None, st


def _is_inside(path: str, real_root: str) -> bool:
    return os.path.commonpath([path, real_root]) == real_root


def _read_headers(
    files: list[str], workers: int | None, limits: HeaderLimits | None
) -> Iterator[tuple[str, dict[str, Any] | str]]:
    workers = workers or min(8, max(2, os.cpu_count() or 1))

    def read(path: str) -> dict[str, Any] | str:
        return _read_one(path, limits)

    if workers == 1 or len(files) < 16:
        yield from zip(files, map(read, files), strict=True)
        return
    # threads: most of the time goes to opening and reading files, which releases the GIL
    with ThreadPoolExecutor(workers) as pool:
        yield from zip(files, pool.map(read, files, chunksize=32), strict=True)


def _read_one(path: str, limits: HeaderLimits | None) -> dict[str, Any] | str:
    """The header of one file, or the reason it was skipped."""
    try:
        return read_header(path, limits=limits)
    except DicomArrayError as exc:
        return str(exc).removeprefix(f"{path}: ")
    except Exception as exc:  # noqa: BLE001 - any unreadable file is skipped, never fatal
        return f"not readable as DICOM: {type(exc).__name__}: {exc}"


def _not_an_instance(result: dict[str, Any] | str) -> str | None:
    """Why a header read is not an index row (None when it is one)."""
    if isinstance(result, str):
        return result
    if DIRECTORY_SOP_CLASS in (result.get("MediaStorageSOPClassUID"), result.get("SOPClassUID")):
        return "a directory record (Media Storage Directory: DICOMDIR or DIRFILE), not an instance"
    if not result.get("SOPInstanceUID"):
        return "no (0008,0018) SOP Instance UID: not a DICOM instance"
    return None


def _check_directories(
    directories: list[str],
    indexed: list[str],
    root: str,
    limits: HeaderLimits | None,
    notes: list[str],
) -> list[tuple[str, str]]:
    """Compare each file set's directory records with the walked instances.

    A DICOMDIR's records name files relative to its folder (the file-set root); a DIRFILE
    it names belongs to the same file set. Returns the records refused, as skipped entries.
    """
    real_root = os.path.realpath(root)
    # DICOMDIRs first: the DIRFILEs they name inherit their file-set root
    order = sorted(directories, key=lambda d: (Path(d).name.upper() != "DICOMDIR", d))
    file_set_of = {d: os.path.dirname(d) for d in order}
    known = {os.path.normcase(d): d for d in directories}
    listed: dict[str, set[str]] = {}
    refused: list[tuple[str, str]] = []
    for directory in order:
        file_set = file_set_of[directory]
        try:
            references = referenced_file_ids(directory, limits=limits)
        except DicomArrayError as exc:
            _note(notes, f"{directory}: not used as a hint: {exc}")
            continue
        for parts in references:
            target, reason = _referenced_path(file_set, parts, real_root)
            if reason is not None:
                refused.append((target, f"refused: {directory} records {parts!r}: {reason}"))
            elif os.path.normcase(target) in known:
                file_set_of[known[os.path.normcase(target)]] = file_set
            else:
                listed.setdefault(file_set, set()).add(target)
    for file_set, targets in sorted(listed.items()):
        _compare(file_set, targets, indexed, notes)
    return refused


def _referenced_path(file_set: str, parts: list[str], real_root: str) -> tuple[str, str | None]:
    """A record's path under its file-set root, and why it is refused (None if it is not)."""
    joined = os.path.join(file_set, *parts)
    if any(p in ("..", ".") or os.path.isabs(p) or "/" in p or ":" in p for p in parts):
        return joined, "a '..', '.' or absolute path component, outside the file set"
    if not _is_inside(os.path.realpath(joined), real_root):
        return joined, "it resolves (through a symbolic link) outside the input tree"
    return joined, None


def _compare(file_set: str, targets: set[str], indexed: list[str], notes: list[str]) -> None:
    """Warn when a file set's records and the instances walked under it differ."""
    prefix = os.path.join(file_set, "")
    walked = {p.casefold(): p for p in indexed if p.startswith(prefix)}
    # media written on one system are often read on another that changes the case
    found = {walked[t.casefold()] for t in targets if t.casefold() in walked}
    missing = len(targets) - len(found)
    unlisted = len(walked) - len(found)
    if missing or unlisted:
        message = (
            f"{file_set}: the DICOMDIR records {len(targets)} files, the folder holds "
            f"{len(walked)} instances: {missing} recorded files are missing or not "
            f"instances, {unlisted} instances are not recorded; all walked instances are "
            "indexed"
        )
        _note(notes, message, warn=True)


def _note(notes: list[str], message: str, *, warn: bool = False) -> None:
    notes.append(message)
    if warn:
        warn_data_problem(message, DicomArrayWarning)
    else:
        logger.warning(message)


def _typed_frame(rows: list[dict[str, Any]], notes: list[str]) -> pd.DataFrame:
    """The index rows as a DataFrame of :data:`COLUMN_DTYPES`; misfits become missing."""
    columns = {}
    for column, dtype in COLUMN_DTYPES.items():
        # built from the rows, not through a DataFrame, which would turn ints and None to floats
        values = [row.get(column) for row in rows]
        if dtype != "object":
            kind = int if dtype == "Int64" else float
            misfits = [i for i, v in enumerate(values) if v is not None and not _fits(v, kind)]
            if misfits:
                _note(
                    notes,
                    f"{column}: {len(misfits)} values that are not one number left empty "
                    f"(first: {rows[misfits[0]]['path']}: {values[misfits[0]]!r})",
                )
                for i in misfits:
                    values[i] = None
        columns[column] = pd.Series(values, dtype=dtype)
    return pd.DataFrame(columns, columns=list(INDEX_COLUMNS))


def _fits(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if kind is int else isinstance(value, int | float)


def _show_progress(count: int, total: int) -> None:
    if count == total or count % 100 == 0:
        end = "\n" if count == total else ""
        print(f"\rscanned {count}/{total} files", end=end, file=sys.stderr, flush=True)


def as_index(source: Source | pd.DataFrame) -> pd.DataFrame:
    """An index for the package's readers: rows of a :func:`scan` result, or a new scan.

    Its values are plain Python objects, as the readers expect: the ``Int64`` and
    ``Float64`` columns become ``object`` columns of ``int`` and ``float``, with ``None``
    where a value is missing. A DataFrame already holding plain values passes as it is.
    """
    if isinstance(source, pd.DataFrame):
        missing = [c for c in ("path", "SeriesInstanceUID") if c not in source.columns]
        if missing:
            raise DicomArrayError(f"index DataFrame lacks the columns {missing}")
        frame = source
    else:
        frame = scan(source)
    return plain_values(frame)


def plain_values(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its nullable numeric columns as ``object`` columns (``None`` for NA)."""
    typed = [
        c for c in frame.columns if isinstance(frame[c].dtype, pd.api.extensions.ExtensionDtype)
    ]
    typed = [c for c in typed if pd.api.types.is_numeric_dtype(frame[c].dtype)]
    if not typed:
        return frame
    plain = frame.copy()
    for column in typed:
        values = frame[column]
        plain[column] = pd.Series(
            [None if v is pd.NA else v for v in values.astype(object)],
            index=frame.index,
            dtype=object,
        )
    plain.attrs = dict(frame.attrs)
    return plain
