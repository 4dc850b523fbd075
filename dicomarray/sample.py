"""Synthetic, deterministic brain CT studies for the demo, the tests and the benchmarks.

Nothing is downloaded. :func:`head_phantom` draws an ellipsoidal head in millimetres,
:func:`write_series` writes a volume as an axial CT series the way a scanner would (with the
awkward variants real data has: tilt, gaps, per-slice rescale, unsigned 12-bit storage, big
endian, RLE, shuffled file names), :func:`write_localizer` adds a lateral scout and
:func:`make_study` puts several patients together into a realistic study tree.

Every value is derived from the ``seed`` arguments, never from the clock, so the same call
writes byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

__all__ = [
    "SAMPLE_PATIENTS",
    "SUPPORTED_TRANSFER_SYNTAXES",
    "head_phantom",
    "make_series",
    "make_study",
    "write_localizer",
    "write_series",
]

logger = logging.getLogger(__name__)

SAMPLE_PATIENTS = 10
"""Number of patients :func:`make_study` writes by default."""

SUPPORTED_TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    RLELossless,
)
"""Transfer syntaxes :func:`write_series` can write."""

# Head semi-axes in mm as (z, y, x): 130 mm sup-inf, 190 mm ant-post, 150 mm left-right.
_HEAD_MM = (65.0, 95.0, 75.0)
_SKIN_MM = 5.0
_SKULL_MM = 7.0
_VENTRICLE_MM = (12.0, 22.0, 5.0)
_VENTRICLE_CENTRES_MM = ((12.0, -8.0, -11.0), (12.0, -8.0, 11.0))

# Labels double as indices into the lookup tables below; the nested shells are counted up.
_AIR, _SKIN, _BONE, _BRAIN, _CSF, _BLOOD = range(6)
_LABEL_HU = np.array([-1000.0, 40.0, 1000.0, 28.0, 5.0, 70.0], dtype=np.float32)
_LABEL_NOISE_SD = np.array([0.0, 3.0, 25.0, 3.0, 3.0, 3.0], dtype=np.float32)
_GREY_MINUS_WHITE = 12.0
_SLAB = 16

_UID_NAMESPACE = "dicomarray.sample"
_BASE_DATE = dt.date(2024, 3, 12)
_FILE_NAME_STYLES = ("random", "ordered", "uid")
_INSTANCE_ORDERS = ("ascending", "reversed", "random")
_LOCALIZER_FOV_MM = 300.0

# What a CT scanner writes into every image of a head examination.
_SCANNER_TAGS: dict[str, Any] = {
    "SpecificCharacterSet": "ISO_IR 100",
    "SOPClassUID": CTImageStorage,
    "Modality": "CT",
    "Manufacturer": "DICOMARRAY",
    "ManufacturerModelName": "Synthetic CT 64",
    "InstitutionName": "Example General Hospital",
    "ReferringPhysicianName": "SMITH^ANNA",
    "StationName": "CT01",
    "StudyDescription": "CT HEAD WO CONTRAST",
    "BodyPartExamined": "HEAD",
    "KVP": "120",
    "DataCollectionDiameter": "500",
    "SoftwareVersions": "dicomarray-sample 1",
    "TableHeight": "152",
    "RotationDirection": "CW",
    "ExposureTime": 1000,
    "XRayTubeCurrent": 300,
    "Exposure": 300,
    "FilterType": "HEAD",
    "ConvolutionKernel": "H30s",
    "PatientPosition": "HFS",
    "PositionReferenceIndicator": "",
    "SamplesPerPixel": 1,
    "PhotometricInterpretation": "MONOCHROME2",
    "BitsAllocated": 16,
}


# --------------------------------------------------------------------------------------------
# Phantom
# --------------------------------------------------------------------------------------------


def head_phantom(
    n_slices: int,
    rows: int = 512,
    columns: int = 512,
    *,
    slice_spacing: float = 5.0,
    pixel_spacing: tuple[float, float] = (0.45, 0.45),
    haemorrhage: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """Draw a synthetic head CT volume in Hounsfield units.

    The anatomy is defined in millimetres around the volume centre, so different spacings
    show the same head: skin (~40 HU, 5 mm), skull (~1000 HU, 7 mm), brain (white ~28 HU in
    the core rising smoothly to grey ~40 HU at the cortex), two lateral ventricles (~5 HU)
    and, optionally, a haemorrhage (~70 HU) in one hemisphere. Air is exactly -1000 HU.

    Parameters
    ----------
    n_slices, rows, columns : int
        Shape of the volume, axes (z, y, x); z runs from inferior to superior.
    slice_spacing : float, optional
        Distance between slice centres in mm.
    pixel_spacing : tuple of float, optional
        (row spacing, column spacing) in mm, in DICOM ``PixelSpacing`` order.
    haemorrhage : bool, optional
        Add a bright blob in one hemisphere. The noise does not depend on this flag.
    seed : int, optional
        Seed of the noise and of the haemorrhage's side, place and size.

    Returns
    -------
    numpy.ndarray
        int16 array of shape (n_slices, rows, columns).

    Examples
    --------
    >>> head_phantom(4, 64, 64).shape
    (4, 64, 64)
    """
    _check_shape(n_slices, rows, columns)
    _check_positive(slice_spacing=slice_spacing, pixel_spacing=min(pixel_spacing))
    rng = np.random.default_rng(seed)
    # Drawn even without a haemorrhage so that the flag leaves the noise unchanged.
    site = _haemorrhage_site(rng)
    axes = (
        _axis_mm(n_slices, slice_spacing),
        _axis_mm(rows, pixel_spacing[0]),
        _axis_mm(columns, pixel_spacing[1]),
    )
    volume = np.full((n_slices, rows, columns), -1000, dtype=np.int16)
    # Only the head's bounding box holds anything but air, so only it is computed, in slabs
    # that keep the float32 temporaries small.
    box = _box(axes, (0.0, 0.0, 0.0), _HEAD_MM)
    if box is None:
        return volume
    for start in range(box[0].start, box[0].stop, _SLAB):
        slab = (slice(start, min(start + _SLAB, box[0].stop)), box[1], box[2])
        slab_axes = tuple(a[s] for a, s in zip(axes, slab, strict=True))
        volume[slab] = _head_hu(slab_axes, site if haemorrhage else None, rng)
    return volume


def _head_hu(
    axes: tuple[np.ndarray, ...],
    blood: tuple[tuple[float, float, float], float] | None,
    rng: np.random.Generator,
) -> np.ndarray:
    labels, q_brain = _label_volume(axes)
    if blood is not None:
        _paint(labels, axes, blood[0], (blood[1],) * 3, _BLOOD)
    hu = _LABEL_HU[labels]
    hu += _cortex_ramp(q_brain) * (labels == _BRAIN)
    noise = rng.standard_normal(labels.shape, dtype=np.float32)
    hu += noise * _LABEL_NOISE_SD[labels]
    np.rint(hu, out=hu)
    np.clip(hu, -32768, 32767, out=hu)
    return hu.astype(np.int16)


def _check_shape(*sizes: int) -> None:
    if any(int(s) < 1 for s in sizes):
        raise ValueError(f"volume sizes must be at least 1, got {sizes}")


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")


def _axis_mm(n: int, spacing: float) -> np.ndarray:
    return ((np.arange(n, dtype=np.float32) - (n - 1) / 2) * spacing).astype(np.float32)


def _grid(axes: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z, y, x = axes
    return z[:, None, None], y[None, :, None], x[None, None, :]


def _ellipsoid_q(
    axes: Sequence[np.ndarray], centre: Sequence[float], semi_axes: Sequence[float]
) -> np.ndarray:
    # Squared normalised radius (<= 1 inside); the axes broadcast, so only the last sum is 3-D.
    z, y, x = _grid(axes)
    qz = ((z - np.float32(centre[0])) / np.float32(semi_axes[0])) ** 2
    qy = ((y - np.float32(centre[1])) / np.float32(semi_axes[1])) ** 2
    qx = ((x - np.float32(centre[2])) / np.float32(semi_axes[2])) ** 2
    return (qz + qy) + qx


def _box(
    axes: Sequence[np.ndarray], centre: Sequence[float], semi_axes: Sequence[float]
) -> tuple[slice, ...] | None:
    slices = []
    for axis, c, a in zip(axes, centre, semi_axes, strict=True):
        inside = np.flatnonzero(np.abs(axis - c) <= a)
        if inside.size == 0:
            return None
        slices.append(slice(int(inside[0]), int(inside[-1]) + 1))
    return tuple(slices)


def _paint(
    labels: np.ndarray,
    axes: Sequence[np.ndarray],
    centre: Sequence[float],
    semi_axes: Sequence[float],
    label: int,
) -> None:
    # Small structures are drawn inside brain only, and only within their own bounding box.
    box = _box(axes, centre, semi_axes)
    if box is None:
        return
    sub_axes = tuple(a[s] for a, s in zip(axes, box, strict=True))
    inside = _ellipsoid_q(sub_axes, centre, semi_axes) <= 1.0
    region = labels[box]
    region[inside & (region == _BRAIN)] = label


def _shrunk(semi_axes: Sequence[float], by_mm: float) -> tuple[float, ...]:
    return tuple(a - by_mm for a in semi_axes)


def _label_volume(axes: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    origin = (0.0, 0.0, 0.0)
    q_head = _ellipsoid_q(axes, origin, _HEAD_MM)
    labels = (q_head <= 1.0).astype(np.uint8)
    labels += _ellipsoid_q(axes, origin, _shrunk(_HEAD_MM, _SKIN_MM)) <= 1.0
    q_brain = _ellipsoid_q(axes, origin, _shrunk(_HEAD_MM, _SKIN_MM + _SKULL_MM))
    # The shells are nested, so counting the ellipsoids a voxel lies in gives its label.
    labels += q_brain <= 1.0
    for centre in _VENTRICLE_CENTRES_MM:
        _paint(labels, axes, centre, _VENTRICLE_MM, _CSF)
    return labels, q_brain


def _cortex_ramp(q_brain: np.ndarray) -> np.ndarray:
    # White matter in the core, grey matter in the outer ribbon, a smooth blend in between.
    ramp = np.clip((q_brain - np.float32(0.45)) / np.float32(0.4), 0.0, 1.0)
    return ramp * np.float32(_GREY_MINUS_WHITE)


def _haemorrhage_site(rng: np.random.Generator) -> tuple[tuple[float, float, float], float]:
    side = 1.0 if rng.random() < 0.5 else -1.0
    centre = (rng.uniform(0.0, 25.0), rng.uniform(-30.0, 20.0), side * rng.uniform(30.0, 38.0))
    return centre, float(rng.uniform(8.0, 12.0))


def _localizer_projection(rows: int, columns: int, spacing: float) -> np.ndarray:
    # Attenuation (HU + 1000) integrated along x, through each nested ellipsoid analytically.
    z = -_axis_mm(rows, spacing)[:, None]
    y = _axis_mm(columns, spacing)[None, :]
    shells = [
        (_HEAD_MM, (0.0, 0.0, 0.0), _LABEL_HU[_SKIN] + 1000.0),
        (_shrunk(_HEAD_MM, _SKIN_MM), (0.0, 0.0, 0.0), _LABEL_HU[_BONE] - _LABEL_HU[_SKIN]),
        (
            _shrunk(_HEAD_MM, _SKIN_MM + _SKULL_MM),
            (0.0, 0.0, 0.0),
            _LABEL_HU[_BRAIN] - _LABEL_HU[_BONE],
        ),
    ]
    shells += [
        (_VENTRICLE_MM, c, _LABEL_HU[_CSF] - _LABEL_HU[_BRAIN]) for c in _VENTRICLE_CENTRES_MM
    ]
    total = np.zeros((rows, columns), dtype=np.float64)
    for semi, centre, delta in shells:
        inside = 1.0 - ((z - centre[0]) / semi[0]) ** 2 - ((y - centre[1]) / semi[1]) ** 2
        total += float(delta) * 2.0 * semi[2] * np.sqrt(np.clip(inside, 0.0, None))
    return total


# --------------------------------------------------------------------------------------------
# Writing series
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Storage:
    """How HU become stored values: rescale per slice and the stored integer layout."""

    slopes: np.ndarray
    intercepts: np.ndarray
    bits_stored: int
    signed: bool

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.int16 if self.signed else np.uint16)

    @property
    def limits(self) -> tuple[int, int]:
        if self.signed:
            return -(2 ** (self.bits_stored - 1)), 2 ** (self.bits_stored - 1) - 1
        return 0, 2**self.bits_stored - 1

    def stored(self, hu: np.ndarray, i: int) -> np.ndarray:
        values = np.rint((hu.astype(np.float64) - self.intercepts[i]) / self.slopes[i])
        return values.astype(self.dtype)


def write_series(
    out_dir: str | os.PathLike,
    hu: np.ndarray,
    *,
    pixel_spacing: tuple[float, float] = (0.45, 0.45),
    slice_spacing: float = 5.0,
    origin: tuple[float, float, float] | None = None,
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    tilt_degrees: float = 0.0,
    slope: float = 1.0,
    intercept: float = -1024.0,
    bits_stored: int = 16,
    signed: bool = True,
    per_slice_rescale: bool = False,
    transfer_syntax: str = ExplicitVRLittleEndian,
    names: str = "random",
    instance_numbers: str = "ascending",
    slice_location_sign: int = 1,
    tags: Mapping[str, Any] | None = None,
    positions: Sequence[float] | None = None,
    first_instance: int = 1,
    seed: int = 0,
) -> list[pathlib.Path]:
    """Write a HU volume as a CT Image Storage series, one DICOM Part-10 file per slice.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Folder to write into; created if missing.
    hu : numpy.ndarray
        Volume in HU, shape (n_slices, rows, columns); slice 0 is the most inferior.
    pixel_spacing : tuple of float, optional
        (row spacing, column spacing) in mm, in DICOM ``PixelSpacing`` order.
    slice_spacing : float, optional
        Distance between slices in mm; also written as ``SliceThickness``.
    origin : tuple of float, optional
        ``ImagePositionPatient`` of slice 0. By default the stack is centred on the patient
        origin: the image centre lies at x = y = 0 and the middle of the stack at z = 0.
    orientation : tuple of float, optional
        ``ImageOrientationPatient`` (row direction cosines, then column direction cosines).
    tilt_degrees : float, optional
        Gantry tilt: slices step along the slice normal rotated by this angle about the row
        direction; also written as ``GantryDetectorTilt``.
    slope, intercept : float, optional
        ``RescaleSlope`` and ``RescaleIntercept``; stored = round((hu - intercept) / slope).
    bits_stored : int, optional
        ``BitsStored`` (1 to 16); ``BitsAllocated`` is always 16.
    signed : bool, optional
        Store int16 (``PixelRepresentation`` 1) or uint16 (0).
    per_slice_rescale : bool, optional
        Give each slice its own rescale: the slope alternates between ``slope`` and
        ``slope / 2`` and the intercept steps down by 0, 16 and 32 HU.
    transfer_syntax : str, optional
        One of :data:`SUPPORTED_TRANSFER_SYNTAXES`.
    names : {"random", "ordered", "uid"}, optional
        File names: ``IM_<8 hex>.dcm`` hashed from the SOP Instance UID (not in slice order),
        ``IM_0001.dcm`` ... in slice order, or ``<SOPInstanceUID>.dcm``.
    instance_numbers : {"ascending", "reversed", "random"}, optional
        ``InstanceNumber`` 1 for the most inferior slice, for the most superior one, or a
        seeded shuffle.
    slice_location_sign : {1, -1}, optional
        -1 writes ``SliceLocation`` with the opposite sign of the position along the normal.
    tags : mapping, optional
        DICOM keywords and values set in every file, overriding the defaults (patient, study
        and series identity, descriptions, dates ...).
    positions : sequence of float, optional
        Position of each slice along the step direction in mm, relative to ``origin``, to
        make gaps or uneven spacing; by default ``i * slice_spacing``.
    first_instance : int, optional
        The lowest ``InstanceNumber``, for a series written in several calls (the volumes
        of a 4-D series).
    seed : int, optional
        Seed of the default patient, study and UIDs and of shuffled instance numbers.

    Returns
    -------
    list of pathlib.Path
        The written files; item ``i`` holds slice ``hu[i]``.

    Raises
    ------
    ValueError
        If a stored value does not fit ``bits_stored`` / ``signed``, the transfer syntax is not
        supported, or an argument is malformed.
    """
    hu = _check_volume(hu)
    transfer_syntax = _check_transfer_syntax(transfer_syntax)
    _check_choice("names", names, _FILE_NAME_STYLES)
    _check_choice("instance_numbers", instance_numbers, _INSTANCE_ORDERS)
    _check_choice("slice_location_sign", slice_location_sign, (1, -1))
    storage = _storage(len(hu), slope, intercept, bits_stored, signed, per_slice=per_slice_rescale)
    _check_stored_range(hu, storage)
    ipp, locations = _slice_geometry(
        hu.shape, pixel_spacing, slice_spacing, origin, orientation, tilt_degrees, positions
    )
    tags = dict(tags or {})
    header = _header_values(seed, tags, kind="axial", shape=hu.shape)
    header.update(_axial_values(hu.shape, pixel_spacing, slice_spacing, orientation))
    header.update(GantryDetectorTilt=_ds(tilt_degrees), **_pixel_values(storage))
    if not per_slice_rescale:
        header.update(RescaleIntercept=_ds(intercept), RescaleSlope=_ds(slope))
    header.update(tags)
    slices = _SliceValues(
        series_uid=header["SeriesInstanceUID"],
        positions=ipp,
        locations=slice_location_sign * locations,
        numbers=_instance_numbers(len(hu), instance_numbers, seed) + (first_instance - 1),
        start_seconds=_series_start_seconds(header),
        storage=storage if per_slice_rescale else None,
        seed=seed,
    )
    return _write_slices(
        pathlib.Path(out_dir),
        hu,
        _dataset(header),
        slices,
        storage,
        tags,
        names=names,
        transfer_syntax=transfer_syntax,
    )


@dataclass(frozen=True)
class _SliceValues:
    """The header values that change from slice to slice."""

    series_uid: str
    positions: np.ndarray
    locations: np.ndarray
    numbers: np.ndarray
    start_seconds: float
    storage: _Storage | None  # set only when each slice has its own rescale
    seed: int = 0

    def __call__(self, i: int) -> dict[str, Any]:
        # Half a second per slice, like a sequential acquisition.
        time = _tm(self.start_seconds + 5.0 + 0.5 * i)
        values = {
            # the seed too: two series sharing a Series UID must not share instance UIDs
            "SOPInstanceUID": _uid(self.series_uid, "instance", self.seed, i),
            "InstanceNumber": int(self.numbers[i]),
            "ImagePositionPatient": [_ds(v) for v in self.positions[i]],
            "SliceLocation": _ds(self.locations[i]),
            "AcquisitionTime": time,
            "ContentTime": time,
        }
        if self.storage is not None:
            values["RescaleIntercept"] = _ds(self.storage.intercepts[i])
            values["RescaleSlope"] = _ds(self.storage.slopes[i])
        return values


def _write_slices(
    out: pathlib.Path,
    hu: np.ndarray,
    template: Dataset,
    slices: _SliceValues,
    storage: _Storage,
    tags: Mapping[str, Any],
    *,
    names: str,
    transfer_syntax: str,
) -> list[pathlib.Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths: list[pathlib.Path] = []
    used: set[str] = set()
    for i in range(len(hu)):
        ds = _slice_dataset(template, slices(i), skip=tags.keys())
        path = out / _file_name(names, i, ds.SOPInstanceUID, used)
        _save(ds, path, storage.stored(hu[i], i), transfer_syntax)
        paths.append(path)
    logger.debug("wrote %d slices of %dx%d to %s", *hu.shape, out)
    return paths


def _check_volume(hu: np.ndarray) -> np.ndarray:
    hu = np.asarray(hu)
    if hu.ndim != 3 or 0 in hu.shape:
        raise ValueError(f"hu must be a non-empty 3-D array (z, y, x), got shape {hu.shape}")
    if not np.issubdtype(hu.dtype, np.number) or np.issubdtype(hu.dtype, np.complexfloating):
        raise ValueError(f"hu must hold real numbers, got dtype {hu.dtype}")
    if np.issubdtype(hu.dtype, np.floating) and not np.isfinite(hu).all():
        raise ValueError("hu holds NaN or infinite values")
    return hu


def _check_transfer_syntax(transfer_syntax: str) -> pydicom.uid.UID:
    uid = pydicom.uid.UID(str(transfer_syntax))
    if uid not in SUPPORTED_TRANSFER_SYNTAXES:
        supported = ", ".join(f"{s.name} ({s})" for s in SUPPORTED_TRANSFER_SYNTAXES)
        raise ValueError(
            f"transfer syntax {uid.name} ({uid}) is not supported; supported are: {supported}"
        )
    return uid


def _check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def _storage(
    n: int, slope: float, intercept: float, bits_stored: int, signed: bool, *, per_slice: bool
) -> _Storage:
    if not (math.isfinite(slope) and slope != 0 and math.isfinite(intercept)):
        raise ValueError(
            f"slope must be finite and non-zero, intercept finite: {slope}, {intercept}"
        )
    if not 1 <= int(bits_stored) <= 16:
        raise ValueError(f"bits_stored must be between 1 and 16, got {bits_stored}")
    index = np.arange(n)
    slopes = np.full(n, float(slope))
    intercepts = np.full(n, float(intercept))
    if per_slice:
        slopes = np.where(index % 2 == 0, slopes, slopes / 2)
        intercepts = intercepts - 16.0 * (index % 3)
    return _Storage(slopes, intercepts, int(bits_stored), bool(signed))


def _check_stored_range(hu: np.ndarray, storage: _Storage) -> None:
    # The rescale is monotonic, so each slice's extremes bound its stored values.
    extremes = np.stack([hu.min(axis=(1, 2)), hu.max(axis=(1, 2))]).astype(np.float64)
    stored = np.rint((extremes - storage.intercepts) / storage.slopes)
    low, high = storage.limits
    bad = np.flatnonzero((stored.min(axis=0) < low) | (stored.max(axis=0) > high))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"slice {i}: stored values {stored[:, i].min():.0f}..{stored[:, i].max():.0f} do not "
            f"fit {storage.bits_stored} bits {'signed' if storage.signed else 'unsigned'} "
            f"({low}..{high}) with slope {storage.slopes[i]} and intercept "
            f"{storage.intercepts[i]}"
        )


def _slice_geometry(
    shape: tuple[int, ...],
    pixel_spacing: tuple[float, float],
    slice_spacing: float,
    origin: tuple[float, float, float] | None,
    orientation: Sequence[float],
    tilt_degrees: float,
    positions: Sequence[float] | None,
) -> tuple[np.ndarray, np.ndarray]:
    n, rows, columns = shape
    _check_positive(slice_spacing=slice_spacing, pixel_spacing=min(pixel_spacing))
    row_cos, col_cos, normal = _directions(orientation)
    steps = _positions(n, slice_spacing, positions)
    t = math.radians(tilt_degrees)
    # Rodrigues' rotation of the normal about row_cos; row_cos x normal is -col_cos.
    step_dir = math.cos(t) * normal - math.sin(t) * col_cos
    if origin is None:
        centre_offset = (columns - 1) * pixel_spacing[1] * row_cos
        centre_offset = centre_offset + (rows - 1) * pixel_spacing[0] * col_cos
        start = -centre_offset / 2 - step_dir * (steps[0] + steps[-1]) / 2
    else:
        start = np.asarray(origin, dtype=np.float64)
        if start.shape != (3,):
            raise ValueError(f"origin must hold 3 values, got {origin!r}")
    ipp = start + steps[:, None] * step_dir
    return ipp, ipp @ normal


def _directions(orientation: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cosines = np.asarray(orientation, dtype=np.float64)
    if cosines.shape != (6,):
        raise ValueError(f"orientation must hold 6 direction cosines, got {orientation!r}")
    row_cos, col_cos = cosines[:3], cosines[3:]
    normal = np.cross(row_cos, col_cos)
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        raise ValueError(f"orientation row and column directions are parallel: {orientation!r}")
    return row_cos, col_cos, normal / norm


def _positions(n: int, slice_spacing: float, positions: Sequence[float] | None) -> np.ndarray:
    if positions is None:
        return np.arange(n, dtype=np.float64) * slice_spacing
    steps = np.asarray(positions, dtype=np.float64)
    if steps.shape != (n,) or not np.all(np.isfinite(steps)):
        raise ValueError(f"positions must hold {n} finite values, got {len(steps)}")
    return steps


def _instance_numbers(n: int, order: str, seed: int) -> np.ndarray:
    if order == "reversed":
        return np.arange(n, 0, -1)
    if order == "random":
        return np.random.default_rng([seed, 11]).permutation(n) + 1
    return np.arange(1, n + 1)


def _axial_values(
    shape: tuple[int, ...],
    pixel_spacing: tuple[float, float],
    slice_spacing: float,
    orientation: Sequence[float],
) -> dict[str, Any]:
    _, rows, columns = shape
    return {
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
        "SeriesNumber": 2,
        "SeriesDescription": f"HEAD {slice_spacing:g}mm H30s",
        "SliceThickness": _ds(slice_spacing),
        "ReconstructionDiameter": _ds(columns * pixel_spacing[1]),
        "ImageOrientationPatient": [_ds(v) for v in orientation],
        "Rows": rows,
        "Columns": columns,
        "PixelSpacing": [_ds(pixel_spacing[0]), _ds(pixel_spacing[1])],
        "WindowCenter": ["40", "600"],
        "WindowWidth": ["80", "2800"],
        "WindowCenterWidthExplanation": ["BRAIN", "BONE"],
        "RescaleType": "HU",
    }


def _pixel_values(storage: _Storage) -> dict[str, Any]:
    return {
        "BitsStored": storage.bits_stored,
        "HighBit": storage.bits_stored - 1,
        "PixelRepresentation": int(storage.signed),
    }


# --------------------------------------------------------------------------------------------
# Header values shared by series and localizer
# --------------------------------------------------------------------------------------------


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=[_UID_NAMESPACE, *(str(p) for p in parts)])


def _ds(value: float) -> str:
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    # Rounding to a micrometre keeps the text readable and within DS's 16 characters.
    return format_number_as_ds(round(value, 6))


def _tm(seconds: float) -> str:
    seconds = round(seconds, 6) % 86400
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours):02d}{int(minutes):02d}{secs:09.6f}"


def _series_start_seconds(header: Mapping[str, Any]) -> float:
    text = str(header.get("SeriesTime", ""))
    try:
        return int(text[0:2]) * 3600 + int(text[2:4]) * 60 + float(text[4:] or 0)
    except ValueError:
        return 9 * 3600.0


def _default_patient(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 101])
    study_date = _BASE_DATE + dt.timedelta(days=int(rng.integers(0, 365)))
    birth_date = study_date - dt.timedelta(days=int(rng.integers(20 * 365, 85 * 365)))
    sex = "M" if rng.random() < 0.5 else "F"
    return {
        "PatientName": "DOE^JOHN" if sex == "M" else "DOE^JANE",
        "PatientID": f"PAT{seed}",
        "PatientBirthDate": f"{birth_date:%Y%m%d}",
        "PatientSex": sex,
        "StudyDate": f"{study_date:%Y%m%d}",
        "StudyTime": _tm(int(rng.integers(8 * 3600, 18 * 3600))).split(".")[0],
        "AccessionNumber": f"ACC{int(rng.integers(10**6, 10**7))}",
        "StudyID": "1",
    }


def _age(birth: str, on: str) -> str | None:
    try:
        born = dt.datetime.strptime(birth, "%Y%m%d").date()
        day = dt.datetime.strptime(on, "%Y%m%d").date()
    except ValueError:
        return None
    years = day.year - born.year - ((day.month, day.day) < (born.month, born.day))
    return f"{max(years, 0):03d}Y"


def _header_values(
    seed: int, tags: Mapping[str, Any], *, kind: str, shape: tuple[int, ...]
) -> dict[str, Any]:
    _check_keywords(tags)
    values: dict[str, Any] = {**_SCANNER_TAGS, **_default_patient(seed), **tags}
    age = _age(str(values["PatientBirthDate"]), str(values["StudyDate"]))
    if age and "PatientAge" not in tags:
        values["PatientAge"] = age
    study_uid = values.setdefault("StudyInstanceUID", _uid("study", seed))
    values.setdefault("SeriesInstanceUID", _uid(study_uid, "series", kind, seed, shape))
    values.setdefault("FrameOfReferenceUID", _uid(study_uid, "frame"))
    start = _series_start_seconds({"SeriesTime": values["StudyTime"]})
    offset = 60.0 if kind == "localizer" else 120.0
    values.setdefault("SeriesTime", _tm(start + offset).split(".")[0])
    for key in ("SeriesDate", "AcquisitionDate", "ContentDate"):
        values.setdefault(key, values["StudyDate"])
    values.setdefault("AcquisitionNumber", 1)
    return values


def _check_keywords(tags: Mapping[str, Any]) -> None:
    unknown = [k for k in tags if tag_for_keyword(k) is None]
    if unknown:
        raise ValueError(f"tags holds names that are not DICOM keywords: {unknown}")


def _dataset(values: Mapping[str, Any]) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _slice_dataset(
    template: Dataset, per_slice: Mapping[str, Any], *, skip: Iterable[str]
) -> Dataset:
    # The template's elements are shared, never mutated: per-slice values go into new elements.
    ds = Dataset()
    ds.update(template)
    skip = set(skip)
    for keyword, value in per_slice.items():
        if keyword not in skip:
            setattr(ds, keyword, value)
    return ds


def _file_name(style: str, i: int, sop_uid: str, used: set[str]) -> str:
    if style == "ordered":
        name = f"IM_{i + 1:04d}.dcm"
    elif style == "uid":
        name = f"{sop_uid}.dcm"
    else:
        digest = hashlib.sha256(sop_uid.encode()).hexdigest().upper()
        width = 8
        name = f"IM_{digest[:width]}.dcm"
        while name in used:
            width += 2
            name = f"IM_{digest[:width]}.dcm"
    used.add(name)
    return name


def _save(ds: Dataset, path: pathlib.Path, pixels: np.ndarray, transfer_syntax: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = pydicom.uid.UID(transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "DICOMARRAY"
    ds.file_meta = meta
    if transfer_syntax == RLELossless:
        ds.compress(RLELossless, pixels, generate_instance_uid=False)
    else:
        order: Literal[">", "<"] = ">" if transfer_syntax == ExplicitVRBigEndian else "<"
        data = pixels.astype(pixels.dtype.newbyteorder(order), copy=False).tobytes()
        ds.add_new(0x7FE00010, "OW", data)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


# --------------------------------------------------------------------------------------------
# Localizer, convenience series and study tree
# --------------------------------------------------------------------------------------------


def write_localizer(
    out_dir: str | os.PathLike,
    *,
    tags: Mapping[str, Any] | None = None,
    rows: int = 512,
    columns: int = 512,
    seed: int = 0,
) -> pathlib.Path:
    """Write one lateral scout (localizer) image of the synthetic head.

    The picture is the phantom's attenuation integrated from side to side, in a sagittal
    plane (``ImageOrientationPatient`` 0/1/0/0/0/-1: columns run posterior, rows run down)
    with a 300 mm field of view, stored as unsigned 12-bit values.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Folder to write into; created if missing.
    tags : mapping, optional
        DICOM keywords and values overriding the defaults; pass the axial series' patient
        and study tags (including ``StudyInstanceUID``) to put the scout in the same study.
    rows, columns : int, optional
        Image size.
    seed : int, optional
        Seed of the default patient, study, UIDs, file name and noise.

    Returns
    -------
    pathlib.Path
        The written file, named ``IM_<8 hex>.dcm``.
    """
    _check_shape(rows, columns)
    spacing = _LOCALIZER_FOV_MM / max(rows, columns)
    tags = dict(tags or {})
    header = _header_values(seed, tags, kind="localizer", shape=(rows, columns))
    header.update(_localizer_values(rows, columns, spacing), **tags)
    header.setdefault("SOPInstanceUID", _uid(header["SeriesInstanceUID"], "localizer", seed))
    header.setdefault("AcquisitionTime", header["SeriesTime"])
    header.setdefault("ContentTime", header["SeriesTime"])
    ds = _dataset(header)
    projection = _localizer_projection(rows, columns, spacing)
    peak = projection.max()
    scaled = projection * (3000.0 / peak) if peak > 0 else projection
    noise = np.random.default_rng([seed, 23]).normal(0.0, 4.0, scaled.shape)
    pixels = np.clip(np.rint(scaled + noise), 0, 4095).astype(np.uint16)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / _file_name("random", 0, ds.SOPInstanceUID, set())
    _save(ds, path, pixels, ExplicitVRLittleEndian)
    logger.debug("wrote localizer %s", path)
    return path


def _localizer_values(rows: int, columns: int, spacing: float) -> dict[str, Any]:
    top = (rows - 1) * spacing / 2
    left = -(columns - 1) * spacing / 2
    return {
        "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"],
        "SeriesNumber": 1,
        "SeriesDescription": "TOPOGRAM 0.6 T20s",
        "InstanceNumber": 1,
        "SliceThickness": "0.6",
        "ReconstructionDiameter": _ds(columns * spacing),
        "GantryDetectorTilt": "0",
        "XRayTubeCurrent": 50,
        "Exposure": 50,
        "ConvolutionKernel": "T20s",
        "ImagePositionPatient": ["0", _ds(left), _ds(top)],
        "ImageOrientationPatient": ["0", "1", "0", "0", "0", "-1"],
        "SliceLocation": "0",
        "Rows": rows,
        "Columns": columns,
        "PixelSpacing": [_ds(spacing), _ds(spacing)],
        "BitsStored": 12,
        "HighBit": 11,
        "PixelRepresentation": 0,
        "WindowCenter": "1500",
        "WindowWidth": "3000",
        "RescaleIntercept": "0",
        "RescaleSlope": "1",
        "RescaleType": "US",
    }


def make_series(
    out_dir: str | os.PathLike,
    n_slices: int = 40,
    *,
    rows: int = 512,
    columns: int = 512,
    seed: int = 0,
    **write_kwargs: Any,
) -> list[pathlib.Path]:
    """Draw a head phantom and write it as an axial CT series.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Folder to write into; created if missing.
    n_slices, rows, columns : int, optional
        Shape of the volume.
    seed : int, optional
        Seed of the phantom noise and of the series' UIDs.
    **write_kwargs
        Forwarded to :func:`write_series` (``slice_spacing``, ``pixel_spacing``,
        ``bits_stored``, ``signed``, ``intercept``, ``transfer_syntax`` ...); ``haemorrhage``
        is passed to :func:`head_phantom` instead.

    Returns
    -------
    list of pathlib.Path
        The written files in slice order, most inferior first.
    """
    haemorrhage = bool(write_kwargs.pop("haemorrhage", False))
    hu = head_phantom(
        n_slices,
        rows,
        columns,
        slice_spacing=write_kwargs.get("slice_spacing", 5.0),
        pixel_spacing=write_kwargs.get("pixel_spacing", (0.45, 0.45)),
        haemorrhage=haemorrhage,
        seed=seed,
    )
    return write_series(out_dir, hu, seed=seed, **write_kwargs)


@dataclass(frozen=True)
class _PatientPlan:
    """Everything that differs between the patients of :func:`make_study`."""

    number: int
    seed: int
    n_slices: int
    slice_spacing: float
    pixel_spacing: float
    haemorrhage: bool
    slope: float
    intercept: float
    bits_stored: int
    signed: bool
    sex: str
    birth_date: dt.date
    study_date: dt.date
    study_seconds: int

    @property
    def folder(self) -> str:
        return f"{self.number:03d}"

    @property
    def study_folder(self) -> str:
        return f"CT_HEAD_{self.study_date:%Y%m%d}"

    @property
    def series_folder(self) -> str:
        return f"2_HEAD_{self.slice_spacing:g}mm"

    def tags(self, study_seed: int) -> dict[str, Any]:
        first = "JOHN" if self.sex == "M" else "JANE"
        return {
            "PatientName": f"DOE^{first}{self.number:03d}",
            "PatientID": f"PAT{self.number:03d}",
            "PatientBirthDate": f"{self.birth_date:%Y%m%d}",
            "PatientSex": self.sex,
            "StudyDate": f"{self.study_date:%Y%m%d}",
            "StudyTime": _tm(self.study_seconds).split(".")[0],
            "StudyInstanceUID": _uid("study", study_seed, self.number),
            "AccessionNumber": f"A{self.study_date:%y%m%d}{self.number:03d}",
            "StudyID": str(self.number),
        }


def _plan_study(
    n_patients: int, seed: int, n_slices: tuple[int, int] | None = None
) -> list[_PatientPlan]:
    low, high = n_slices if n_slices is not None else (24, 40)
    if not 1 <= low <= high:
        raise ValueError(f"n_slices must be a (low, high) range with 1 <= low <= high: {n_slices}")
    rng = np.random.default_rng([seed, 31])
    plans = [_plan_patient(i, rng, low, high) for i in range(n_patients)]
    n_bleeds = max(2, n_patients // 4) if n_patients >= 4 else n_patients // 2
    bleeds = set(rng.choice(n_patients, size=n_bleeds, replace=False).tolist())
    return [_PatientPlan(**{**vars(p), "haemorrhage": i in bleeds}) for i, p in enumerate(plans)]


def _plan_patient(i: int, rng: np.random.Generator, low: int, high: int) -> _PatientPlan:
    spacing = float(rng.choice([2.5, 3.0, 5.0]))
    coverage = rng.uniform(120.0, 150.0)
    study_date = _BASE_DATE + dt.timedelta(days=int(rng.integers(0, 120)))
    # Patient three is stored like an older scanner: unsigned 12-bit, intercept -1000;
    # patient six uses a half-HU slope.
    storage = {2: (1.0, -1000.0, 12, False), 5: (0.5, -2048.0, 16, True)}
    slope, intercept, bits, signed = storage.get(i, (1.0, -1024.0, 16, True))
    return _PatientPlan(
        number=41 + i,
        seed=int(rng.integers(0, 2**31 - 1)),
        n_slices=int(np.clip(round(coverage / spacing), low, high)),
        slice_spacing=spacing,
        pixel_spacing=round(float(rng.uniform(0.40, 0.49)), 3),
        haemorrhage=False,
        slope=slope,
        intercept=intercept,
        bits_stored=bits,
        signed=signed,
        sex="M" if rng.random() < 0.5 else "F",
        birth_date=study_date - dt.timedelta(days=int(rng.integers(20 * 365, 90 * 365))),
        study_date=study_date,
        study_seconds=int(rng.integers(8 * 3600, 18 * 3600)),
    )


def make_study(
    root: str | os.PathLike,
    n_patients: int = SAMPLE_PATIENTS,
    seed: int = 0,
    *,
    n_slices: tuple[int, int] | None = None,
    rows: int = 512,
    columns: int = 512,
    perfusion: bool = False,
) -> pathlib.Path:
    """Write a synthetic brain CT study tree, byte-identical for the same arguments.

    The layout is ``root/<041...>/CT_HEAD_<date>/{1_SCOUT,2_HEAD_<spacing>mm}/IM_<hex>.dcm``
    plus ``README.txt`` and ``.DS_Store`` at the root and a ``Thumbs.db`` in the first study
    folder. Patients differ in slice spacing (2.5, 3 or 5 mm), slice count (about 120-150 mm of
    coverage, bounded by `n_slices`), pixel spacing (0.40-0.49 mm), dates and demographics.
    Some have a haemorrhage (at least two when there are four patients or more), the third is
    stored unsigned 12-bit with intercept -1000 and the sixth with slope 0.5 and intercept
    -2048. ``README.txt`` lists each patient's parameters.

    Parameters
    ----------
    root : str or os.PathLike
        Folder to write into; created if missing. Existing files are overwritten, never
        deleted.
    n_patients : int, optional
        Number of patients.
    seed : int, optional
        Seed of everything that varies between patients and studies.
    n_slices : tuple of int, optional
        (low, high) bounds of the slice count per series; default (24, 40).
    rows, columns : int, optional
        Image size of every image (but the perfusion series').
    perfusion : bool, default False
        Add to the first patient's study a CT perfusion series, ``3_PERFUSION``
        (:func:`dicomarray.sample_perfusion.make_perfusion_series` with its defaults).

    Returns
    -------
    pathlib.Path
        ``root``.
    """
    root_path = pathlib.Path(root)
    root_path.mkdir(parents=True, exist_ok=True)
    plans = _plan_study(n_patients, seed, n_slices)
    for plan in plans:
        _write_patient(root_path, plan, seed, rows, columns)
    if perfusion and plans:
        from .sample_perfusion import make_perfusion_series  # it builds on this module

        first = plans[0]
        study_dir = root_path / first.folder / first.study_folder
        make_perfusion_series(study_dir / "3_PERFUSION", tags=first.tags(seed), seed=first.seed)
    _write_clutter(root_path, plans, seed)
    logger.info("wrote a synthetic study of %d patients to %s", n_patients, root_path)
    return root_path


def _write_patient(
    root: pathlib.Path, plan: _PatientPlan, study_seed: int, rows: int, columns: int
) -> None:
    study_dir = root / plan.folder / plan.study_folder
    tags = plan.tags(study_seed)
    write_localizer(study_dir / "1_SCOUT", tags=tags, rows=rows, columns=columns, seed=plan.seed)
    hu = head_phantom(
        plan.n_slices,
        rows,
        columns,
        slice_spacing=plan.slice_spacing,
        pixel_spacing=(plan.pixel_spacing, plan.pixel_spacing),
        haemorrhage=plan.haemorrhage,
        seed=plan.seed,
    )
    write_series(
        study_dir / plan.series_folder,
        hu,
        pixel_spacing=(plan.pixel_spacing, plan.pixel_spacing),
        slice_spacing=plan.slice_spacing,
        slope=plan.slope,
        intercept=plan.intercept,
        bits_stored=plan.bits_stored,
        signed=plan.signed,
        tags=tags,
        seed=plan.seed,
    )


def _write_clutter(root: pathlib.Path, plans: Sequence[_PatientPlan], seed: int) -> None:
    # Real exports carry non-DICOM files that an indexer has to skip.
    rng = np.random.default_rng([seed, 47])
    (root / "README.txt").write_text(_readme(plans, seed), encoding="utf-8", newline="\n")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + rng.bytes(56))
    if plans:
        study_dir = root / plans[0].folder / plans[0].study_folder
        (study_dir / "Thumbs.db").write_bytes(rng.bytes(64))


def _readme(plans: Sequence[_PatientPlan], seed: int) -> str:
    lines = [
        "Synthetic brain CT study written by dicomarray.sample.make_study",
        f"(seed {seed}). Not patient data: every image is a computed phantom.",
        "",
        "patient  sex  study date  slices  spacing mm  pixel mm  haemorrhage  rescale",
    ]
    for p in plans:
        storage = f"{'int' if p.signed else 'uint'}{p.bits_stored} {p.slope:g}/{p.intercept:g}"
        bleed = "yes" if p.haemorrhage else "no"
        lines.append(
            f"{p.folder:<8} {p.sex:<4} {p.study_date:%Y-%m-%d}  {p.n_slices:>6}  "
            f"{p.slice_spacing:>10g}  {p.pixel_spacing:>8.3f}  {bleed:<11}  {storage}"
        )
    return "\n".join(lines) + "\n"
