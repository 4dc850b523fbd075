"""The profile applied to a pydicom Dataset, at every depth of its sequences."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from .. import __version__
from ..errors import DeidentificationError
from .profile import BASIC, EDITION, action_for
from .values import dummy, holds_identifier, identifying_texts, shifted

if TYPE_CHECKING:
    from .deidentifier import Deidentifier

#: Value representations whose text may name or identify someone (a descriptor is checked
#: against these values of its object).
TEXT_VRS = frozenset(("AE", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "UC", "UT"))
PATIENT_ID = 0x00100020


@dataclass(frozen=True)
class _Walk:
    """What one object's walk needs: the de-identifier, the date shift, the identifiers."""

    deidentifier: Deidentifier
    shift: dt.timedelta
    identifiers: frozenset[str]


def deidentify_dataset(dataset: Dataset, deidentifier: Deidentifier, source: Any = "") -> Dataset:
    """De-identify ``dataset`` in place (and return it): PS3.15 Table E.1-1 under the
    de-identifier's options, private attributes, curves and overlays removed, at every depth;
    the method recorded (PatientIdentityRemoved, DeidentificationMethod and its Code
    Sequence, LongitudinalTemporalInformationModified); a new file meta.

    Raises
    ------
    DeidentificationError
        BurnedInAnnotation is YES (the pixels may show names, which are not inspected) and
        the de-identifier does not allow it; ``source`` names the file.
    """
    if str(dataset.get("BurnedInAnnotation", "")).upper() == "YES":
        if not deidentifier.allow_burned_in_annotation:
            raise DeidentificationError(
                f"{source or 'dataset'}: BurnedInAnnotation is YES: its pixels may show "
                "identifying text, which dicomarray does not remove; pass "
                "allow_burned_in_annotation=True (--allow-burned-in) to de-identify its "
                "tags anyway"
            )
    walk = _Walk(
        deidentifier,
        deidentifier.pseudonyms.date_shift(dataset.get("PatientID", "")),
        identifying_texts(_identifying_values(dataset, deidentifier)),
    )
    _clean(dataset, walk)
    _record_method(dataset, deidentifier)
    if hasattr(dataset, "file_meta"):
        dataset.file_meta = _file_meta(dataset)
    return dataset


def _identifying_values(dataset: Dataset, deidentifier: Deidentifier) -> list[tuple[str, Any]]:
    """(VR, value) of every text attribute the profile does not keep, at any depth."""
    found: list[tuple[str, Any]] = []
    for element in dataset.iterall():
        if element.VR in TEXT_VRS and not element.tag.is_private:
            if action_for(element.tag, deidentifier.options) not in ("K", "C"):
                found.append((element.VR, element.value))
    return found


def _clean(dataset: Dataset, walk: _Walk) -> None:
    for element in list(dataset):
        if _is_graphics(element.tag):
            del dataset[element.tag]
            continue
        action = action_for(element.tag, walk.deidentifier.options)
        if action == "X":
            del dataset[element.tag]
        else:
            _apply(element, action, walk)


def _is_graphics(tag: int) -> bool:
    """A curve (50xx) or overlay (60xx) group: removed whole (Clean Graphics is not offered;
    an overlay without its data would not be valid)."""
    return (tag >> 16) & 0xFF01 in (0x5000, 0x6000)


def _apply(element: DataElement, action: str, walk: _Walk) -> None:
    """One kept attribute under its action (``Z``, ``D``, ``U``, ``C``, ``K``, ``U*``)."""
    if element.VR == "SQ":
        if action in ("Z", "D"):
            element.value = Sequence()
        else:  # K, C, U*: the items' own attributes decide
            for item in element.value:
                _clean(item, walk)
    elif action == "Z":
        element.value = None
    elif action == "D" and element.tag == PATIENT_ID:
        element.value = walk.deidentifier.pseudonyms.patient_id(element.value)
    elif action == "U" or (action == "D" and element.VR == "UI"):
        element.value = _new_uids(element.value, walk)
    elif action == "D":
        element.value = dummy(element.VR)
    elif action == "C":
        element.value = _cleaned(element, walk)


def _new_uids(value: Any, walk: _Walk) -> Any:
    uid = walk.deidentifier.pseudonyms.uid
    if isinstance(value, MultiValue | list | tuple):
        return [uid(v) for v in value]
    return uid(value) if value else value


def _cleaned(element: DataElement, walk: _Walk) -> Any:
    """C: dates moved (Modified Dates), texts kept only if they hold no identifier."""
    if element.VR in ("DA", "DT", "TM"):
        if walk.deidentifier.options.retain_modified_dates:
            return shifted(element.value, element.VR, walk.shift)
        return element.value  # Full Dates keeps them (K); no other option cleans a date
    if holds_identifier(element.value, walk.identifiers):
        return None
    return element.value


def _record_method(dataset: Dataset, deidentifier: Deidentifier) -> None:
    """PatientIdentityRemoved, DeidentificationMethod (+ Code Sequence, CID 7050) and
    LongitudinalTemporalInformationModified, at the top level."""
    options = deidentifier.options
    methods = [BASIC, *options.enabled]
    dataset.PatientIdentityRemoved = "YES"
    dataset.DeidentificationMethod = [
        f"dicomarray {__version__}"[:64],
        f"PS3.15 {EDITION} {BASIC.name}"[:64],
        *(m.name[:64] for m in options.enabled),
    ]
    codes = Sequence()
    for method in methods:
        item = Dataset()
        item.CodeValue = method.code
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = method.name
        codes.append(item)
    dataset.DeidentificationMethodCodeSequence = codes
    if options.retain_full_dates:
        dataset.LongitudinalTemporalInformationModified = "UNMODIFIED"
    elif options.retain_modified_dates:
        dataset.LongitudinalTemporalInformationModified = "MODIFIED"
    else:
        dataset.LongitudinalTemporalInformationModified = "REMOVED"


def _file_meta(dataset: Dataset) -> FileMetaDataset:
    """A file meta of the de-identified object only: no source AE title, no old UID."""
    old = dataset.file_meta
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = dataset.get("SOPClassUID", old.get("MediaStorageSOPClassUID"))
    meta.MediaStorageSOPInstanceUID = dataset.get("SOPInstanceUID", "")
    meta.TransferSyntaxUID = old.TransferSyntaxUID
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"DICOMARRAY_{__version__}"[:16]
    return meta
