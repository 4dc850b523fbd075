"""A de-identified copy of a whole DICOM tree: :func:`deidentify`.

Every instance the index finds (:func:`dicomarray.scan`: DICOMDIRs, non-DICOM files and
links leaving the tree are skipped, never copied) is read with pydicom, de-identified by
:meth:`Deidentifier.dataset <dicomarray.deid.deidentifier.Deidentifier.dataset>` and
written as ``<output>/<patient>/<study>/<series>/<instance>.dcm``, each name the keyed
pseudonym (:meth:`~dicomarray.deid.pseudonyms.Pseudonyms.name`) of PatientID,
StudyInstanceUID, SeriesInstanceUID and SOPInstanceUID. The UIDs are keyed the same way
in every file, so a reference inside a sequence points at the new UID of the file it
named.

A series folder is staged whole (:mod:`dicomarray.staging`): it appears complete or not
at all. One series failing leaves the others to go on; the report says which failed and
why, naming files by their pseudonym paths only, never the input's.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import DeidentificationError, DicomArrayError
from ..header import read_dataset
from ..index import scan
from ..staging import check_replaceable, os_errors, remove_stale_partials, staged
from .deidentifier import Deidentifier, as_deidentifier
from .keys import key_path

logger = logging.getLogger(__name__)

#: The report written into the output folder.
REPORT = "deidentify-report.csv"
#: Its columns: the series' pseudonym folder (``patient-.../study-.../series-...``), its
#: number of instance files, ``ok``, ``skipped`` (already in the output) or ``failed``,
#: and why it failed.
REPORT_COLUMNS = ("folder", "files", "status", "error")
#: What an instance file of a de-identified series is named: its pseudonym and ``.dcm``.
_INSTANCE_FILE = re.compile(r"^instance-[0-9a-f]{24}\.dcm$")
#: patient / study / series below the output folder.
_SERIES_DEPTH = 2
_SERIES_KIND = "de-identified series folder"


@dataclass(frozen=True)
class _Series:
    """One series to copy: its pseudonym folder and (input file, output name) pairs."""

    folder: str
    files: tuple[tuple[str, str], ...]


def deidentify(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    deidentify: bool | Deidentifier = True,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Write a de-identified copy of a DICOM tree.

    Each instance under ``input`` is de-identified (PS3.15 Annex E's Basic Application
    Level Confidentiality Profile with the de-identifier's options; see
    :class:`~dicomarray.deid.deidentifier.Deidentifier`) and written as
    ``output/<patient>/<study>/<series>/<instance>.dcm``, named by keyed pseudonyms
    (``patient-<24 hex>`` ...): the same key gives the same names in every run, so a
    later run adds to the same folders. DICOMDIR files (they hold names) and non-DICOM
    files are not copied. The input is only read.

    Parameters
    ----------
    input : str or os.PathLike
        A folder (walked in full), a DICOMDIR (its folder) or one file.
    output : str or os.PathLike
        The folder to write into (made if missing); neither inside the input nor
        holding it.
    deidentify : bool or Deidentifier, default True
        How to de-identify: True is ``Deidentifier()`` (every option off, the default
        key: see :func:`~dicomarray.deid.keys.resolve_key`).
    overwrite : bool, default False
        Replace series folders already in the output (only earlier outputs of this
        function: folders of ``instance-*.dcm`` files). Without it they are skipped.

    Returns
    -------
    pandas.DataFrame
        One row per series, the columns :data:`REPORT_COLUMNS`, sorted by folder;
        pseudonyms only. Also written as ``output/deidentify-report.csv``.

    Raises
    ------
    DeidentificationError
        ``deidentify=False``; the output inside the input or the input inside the
        output; the key file (or the default key's path) inside the output. Nothing is
        written then.
    SeriesNotFoundError
        ``input`` does not exist.
    WriteError
        The output folder cannot be made, or holds a ``deidentify-report.csv`` that is
        not one.

    Examples
    --------
    >>> report = dicomarray.deidentify("study", "shared", deidentify=Deidentifier(
    ...     key_file="~/secret.key", retain_patient_characteristics=True))  # doctest: +SKIP
    """
    source, out = Path(input), Path(output)
    _check_apart(source, out)
    if deidentify is True:  # the default key may be generated: refused before that
        _check_key_outside(key_path(), out)
    deidentifier = as_deidentifier(deidentify)
    if deidentifier is None:
        raise DeidentificationError(
            f"{out}: deidentify=False would copy the tree as it is; pass True or a Deidentifier"
        )
    _check_key_outside(deidentifier.key_path, out)
    series = _plan(scan(source), deidentifier)
    with os_errors(out):
        out.mkdir(parents=True, exist_ok=True)
    # before any work: a report that is not ours would only be refused at the end
    check_replaceable(out / REPORT, overwrite=True, replaceable=_is_report, kind="report")
    remove_stale_partials(out, depth=_SERIES_DEPTH)
    rows: list[dict[str, Any]] = []
    try:
        for one in series:
            rows.append(_copy_series(one, deidentifier, out, source, overwrite=overwrite))
    finally:
        report = pd.DataFrame.from_records(rows, columns=list(REPORT_COLUMNS))
        _write_report(report, out / REPORT)
    return report


# --------------------------------------------------------------------------------------------
# Checks made before anything is written
# --------------------------------------------------------------------------------------------


