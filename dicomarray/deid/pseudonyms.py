"""Keyed pseudonyms: HMAC-SHA256 of the original under a secret key.

The same original and key give the same pseudonym in every series and run, so one
patient's studies stay linked; another key gives an unrelated one; without the key a
pseudonym cannot be recomputed from a guessed original. Each kind of value (a PatientID, a
UID, a folder) is hashed under its own label, so equal text of two kinds never gives the
same pseudonym. 96 bits or more: a million originals collide with odds below 1e-17.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import Any

#: Hex digits of a PatientID or a name pseudonym (96 bits).
HEX_DIGITS = 24
#: A shift of dates (Retain Longitudinal Temporal Information with Modified Dates) is
#: between 1 and this many days back.
MAX_DATE_SHIFT_DAYS = 3652


class Pseudonyms:
    """The pseudonyms of one key.

    Parameters
    ----------
    key : bytes
        The secret (see :func:`dicomarray.deid.keys.resolve_key`).
    """

    def __init__(self, key: bytes) -> None:
        self._key = bytes(key)

    def __repr__(self) -> str:  # never shows the key
        return "Pseudonyms(key=<secret>)"

    def digest(self, kind: str, value: Any) -> bytes:
        """HMAC-SHA256 of ``value``'s text under the key, labelled by ``kind``."""
        message = f"{kind}\x00{'' if value is None else value}".encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def hex(self, kind: str, value: Any, digits: int = HEX_DIGITS) -> str:
        """The first ``digits`` hex digits of :meth:`digest`."""
        return self.digest(kind, value).hex()[:digits]

    def patient_id(self, patient_id: Any) -> str:
        """A PatientID's pseudonym: ``ANON`` and 24 hex digits (LO, 28 characters)."""
        return "ANON" + self.hex("PatientID", patient_id).upper()

    def uid(self, uid: Any) -> str:
        """A UID's pseudonym: ``2.25.`` and the decimal of 128 bits (PS3.5 B.2), at most 44
        characters."""
        number = int.from_bytes(self.digest("UID", str(uid).strip())[:16], "big")
        return f"2.25.{number}"

    def name(self, kind: str, value: Any) -> str:
        """A folder name: ``<kind>-`` and 24 hex digits (``patient-3f2a...``)."""
        return f"{kind}-{self.hex(kind, value)}"

    def date_shift(self, patient_id: Any) -> dt.timedelta:
        """The days every date of one patient moves back: 1 to :data:`MAX_DATE_SHIFT_DAYS`."""
        number = int.from_bytes(self.digest("date shift", patient_id)[:8], "big")
        return dt.timedelta(days=-(1 + number % MAX_DATE_SHIFT_DAYS))
