"""Output paths made from tag values: safe names, and a check that a path stays inside a folder."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import DicomArrayError

#: Longest name made from a tag value.
MAX_NAME_LENGTH = 64


def safe_name(value: Any, default: str, *, max_length: int = MAX_NAME_LENGTH) -> str:
    """A file- and node-safe name from a tag value.

    Only letters, digits, ``-``, ``_`` and ``.`` survive (runs of anything else become one
    ``_``); leading and trailing dots and underscores go, so the name is never ``..``, never
    hidden and never absolute; an empty result becomes ``default``.
    """
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", "" if value is None else str(value))
    text = text.strip("._-")[:max_length].strip("._-")
    return text or default


def series_folders(meta: Mapping[str, Any], *, deidentify: bool = False) -> tuple[str, str, str]:
    """Safe (patient, study, series) names for a series from its tags.

    PatientID; StudyDate and StudyID; SeriesNumber and SeriesDescription. With
    ``deidentify``, patient and study are short hashes of PatientID and StudyInstanceUID.
    """
    if deidentify:
        patient = "patient-" + short_hash(meta.get("PatientID"))
        study = "study-" + short_hash(meta.get("StudyInstanceUID"))
    else:
        patient = safe_name(meta.get("PatientID"), "unknown-patient")
        study_parts = (meta.get("StudyDate"), meta.get("StudyID"))
        study = safe_name("_".join(str(v) for v in study_parts if v), "study")
    series_parts = (meta.get("SeriesNumber"), meta.get("SeriesDescription"))
    series = safe_name("_".join(str(v) for v in series_parts if v is not None), "series")
    return patient, study, series


def short_hash(value: Any, length: int = 8) -> str:
    """A short, stable hex digest of a value, for telling apart names that collide."""
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
