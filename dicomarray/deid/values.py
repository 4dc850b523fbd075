"""Values the profile makes: dummies by VR, shifted dates, and the check of a descriptor
for the identifying values of its object (Clean Descriptors)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

#: D (dummy) values by VR; a VR not here gets an empty value.
DUMMIES: dict[str, Any] = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "PN": "ANONYMIZED",
    **{vr: "ANONYMIZED" for vr in ("AE", "CS", "LO", "LT", "SH", "ST", "UC", "UT")},
    **{vr: 0 for vr in ("DS", "IS", "FL", "FD", "SL", "SS", "UL", "US", "SV", "UV")},
}
#: Fewer characters than this are matched only as a whole word (``Li`` in ``LIVER`` is
#: not a name).
WHOLE_WORD_BELOW = 4
_DATE = re.compile(r"^(\d{8})(.*)$")


def dummy(vr: str) -> Any:
    """A dummy value of a VR (PS3.15 action D): ``ANONYMIZED``, ``19000101``, 0 ..."""
    return DUMMIES.get(vr)


def shifted(value: Any, vr: str, shift: dt.timedelta) -> Any:
    """A DA or DT value (or a list of them) moved by ``shift`` days; the time of day, its
    fraction and offset are kept. Other VRs and values that are not dates come back as they
    are (a TM has no date to move)."""
    if isinstance(value, list | tuple):
        return [shifted(v, vr, shift) for v in value]
    if vr not in ("DA", "DT") or value in (None, ""):
        return value
    match = _DATE.match(str(value).strip())
    if match is None:
        return None  # not a date: nothing safe to keep
    try:
        day = dt.datetime.strptime(match[1], "%Y%m%d").date() + shift
    except ValueError:
        return None
    return day.strftime("%Y%m%d") + (match[2] if vr == "DT" else "")


def identifying_texts(values: Iterable[tuple[str, Any]]) -> frozenset[str]:
    """The texts a descriptor must not hold, from an object's identifying ``(vr, value)``
    pairs: each value; for a person's name (PN) also its components and words (``Doe^Jane``
    gives ``Doe`` and ``Jane``); for a date (DA, or a DT's date) also ``YYYY-MM-DD``,
    ``DD.MM.YYYY`` and ``MM/DD/YYYY``."""
    texts: set[str] = set()
    for vr, value in values:
        for text in _texts(value):
            texts.add(text)
            if vr == "PN":
                texts.update(re.split(r"[\^=\s,]+", text))
            if vr in ("DA", "DT") and re.match(r"\d{8}", text):
                y, m, d = text[:4], text[4:6], text[6:8]
                texts.update({y + m + d, f"{y}-{m}-{d}", f"{d}.{m}.{y}", f"{m}/{d}/{y}"})
    return frozenset(t.strip().casefold() for t in texts if len(t.strip()) >= 2)


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [t for v in value for t in _texts(v)]
    return [str(value).strip()] if str(value).strip() else []


def holds_identifier(text: Any, identifiers: frozenset[str]) -> bool:
    """Whether ``text`` holds one of ``identifiers`` (any case; short ones as words)."""
    folded = " ".join(_texts(text)).casefold()
    for identifier in identifiers:
        if len(identifier) < WHOLE_WORD_BELOW:
            if re.search(rf"(?<![0-9a-z]){re.escape(identifier)}(?![0-9a-z])", folded):
                return True
        elif identifier in folded:
            return True
    return False