def _check_apart(source: Path, out: Path) -> None:
    """The output never goes into the input (it stays as it was), nor the input into the
    output (a later run would copy its own output, and overwrite could replace input)."""
    tree = source.resolve()
    if tree.is_file() and tree.name.upper() == "DICOMDIR":
        tree = tree.parent  # a DICOMDIR stands for its folder's files
    target = out.resolve()
    if target == tree or tree in target.parents:
        raise DeidentificationError(
            f"{out}: the output folder is inside the input {source}; choose one outside it"
        )
    if target in tree.parents:
        raise DeidentificationError(
            f"{out}: the output folder holds the input {source}; choose one beside it"
        )


def _check_key_outside(path: Path | None, out: Path) -> None:
    """Whoever receives the output must not get the key: with it, a guessed ID's
    pseudonym can be computed and compared."""
    if path is None:
        return
    key, target = path.expanduser().resolve(), out.resolve()
    if key == target or target in key.parents:
        raise DeidentificationError(
            f"{out}: the output folder would hold the de-identification key {path}; keep "
            "the key outside what is shared"
        )


# --------------------------------------------------------------------------------------------
# The series and their files
# --------------------------------------------------------------------------------------------


def _plan(index: pd.DataFrame, deidentifier: Deidentifier) -> list[_Series]:
    """The index's instances by series, under their pseudonym folders, sorted by folder.

    Grouped by the original patient, study and series, so that a series UID two patients
    share (bad exports do that) still gives two folders.
    """
    keys = ["PatientID", "StudyInstanceUID", "SeriesInstanceUID"]
    frame = index[["path", *keys, "SOPInstanceUID"]].astype(object)
    frame = frame.where(frame.notna(), "")
    series = [
        _named(tuple(values), group, deidentifier)
        for values, group in frame.groupby(keys, sort=False)
    ]
    return sorted(series, key=lambda one: one.folder)


def _named(identity: tuple[Any, ...], files: pd.DataFrame, deidentifier: Deidentifier) -> _Series:
    """One series under its pseudonym folder and file names; a file whose SOPInstanceUID
    another file of the series has (a copy) is left out."""
    name = deidentifier.pseudonyms.name
    kinds = ("patient", "study", "series")
    folder = "/".join(name(kind, value) for kind, value in zip(kinds, identity, strict=True))
    targets: dict[str, str] = {}
    for path, sop_uid in zip(files["path"], files["SOPInstanceUID"], strict=True):
        target = name("instance", sop_uid) + ".dcm"
        if target in targets:
            logger.info("%s/%s: a second file of this instance, not copied", folder, target)
        else:
            targets[target] = path
    return _Series(folder, tuple((path, target) for target, path in sorted(targets.items())))


def _copy_series(
    series: _Series, deidentifier: Deidentifier, out: Path, source: Path, *, overwrite: bool
) -> dict[str, Any]:
    """One series folder, staged whole; its report row."""
    row = {"folder": series.folder, "files": len(series.files), "status": "ok", "error": ""}
    final = out / series.folder
    if final.exists() and not overwrite:
        logger.info("%s: already in the output, skipped (overwrite=True redoes it)", final)
        return {**row, "status": "skipped"}
    try:
        with staged(
            final, overwrite=overwrite, folder=True, replaceable=_is_series, kind=_SERIES_KIND
        ) as stage:
            for path, name in series.files:
                _copy_instance(path, stage.partial / name, deidentifier, f"{series.folder}/{name}")
    except Exception as exc:  # noqa: BLE001 - one series failing never stops the others
        _remove_empty_parents(final.parent, out)
        error = _without_paths(_message(exc), (str(out), str(source), str(source.resolve())))
        logger.warning("%s", error)
        return {**row, "status": "failed", "error": error}
    logger.info("%s: %d files de-identified", series.folder, len(series.files))
    return row


def _copy_instance(path: str, target: Path, deidentifier: Deidentifier, name: str) -> None:
    """Read, de-identify, write one file; errors name it by ``name``, its pseudonym path."""
    try:
        dataset = read_dataset(path, stop_before_pixels=False)
    except Exception as exc:
        # the reader's message names the original file: the pseudonym stands in for it
        reason = _message(exc).replace(path, name)
        raise DeidentificationError(f"{name}: cannot be read: {reason}") from exc
    deidentifier.dataset(dataset, name)
    try:
        dataset.save_as(target, enforce_file_format=True)
    except OSError:
        raise  # staging names the series folder
    except Exception as exc:
        raise DeidentificationError(f"{name}: cannot be written: {_message(exc)}") from exc


def _message(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, DicomArrayError) else f"{type(exc).__name__}: {text}"


def _without_paths(message: str, paths: Iterable[str]) -> str:
    """A message without the input's or output's folders: either may name a patient."""
    for path in sorted(set(paths), key=len, reverse=True):
        message = message.replace(path + os.sep, "").replace(path, "<folder>")
    return message


def _remove_empty_parents(folder: Path, out: Path) -> None:
    """The study and patient folders a failed series' staging made, if nothing else is in
    them."""
    out = out.absolute()
    while folder.absolute() != out and out in folder.absolute().parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def _is_series(folder: Path) -> bool:
    """An earlier output of :func:`deidentify`: a folder of ``instance-*.dcm`` files."""
    return all(entry.is_file() and _INSTANCE_FILE.match(entry.name) for entry in folder.iterdir())


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def _write_report(report: pd.DataFrame, path: Path) -> None:
    """Write the report, replacing only an earlier one."""
    with staged(path, overwrite=True, replaceable=_is_report, kind="report") as output:
        report.to_csv(output.partial, index=False)


def _is_report(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as file:
            return file.readline().rstrip("\r\n") == ",".join(REPORT_COLUMNS)
    except (OSError, UnicodeDecodeError):
        return False
