"""The de-identifier: the profile's options, the key's pseudonyms, and what it refuses."""

from __future__ import annotations

import os
from typing import Any

from .keys import key_path, resolve_key
from .profile import ProfileOptions
from .pseudonyms import Pseudonyms


class Deidentifier:
    """How to de-identify: PS3.15 Annex E's Basic Application Level Confidentiality Profile
    (PS3.15 :data:`~dicomarray.deid.profile.EDITION`, Table E.1-1) with the options chosen,
    and keyed pseudonyms.

    Pass one as ``deidentify=`` to any export, to :func:`dicomarray.batch_convert`,
    :meth:`~dicomarray.accessor.DicomAccessor.to_dicom` and :func:`dicomarray.deidentify`
    (``deidentify=True`` is ``Deidentifier()``, every option off).

    Parameters
    ----------
    key : bytes or str, optional
        The secret of the pseudonyms (PatientID, UIDs, folder names are HMAC-SHA256 of the
        original under it; at least 16 bytes). Without ``key`` or ``key_file``, the
        ``DICOMARRAY_DEID_KEY`` environment variable, else the key saved at
        ``~/.config/dicomarray/deid.key`` (generated there the first time, with a warning
        saying where). The same key gives the same pseudonyms in every run.
    key_file : path, optional
        A file holding the key.
    retain_uids, retain_device_identity, retain_institution_identity,
    retain_patient_characteristics, retain_full_dates, retain_modified_dates,
    clean_descriptors : bool, default False
        The options of PS3.15 E.3 (see :class:`~dicomarray.deid.profile.ProfileOptions`).
    allow_burned_in_annotation : bool, default False
        De-identify the tags of objects whose BurnedInAnnotation is YES (their pixels are
        not inspected and may still show names). Off: such objects are refused.

    Raises
    ------
    DeidentificationError
        A key too short or unreadable, or retain_full_dates with retain_modified_dates.
    """

    def __init__(
        self,
        key: bytes | str | None = None,
        *,
        key_file: str | os.PathLike[str] | None = None,
        retain_uids: bool = False,
        retain_device_identity: bool = False,
        retain_institution_identity: bool = False,
        retain_patient_characteristics: bool = False,
        retain_full_dates: bool = False,
        retain_modified_dates: bool = False,
        clean_descriptors: bool = False,
        allow_burned_in_annotation: bool = False,
    ) -> None:
        self.options = ProfileOptions(
            retain_uids=retain_uids,
            retain_device_identity=retain_device_identity,
            retain_institution_identity=retain_institution_identity,
            retain_patient_characteristics=retain_patient_characteristics,
            retain_full_dates=retain_full_dates,
            retain_modified_dates=retain_modified_dates,
            clean_descriptors=clean_descriptors,
        )
        #: The file the key came from (None: given, or from the environment), which no
        #: output may hold.
        self.key_path = key_path(key, key_file)
        self.pseudonyms = Pseudonyms(resolve_key(key, key_file))
        self.allow_burned_in_annotation = allow_burned_in_annotation

    def __repr__(self) -> str:
        chosen = ", ".join(f"{o.column}=True" for o in self.options.enabled)
        return f"Deidentifier(key=<secret>{', ' if chosen else ''}{chosen})"

    def dataset(self, dataset: Any, source: Any = "") -> Any:
        """De-identify a pydicom Dataset in place (see
        :func:`dicomarray.deid.dataset.deidentify_dataset`); returns it."""
        from .dataset import deidentify_dataset

        return deidentify_dataset(dataset, self, source)


def as_deidentifier(deidentify: bool | Deidentifier | None) -> Deidentifier | None:
    """The de-identifier a ``deidentify=`` argument asks for: None for False/None, a default
    :class:`Deidentifier` for True, the one given otherwise."""
    if deidentify is None or deidentify is False:
        return None
    if deidentify is True:
        return Deidentifier()
    if isinstance(deidentify, Deidentifier):
        return deidentify
    raise TypeError(f"deidentify= takes True, False or a Deidentifier, not {deidentify!r}")
