"""The metadata sidecar of an export, and de-identification of tags.

The sidecar is JSON: the tags common to the series by DICOM keyword at the top level, and
dicomarray's sections (``array``, ``varying``, ``geometry``, ``assembly``, ``dicomarray``)
under lower-case keys. De-identification leaves out the attributes of the DICOM PS3.15
Basic Application Level Confidentiality Profile; it shifts and replaces nothing.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from pydicom.datadict import DicomDictionary

from ..attrs import PATH_COORDS, json_safe, snake_case
from ..errors import DicomArrayError
from ..geometry import POSITION_COORDS, SPATIAL_DIMS, VolumeGeometry
from ..staging import staged
from ..volume import ASSEMBLY_ATTR

#: Attributes of the DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile
#: (Table E.1-1) that can appear as top-level attrs: identities, names, addresses, dates
#: and times, descriptions and comments, and the UIDs that link data back to the source.
#: ``deidentify=True`` leaves every one of them out (at any depth of nested sequences);
#: nothing is shifted or replaced.
DEIDENTIFY_KEYWORDS: frozenset[str] = frozenset(
    """
    AccessionNumber AcquisitionComments AcquisitionContextSequence AcquisitionDate
    AcquisitionDateTime AcquisitionDeviceProcessingDescription AcquisitionFieldOfViewLabel
    AcquisitionProtocolDescription AcquisitionTime AcquisitionUID ActualHumanPerformersSequence
    AdditionalPatientHistory AdmissionID AdmittingDate AdmittingDiagnosesCodeSequence
    AdmittingDiagnosesDescription AdmittingTime AffectedSOPInstanceUID Allergies
    ApprovalStatusDateTime AssertionDateTime AssertionExpirationDateTime
    AttributeModificationDateTime AuthorObserverSequence BeamDescription BolusDescription
    BranchOfService CameraOwnerName CassetteID ClinicalTrialCoordinatingCenterName
    ClinicalTrialProtocolEthicsCommitteeApprovalNumber ClinicalTrialProtocolEthicsCommitteeName
    ClinicalTrialSeriesDescription ClinicalTrialSeriesID ClinicalTrialSiteID
    ClinicalTrialSiteName ClinicalTrialSponsorName ClinicalTrialSubjectID
    ClinicalTrialSubjectReadingID ClinicalTrialTimePointDescription ClinicalTrialTimePointID
    CommentsOnRadiationDose CommentsOnThePerformedProcedureStep CompensatorDescription
    ConcatenationUID ConfidentialityConstraintOnPatientDataDescription
    ConsultingPhysicianIdentificationSequence ConsultingPhysicianName ContainerComponentID
    ContainerDescription ContainerIdentifier ContentCreatorIdentificationCodeSequence
    ContentCreatorName ContentDate ContentQualification ContentSequence ContentTime
    ContextGroupExtensionCreatorUID ContrastBolusAgent ContrastBolusStartTime
    ContrastBolusStopTime ContributionDescription CountryOfResidence CreatorVersionUID
    CurrentObserverTrial CurrentPatientLocation CurveDate CurveTime
    CustodialOrganizationSequence DataSetTrailingPadding DateOfLastCalibration
    DateOfLastDetectorCalibration DerivationDescription DetectorID DeviceAlternateIdentifier
    DeviceDescription DeviceLabel DeviceSerialNumber DeviceUID DigitalSignatureUID
    DigitalSignaturesSequence DimensionOrganizationUID DischargeDate
    DischargeDiagnosisDescription DischargeTime DistributionAddress DistributionName
    DoseReferenceUID EndAcquisitionDateTime EntityDescription EntityLabel EntityLongLabel
    EntityName EquipmentFrameOfReferenceDescription EthnicGroup ExpectedCompletionDateTime
    FailedSOPInstanceUIDList FiducialUID FillerOrderNumberImagingServiceRequest FrameComments
    FrameOfReferenceUID GantryID GeneratorID GraphicAnnotationSequence HumanPerformerName
    HumanPerformerOrganization IconImageSequence IdentifyingComments ImageComments
    ImagePresentationComments ImagingServiceRequestComments Impressions
    InstanceCoercionDateTime InstanceCreationDate InstanceCreationTime InstanceCreatorUID
    InstitutionAddress InstitutionCodeSequence InstitutionName InstitutionalDepartmentName
    InstitutionalDepartmentTypeCodeSequence InsurancePlanIdentification
    IntendedRecipientsOfResultsIdentificationSequence InterpretationApproverSequence
    InterpretationAuthor InterpretationDiagnosisDescription InterpretationIDIssuer
    InterpretationRecorder InterpretationText InterpretationTranscriber
    InterventionDrugStartTime InterventionDrugStopTime IrradiationEventUID IssuerOfAdmissionID
    IssuerOfPatientID IssuerOfServiceEpisodeID LargePaletteColorLookupTableUID
    LastMenstrualDate LongDeviceDescription MAC ManufacturerDeviceClassUID
    MediaStorageSOPInstanceUID MedicalAlerts MedicalRecordLocator MilitaryRank
    ModifiedAttributesSequence ModifiedImageDescription ModifyingDeviceID
    NameOfPhysiciansReadingStudy NamesOfIntendedRecipientsOfResults NetworkID
    ObservationDateTime ObservationUID Occupation OperatorIdentificationSequence OperatorsName
    OrderCallbackPhoneNumber OrderCallbackTelecomInformation OrderEnteredBy
    OrderEntererLocation OrderFillerIdentifierSequence OrderPlacerIdentifierSequence
    OriginalAttributesSequence OtherPatientIDs OtherPatientIDsSequence OtherPatientNames
    OverlayDate OverlayTime PaletteColorLookupTableUID ParticipantSequence
    PatientAddress PatientAge PatientAlternativeCalendar PatientBirthDate
    PatientBirthDateInAlternativeCalendar PatientBirthName PatientBirthTime PatientComments
    PatientDeathDateInAlternativeCalendar PatientID PatientInstitutionResidence
    PatientInsurancePlanCodeSequence PatientMotherBirthName PatientName
    PatientPrimaryLanguageCodeSequence PatientPrimaryLanguageModifierCodeSequence
    PatientReligiousPreference PatientSetupUID PatientSex PatientSexNeutered PatientSize
    PatientState PatientTelecomInformation PatientTelephoneNumbers
    PatientTransportArrangements PatientWeight PerformedLocation PerformedProcedureCodeSequence
    PerformedProcedureStepDescription PerformedProcedureStepEndDate
    PerformedProcedureStepEndDateTime PerformedProcedureStepEndTime PerformedProcedureStepID
    PerformedProcedureStepStartDate PerformedProcedureStepStartDateTime
    PerformedProcedureStepStartTime PerformedProtocolCodeSequence PerformedStationAETitle
    PerformedStationGeographicLocationCodeSequence PerformedStationName
    PerformedStationNameCodeSequence PerformingPhysicianIdentificationSequence
    PerformingPhysicianName PersonAddress PersonIdentificationCodeSequence PersonName
    PersonTelecomInformation PersonTelephoneNumbers PhysicianApprovingInterpretation
    PhysiciansOfRecord PhysiciansOfRecordIdentificationSequence
    PhysiciansReadingStudyIdentificationSequence PlacerOrderNumberImagingServiceRequest
    PlateID PreMedication PregnancyStatus ProcedureCodeSequence ProtocolName
    RadiopharmaceuticalStartDateTime RadiopharmaceuticalStartTime
    RadiopharmaceuticalStopDateTime RadiopharmaceuticalStopTime
    ReasonForRequestedProcedureCodeSequence ReasonForStudy ReasonForTheRequestedProcedure
    ReferencedDigitalSignatureSequence ReferencedFiducialsUID ReferencedFrameOfReferenceUID
    ReferencedGeneralPurposeScheduledProcedureStepTransactionUID ReferencedImageSequence
    ReferencedObservationUIDTrial ReferencedPatientAliasSequence
    ReferencedPatientPhotoSequence ReferencedPatientSequence
    ReferencedPerformedProcedureStepSequence ReferencedRequestSequence
    ReferencedRTPlanSequence ReferencedSOPInstanceMACSequence ReferencedSOPInstanceUID
    ReferencedSOPInstanceUIDInFile ReferencedStudySequence ReferencedTreatmentRecordSequence
    ReferringPhysicianAddress ReferringPhysicianIdentificationSequence ReferringPhysicianName
    ReferringPhysicianTelephoneNumbers RegionOfResidence RelatedFrameOfReferenceUID
    RequestAttributesSequence RequestedContrastAgent RequestedProcedureCodeSequence
    RequestedProcedureComments RequestedProcedureDescription RequestedProcedureID
    RequestedProcedureLocation RequestedSOPInstanceUID RequestingPhysician RequestingService
    ResponsibleOrganization ResponsiblePerson ResponsiblePersonRole ResultsComments
    ResultsDistributionListSequence ResultsIDIssuer ReviewerName ScheduledAdmissionDate
    ScheduledAdmissionTime ScheduledDischargeDate ScheduledDischargeTime
    ScheduledHumanPerformersSequence ScheduledPatientInstitutionResidence
    ScheduledPerformingPhysicianIdentificationSequence ScheduledPerformingPhysicianName
    ScheduledProcedureStepDescription ScheduledProcedureStepEndDate
    ScheduledProcedureStepEndTime ScheduledProcedureStepID ScheduledProcedureStepLocation
    ScheduledProcedureStepStartDate ScheduledProcedureStepStartTime
    ScheduledProtocolCodeSequence ScheduledStationAETitle
    ScheduledStationGeographicLocationCodeSequence ScheduledStationName
    ScheduledStationNameCodeSequence ScheduledStudyLocation ScheduledStudyLocationAETitle
    ScheduledStudyStartDate ScheduledStudyStartTime ScheduledStudyStopDate
    ScheduledStudyStopTime SeriesDate SeriesDescription SeriesInstanceUID SeriesTime
    ServiceEpisodeDescription ServiceEpisodeID SmokingStatus SOPInstanceUID
    SourceImageSequence SourceSerialNumber SpecialNeeds SpecimenAccessionNumber
    SpecimenDetailedDescription SpecimenIdentifier SpecimenShortDescription SpecimenUID
    StationName StorageMediaFileSetUID StudyArrivalDate StudyArrivalTime StudyComments
    StudyCompletionDate StudyCompletionTime StudyDate StudyDescription StudyID StudyIDIssuer
    StudyInstanceUID StudyReadDate StudyReadTime StudyTime StudyVerifiedDate StudyVerifiedTime
    SynchronizationFrameOfReferenceUID TargetUID TemplateExtensionCreatorUID
    TemplateExtensionOrganizationUID TextComments TextString TimeOfLastCalibration
    TimeOfLastDetectorCalibration TimezoneOffsetFromUTC TopicAuthor TopicKeywords TopicSubject
    TopicTitle TrackingID TrackingUID TransactionUID UID
    VerifyingObserverIdentificationCodeSequence VerifyingObserverName
    VerifyingObserverSequence VerifyingOrganization VisitComments
    """.split()
)

#: Sidecar sections; lower-case, so they never collide with a DICOM keyword.
SIDECAR_SECTIONS = ("array", "varying", "geometry", "assembly", "dicomarray")


# --------------------------------------------------------------------------------------------
# De-identification
# --------------------------------------------------------------------------------------------


def deidentified(value: Any) -> Any:
    """``value`` without the :data:`DEIDENTIFY_KEYWORDS`, at any depth of dicts and lists."""
    if isinstance(value, dict):
        return {k: deidentified(v) for k, v in value.items() if k not in DEIDENTIFY_KEYWORDS}
    if isinstance(value, list):
        return [deidentified(v) for v in value]
    return value


#: The assembly report's entries that name no file, series or instance. An allow-list, so
#: that an entry added to the report later is left out until it is known to be safe.
SAFE_REPORT_KEYS = ("sorted_by", "n_frames", "slice_spacing", "warnings")


def deidentified_report(report: dict[str, Any]) -> dict[str, Any]:
    """The assembly report without its UIDs and file paths.

    The Series Instance UID is in the confidentiality profile, and folder names often hold
    patient IDs; only :data:`SAFE_REPORT_KEYS` are kept, with the number of frames left out.
    """
    kept = {k: v for k, v in report.items() if k in SAFE_REPORT_KEYS}
    kept["left_out_count"] = len(report.get("left_out", []))
    return kept


def keyword_of_coord(name: str) -> str | None:
    """The DICOM keyword a per-slice coordinate was named after, or None."""
    return _keywords_by_snake_name().get(name)


@functools.cache
def _keywords_by_snake_name() -> dict[str, str]:
    return {snake_case(entry[4]): entry[4] for entry in DicomDictionary.values() if entry[4]}


def is_identifying_coord(name: str) -> bool:
    """Whether a coordinate holds an attribute the de-identification profile leaves out,
    or a path (folder names often hold patient names)."""
    return name in PATH_COORDS or keyword_of_coord(name) in DEIDENTIFY_KEYWORDS


def export_attrs(attrs: dict[str, Any], *, deidentify: bool) -> dict[str, Any]:
    """Attrs as written by an export: all of them, or the de-identified ones."""
    if not deidentify:
        return dict(attrs)
    kept = deidentified({k: v for k, v in attrs.items() if k != ASSEMBLY_ATTR})
    if isinstance(attrs.get(ASSEMBLY_ATTR), dict):
        kept[ASSEMBLY_ATTR] = deidentified_report(attrs[ASSEMBLY_ATTR])
    kept["dicomarray_deidentified"] = True
    return kept


# --------------------------------------------------------------------------------------------
# The metadata sidecar
# --------------------------------------------------------------------------------------------


def series_metadata(volume: xr.DataArray, *, deidentify: bool = False) -> dict[str, Any]:
    """The JSON sidecar of an exported volume.

    Top-level keys are the DICOM keywords of the tags common to every slice, with their
    JSON-safe attr values (DICOM units: mm, mA, mAs, kVp, degrees ...). Lower-case keys
    are dicomarray's sections:

    ``array``
        ``dims``, ``shape``, ``dtype``, ``name``, the attrs that are not DICOM keywords
        (``units`` and the like set by transforms) and ``coords``: by name, each
        coordinate on the dims beyond ``z``, ``y`` and ``x`` (``t`` in s, ``echo`` in ms,
        ``b_value``, ``gradient_l`` ... of :func:`extra_coords`) and each one on
        ``(*extra, "z")`` (a value per frame: ``source_file``, ``frame``, per-frame tags).
    ``varying``
        Tags that differ between slices, by DICOM keyword, as lists in slice order
        (``ImagePositionPatient`` as ``[L, P, S]`` triples); only those along ``z``
        alone (the others are in ``array.coords``).
    ``geometry``
        From :meth:`dicomarray.geometry.VolumeGeometry.summary`, in the array's own dim
        order (``dims``): ``spacing`` in mm per dim (the slice step None for a stack
        without one step), ``regular``, ``slice_steps`` (each run of one step: ``steps``,
        ``mm``, ``first_slice``, ``last_slice``) and ``slice_steps_text`` (the runs in one
        sentence), ``origin`` (LPS mm of voxel 0), ``orientation`` ((0020,0037) *Image
        Orientation (Patient)*), ``slice_normal``, ``axis_codes`` (the LPS letter each dim
        runs toward), ``tilt_degrees``, ``affine`` (4 x 4, indices in ``dims`` order to
        LPS mm) and ``z`` (each slice's position along the normal); None without geometry.
    ``assembly``
        The assembly report (files used, left out and why, warnings); without the series
        UID and file paths when de-identified.
    ``dicomarray``
        The package version and whether the sidecar is de-identified.
    """
    from .. import __version__

    attrs = dict(volume.attrs)
    report = attrs.pop(ASSEMBLY_ATTR, None)
    tags = {k: v for k, v in attrs.items() if _is_keyword(k)}
    other = {k: v for k, v in attrs.items() if not _is_keyword(k)}
    meta: dict[str, Any] = dict(deidentified(tags) if deidentify else tags)
    meta["array"] = {
        "name": volume.name,
        "dims": list(volume.dims),
        "shape": list(volume.shape),
        "dtype": str(volume.dtype),
        "attrs": other,
        "coords": extra_coords(volume, deidentify=deidentify),
    }
    meta["varying"] = varying_tags(volume, deidentify=deidentify)
    meta["geometry"] = volume_geometry(volume)
    if isinstance(report, dict):
        meta["assembly"] = deidentified_report(report) if deidentify else report
    meta["dicomarray"] = {"version": __version__, "deidentified": deidentify}
    return plain(meta)


#: BIDS sidecar fields (the names dcm2niix writes) from DICOM keywords, with the factor
#: from DICOM's unit to BIDS's: times in ms become seconds.
BIDS_FROM_DICOM: dict[str, tuple[str, float]] = {
    "Modality": ("Modality", 1.0),
    "MagneticFieldStrength": ("MagneticFieldStrength", 1.0),
    "ImagingFrequency": ("ImagingFrequency", 1.0),
    "Manufacturer": ("Manufacturer", 1.0),
    "ManufacturersModelName": ("ManufacturerModelName", 1.0),
    "MRAcquisitionType": ("MRAcquisitionType", 1.0),
    "ScanningSequence": ("ScanningSequence", 1.0),
    "SequenceVariant": ("SequenceVariant", 1.0),
    "SequenceName": ("SequenceName", 1.0),
    "SliceThickness": ("SliceThickness", 1.0),
    "SpacingBetweenSlices": ("SpacingBetweenSlices", 1.0),
    "EchoTime": ("EchoTime", 1e-3),
    "RepetitionTime": ("RepetitionTime", 1e-3),
    "InversionTime": ("InversionTime", 1e-3),
    "FlipAngle": ("FlipAngle", 1.0),
    "EchoTrainLength": ("EchoTrainLength", 1.0),
    "PixelBandwidth": ("PixelBandwidth", 1.0),
}
#: Per-frame acquisition times SliceTiming is computed from, best first: (0008,0032)
#: *Acquisition Time* (TM) and the enhanced (0018,9074) *Frame Acquisition DateTime* (DT).
SLICE_TIME_COORDS = ("acquisition_time", "frame_acquisition_date_time", "acquisition_date_time")


def bids_fields(volume: xr.DataArray) -> dict[str, Any]:
    """The BIDS sidecar fields of a volume (as dcm2niix writes beside a NIfTI), in BIDS units.

    Fields of :data:`BIDS_FROM_DICOM` the attrs hold (``RepetitionTime``, ``EchoTime`` and
    ``InversionTime`` in seconds; ``FlipAngle`` in degrees; ``MagneticFieldStrength`` in
    T ...), and ``SliceTiming``: for each slice along ``z`` (in array order), seconds from
    the first acquisition of the first volume, from the per-frame acquisition times of
    :data:`SLICE_TIME_COORDS`; left out when the times do not differ between slices (GE
    stores one time per volume) or cannot be read. Tags that vary along an extra dim
    (``EchoTime`` of an ``echo`` dim) are not attrs: the sidecar's ``array.coords`` holds
    them.
    """
    fields: dict[str, Any] = {}
    for name, (keyword, factor) in BIDS_FROM_DICOM.items():
        value = volume.attrs.get(keyword)
        if value is None:
            continue
        if factor != 1.0:
            try:
                value = round(float(value) * factor, 9)
            except (TypeError, ValueError):
                continue
        fields[name] = value
    timing = slice_timing(volume)
    if timing is not None:
        fields["SliceTiming"] = timing
    return fields


def slice_timing(volume: xr.DataArray) -> list[float] | None:
    """Seconds from the first volume's first acquisition to each of its slices, or None.

    The first volume is index 0 of every dim beyond the spatial three; None when no
    :data:`SLICE_TIME_COORDS` varies along ``z`` or a time cannot be read.
    """
    for name in SLICE_TIME_COORDS:
        coord = volume.coords.get(name)
        if coord is None or "z" not in coord.dims or volume.sizes["z"] < 2:
            continue
        first = coord.isel({d: 0 for d in coord.dims if d != "z"}).values
        seconds = [_seconds_of_day(v) for v in first]
        if any(s is None for s in seconds):
            return None
        times = np.asarray(seconds, dtype=float)
        if np.ptp(times) == 0:
            return None
        return [round(float(t), 6) for t in times - times.min()]
    return None


def _seconds_of_day(value: Any) -> float | None:
    """Seconds since midnight of a DICOM TM (``HHMMSS.frac``) or DT (``YYYYMMDDHHMMSS``)."""
    text = str(value).strip()
    if len(text) >= 14 and "." not in text[:14] and text[:8].isdigit():
        text = text[8:]  # a DT: the time after the date
    text = text.split("+")[0].split("-")[0]
    try:
        whole, _, fraction = text.partition(".")
        if len(whole) < 2 or not whole.isdigit():
            return None
        hours, minutes, secs = int(whole[0:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
        return hours * 3600 + minutes * 60 + secs + float(f"0.{fraction or 0}")
    except ValueError:
        return None


def nifti_metadata(volume: xr.DataArray, *, deidentify: bool = False) -> dict[str, Any]:
    """The sidecar beside a NIfTI: :func:`series_metadata` with :func:`bids_fields` over
    its top level, so that a DICOM keyword BIDS also names (``RepetitionTime``) holds the
    BIDS value (in s); ``dicomarray.units`` says so."""
    meta = series_metadata(volume, deidentify=deidentify)
    meta.update(plain(bids_fields(volume)))
    meta["dicomarray"]["units"] = "BIDS"
    return meta


def plain(value: Any) -> Any:
    """JSON-safe nested dicts and lists: NaN and infinities become None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return json_safe(value)


def _is_keyword(name: str) -> bool:
    return name[:1].isupper()


def varying_tags(volume: xr.DataArray, *, deidentify: bool = False) -> dict[str, Any]:
    """Per-slice coordinates along ``z`` by DICOM keyword, as lists in slice order."""
    varying: dict[str, Any] = {}
    if all(name in volume.coords for name in POSITION_COORDS):
        positions = np.stack([volume[name].values for name in POSITION_COORDS], axis=1)
        varying["ImagePositionPatient"] = positions.tolist()
    for name, coord in volume.coords.items():
        if name in SPATIAL_DIMS or name in POSITION_COORDS or coord.dims != ("z",):
            continue
        if deidentify and is_identifying_coord(str(name)):
            continue
        varying[keyword_of_coord(str(name)) or str(name)] = coord.values.tolist()
    return varying


def extra_coords(volume: xr.DataArray, *, deidentify: bool = False) -> dict[str, Any]:
    """The coordinates of an n-D volume that ``varying`` cannot hold, by name.

    Those on dims beyond ``z``, ``y`` and ``x`` only (``t``, ``echo``, ``b_value`` ...) and
    those on ``z`` with such dims (``source_file`` of each frame of a ``(t, z)`` grid), each
    as ``{"dims", "values" (nested lists in that dim order), "attrs"}``. De-identified:
    without :func:`is_identifying_coord` ones, whatever their dims. Empty for a 3-D volume.
    """
    extra = {str(d) for d in volume.dims if d not in SPATIAL_DIMS}
    coords: dict[str, Any] = {}
    for name, coord in volume.coords.items():
        dims = {str(d) for d in coord.dims}
        if not dims & extra or not dims <= extra | {"z"}:
            continue
        if deidentify and is_identifying_coord(str(name)):
            continue
        coords[str(name)] = {
            "dims": [str(d) for d in coord.dims],
            "values": coord.values.tolist(),
            "attrs": dict(coord.attrs),
        }
    return coords


def volume_geometry(volume: xr.DataArray) -> dict[str, Any] | None:
    """The sidecar's ``geometry`` section: :meth:`VolumeGeometry.summary` and each ``z``.

    Everything comes from :class:`~dicomarray.geometry.VolumeGeometry`, so the sidecar
    says what every other part of the package says: spacing per dim in the array's order,
    with the slice step None when the stack has no one step (never a median), and the runs
    of one step with the slices each spans. None for an array without the coordinates
    ``z``, ``y`` and ``x`` (a geometry would be invented) or whose geometry is malformed.
    """
    if not all(dim in volume.coords and volume[dim].ndim == 1 for dim in SPATIAL_DIMS):
        return None
    try:
        summary = VolumeGeometry.of(volume).summary()
    except DicomArrayError:
        return None
    summary["slice_steps"] = _with_slice_ranges(summary["slice_steps"])
    return {"coordinate_system": "LPS", **summary, "z": volume["z"].values.tolist()}


def _with_slice_ranges(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run of one slice step with the first and last slice (array index) it spans:
    a run of ``n`` steps starting at slice ``a`` ends at slice ``a + n``."""
    ranged, first = [], 0
    for run in runs:
        ranged.append({**run, "first_slice": first, "last_slice": first + run["steps"]})
        first += run["steps"]
    return ranged


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as UTF-8 JSON (strict: no NaN) to ``path``."""
    text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def write_sidecar(
    volume: xr.DataArray,
    path: str | os.PathLike,
    *,
    deidentify: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write the JSON sidecar of :func:`series_metadata` on its own, atomically.

    Parameters
    ----------
    volume : xarray.DataArray
        A volume, typically from :func:`dicomarray.open_series`; no pixel data is read.
    path : str or os.PathLike
        The ``.json`` file to write.
    deidentify : bool, default False
        Leave out the attributes of :data:`DEIDENTIFY_KEYWORDS` and the report's UID and paths.
    overwrite : bool, default False
        Replace an existing file.
    """
    with staged(path, overwrite=overwrite) as output:
        write_json(output.partial, series_metadata(volume, deidentify=deidentify))
    return output.final
