"""Output paths made from tag values: safe names, and a check that a path stays inside a folder."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DicomArrayError

if TYPE_CHECKING:
    from .deid import Deidentifier

#: Longest name made from a tag value.
MAX_NAME_LENGTH = 64
#: Names Windows and SMB shares reserve for devices, in any case and with any extension
#: (``con.txt`` is the console too).
RESERVED_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{device}{n}" for device in ("COM", "LPT") for n in "123456789"]
)
#: Marks a name made distinct by a hash; never part of a :func:`safe_name`.
DISTINCT_MARK = "~"
#: Hex digits of the hash that makes a name distinct: 64 bits, so that values sharing one
#: safe name collide with odds below 3e-8 for a million of them (32 bits already let two
#: real-looking 7-digit MRNs collide).
DISTINCT_HASH_LENGTH = 16


def safe_name(value: Any, default: str, *, max_length: int = MAX_NAME_LENGTH) -> str:
    """A file- and node-safe name from a tag value.

    Only ASCII letters, digits, ``-``, ``_`` and ``.`` survive (runs of anything else become
    one ``_``); leading and trailing dots and underscores go, so the name is never ``..``,
    never hidden and never absolute; an empty result becomes ``default``; a name Windows
    reserves (:data:`RESERVED_NAMES`: ``CON``, ``nul.txt``, ``COM1`` ...) gets a ``_`` after
    its first part (``CON_``, ``nul_.txt``).
    Different values may give the same name: see :func:`distinct_name`.
    """
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", "" if value is None else str(value))
    text = text.strip("._-")[: max_length - 1].strip("._-") or default
    if is_reserved(text):
        stem, dot, rest = text.partition(".")
        text = f"{stem}_{dot}{rest}"
    return text


def distinct_name(value: Any, default: str, *, max_length: int = MAX_NAME_LENGTH) -> str:
    """A safe name that no other value shares, even on a case-insensitive file system.

    A value that is its own :func:`safe_name` and has no lowercase letters is its own name
    (``PAT041``). Any other value (``A/B``, ``A B``, ``Müller``, ``abc``, ``CON``, an empty
    or over-long one) gets ``~`` and a hash of the exact value after its safe name:
    ``A_B~1f2e3d4c``. Safe names never hold ``~``, so such a name never equals a value's
    own name, and two values share a name only if their hashes collide.
    """
    text = "" if value is None else str(value)
    name = safe_name(text, default, max_length=max_length)
    if name == text and text.upper() == text:
        return name
    short = safe_name(text, default, max_length=max_length - DISTINCT_HASH_LENGTH - 1)
    return f"{short}{DISTINCT_MARK}{short_hash(text, DISTINCT_HASH_LENGTH)}"


def is_reserved(name: str) -> bool:
    """Whether Windows reserves ``name`` for a device, whatever its case or extension."""
    return name.partition(".")[0].upper() in RESERVED_NAMES


def series_folders(
    meta: Mapping[str, Any], *, deidentifier: Deidentifier | None = None
) -> tuple[str, str, str]:
    """Safe (patient, study, series) names for a series from its tags.

    PatientID (by :func:`distinct_name`, so that distinct patients never share a name);
    StudyDate and StudyID; SeriesNumber and SeriesDescription. With a ``deidentifier``,
    the keyed pseudonyms of PatientID, StudyInstanceUID and SeriesInstanceUID
    (:meth:`~dicomarray.deid.pseudonyms.Pseudonyms.name`: ``patient-<24 hex>``,
    ``study-...``, ``series-...``): no tag text, and 96 bits, so distinct patients never
    share a folder.
    """
    if deidentifier is not None:
        names = deidentifier.pseudonyms.name
        return (
            names("patient", meta.get("PatientID")),
            names("study", meta.get("StudyInstanceUID")),
            names("series", meta.get("SeriesInstanceUID")),
        )
    patient = distinct_name(meta.get("PatientID"), "unknown-patient")
    study_parts = (meta.get("StudyDate"), meta.get("StudyID"))
    study = safe_name("_".join(str(v) for v in study_parts if v), "study")
    series_parts = (_number(meta.get("SeriesNumber")), meta.get("SeriesDescription"))
    series = safe_name("_".join(str(v) for v in series_parts if v is not None), "series")
    return patient, study, series


def _number(value: Any) -> Any:
    """An integral number as an int, so that SeriesNumber 2 and 2.0 name one folder."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def short_hash(value: Any, length: int = 8) -> str:
    """A short, stable hex digest of a value (unkeyed: never for names of a de-identified
    output, whose values can be guessed and hashed; use its keyed pseudonyms)."""
    return hashlib.sha256(str(value).encode()).hexdigest()[:length]


def inside(base: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """``path`` resolved, after checking that it (through any symlink) stays under ``base``.

    Raises
    ------
    DicomArrayError
        When the resolved path leaves ``base``.
    """
    root = Path(base).resolve()
    resolved = Path(path).resolve()
    if resolved != root and root not in resolved.parents:
        raise DicomArrayError(f"{path}: refusing to write outside {root} (resolves to {resolved})")
    return resolved
