"""A synthetic brain CT perfusion series: the sample head, imaged again and again as a
contrast bolus passes through it.

:func:`perfusion_phantom` draws the head of :func:`dicomarray.sample.head_phantom` at a
series of times, with contrast added in an artery, a vein and the brain tissue along
known time-attenuation curves (:class:`BolusCurve`); :func:`make_perfusion_series`
writes it the way CT perfusion exports are: one classic CT Image Storage file per slice
and time point, every time point at the same slice positions, told apart by
(0020,0100) *Temporal Position Identifier* and their acquisition times.

The curves and the regions where they can be measured are module constants
(:data:`PERFUSION_CURVES`, :data:`PERFUSION_REGIONS`), so that tests and the demo compare
what they read with what was drawn. Times are seconds from the first time point; every
curve is a gamma variate with ``alpha`` 3 (see :class:`BolusCurve`)::

    tissue        arrival  peak time  peak (HU added)  recirc.  region x, y; half side (mm)
    artery        6 s      12 s       350              0.1      38, -12; 2.5  (left MCA)
    vein          9 s      18 s       250              0.1      0, 70; 2.5  (sagittal sinus)
    grey matter   7 s      14 s        30              0        (the cortex)
    white matter  8 s      16 s        20              0        -25, 15; 4  (right hemisphere)

Regions are squares in every slice, in patient x (toward the left) and y (toward
posterior). With the defaults (24 time points 2 s apart) the peaks of the artery, the
vein and white matter are sampled exactly: at 12, 18 and 16 s.
"""

from __future__ import annotations

import datetime as dt
import os
import pathlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .sample import (
    _BRAIN,
    _GREY_MINUS_WHITE,
    _axis_mm,
    _check_shape,
    _cortex_ramp,
    _default_patient,
    _label_volume,
    _paint,
    _series_start_seconds,
    _tm,
    _uid,
    head_phantom,
    write_series,
)

__all__ = [
    "ARTERY",
    "GREY_MATTER",
    "PERFUSION_CURVES",
    "PERFUSION_REGIONS",
    "VEIN",
    "WHITE_MATTER",
    "BolusCurve",
    "Region",
    "make_perfusion_series",
    "perfusion_phantom",
    "perfusion_times",
]


@dataclass(frozen=True)
class BolusCurve:
    """A time-attenuation curve: the HU a contrast bolus adds to a tissue, over time.

    The first pass is a gamma variate scaled to peak exactly at (`peak_time`, `peak`)::

        g(s) = s ** alpha * exp(alpha * (1 - s))   for s > 0, else 0
        first(t) = peak * g((t - arrival) / (peak_time - arrival))

    and the recirculation a second, wider pass of ``recirculation * peak`` that arrives
    when the first one peaks and peaks ``2 * (peak_time - arrival)`` seconds later::

        second(t) = recirculation * peak * g((t - peak_time) / (2 * (peak_time - arrival)))

    The curve is ``first(t) + second(t)``; its maximum is ``peak`` at ``peak_time``.

    Parameters
    ----------
    arrival : float
        Seconds from the first time point to the bolus's arrival.
    peak_time : float
        Seconds from the first time point to the first pass's peak; after `arrival`.
    peak : float
        HU the first pass adds at `peak_time`.
    alpha : float, default 3.0
        Shape of the gamma variate: larger is narrower and more symmetric.
    recirculation : float, default 0.0
        Height of the second pass, as a fraction of `peak`.
    """

    arrival: float
    peak_time: float
    peak: float
    alpha: float = 3.0
    recirculation: float = 0.0

    def __post_init__(self) -> None:
        if not self.peak_time > self.arrival:
            raise ValueError(f"peak_time must come after arrival: {self}")

    def __call__(self, seconds: np.ndarray | float) -> np.ndarray:
        """The HU added at `seconds` (from the first time point), as float64."""
        t = np.asarray(seconds, dtype=np.float64)
        rise = self.peak_time - self.arrival
        first = self._shape((t - self.arrival) / rise)
        second = self.recirculation * self._shape((t - self.peak_time) / (2 * rise))
        return self.peak * (first + second)

    def _shape(self, s: np.ndarray) -> np.ndarray:
        positive = np.clip(s, 0.0, None)
        return np.where(s > 0, positive**self.alpha * np.exp(self.alpha * (1 - positive)), 0.0)


@dataclass(frozen=True)
class Region:
    """A square in the axial plane of every slice: centre (`x`, `y`) in patient mm (DICOM
    LPS: x toward the patient's left, y toward posterior), half its side `half_width` mm."""

    x: float
    y: float
    half_width: float


#: The left middle cerebral artery: early and bright.
ARTERY = BolusCurve(arrival=6.0, peak_time=12.0, peak=350.0, recirculation=0.1)
#: The superior sagittal sinus: later, and less bright than the artery.
VEIN = BolusCurve(arrival=9.0, peak_time=18.0, peak=250.0, recirculation=0.1)
#: Cortex: more blood than white matter, so a higher, earlier peak.
GREY_MATTER = BolusCurve(arrival=7.0, peak_time=14.0, peak=30.0)
#: Deep white matter.
WHITE_MATTER = BolusCurve(arrival=8.0, peak_time=16.0, peak=20.0)
#: Every curve of the phantom, by tissue.
PERFUSION_CURVES: dict[str, BolusCurve] = {
    "artery": ARTERY,
    "vein": VEIN,
    "grey matter": GREY_MATTER,
    "white matter": WHITE_MATTER,
}
#: Where each curve is found unmixed in every slice (each square lies inside its tissue).
PERFUSION_REGIONS: dict[str, Region] = {
    "artery": Region(x=38.0, y=-12.0, half_width=2.5),
    "vein": Region(x=0.0, y=70.0, half_width=2.5),
    "white matter": Region(x=-25.0, y=15.0, half_width=4.0),
}

# Both vessels are cylinders along z of this radius around their region's centre, labelled
# after the sample head's own labels.
_VESSEL_RADIUS_MM = 4.0
_VESSEL_LABELS = {6: "artery", 7: "vein"}
_FIELD_OF_VIEW_MM = 204.8
_SLICE_SPACING_MM = 5.0
# The perfusion series starts ten minutes into the study (after the plain head series).
_SERIES_OFFSET_S = 600.0
_SERIES_TAGS: dict[str, Any] = {
    "SeriesNumber": 3,
    "SeriesDescription": "PERFUSION 4D 5mm H20f",
    "ConvolutionKernel": "H20f",
    "ContrastBolusAgent": "IOPROMIDE 370",
    "ContrastBolusRoute": "IV",
    "ContrastBolusVolume": "40",
}


def perfusion_times(n_times: int = 24, time_step: float = 2.0) -> np.ndarray:
    """Seconds of each time point from the first: ``0, time_step, ...``, float64."""
    _check_shape(n_times)
    if not time_step > 0:
        raise ValueError(f"time_step must be positive, got {time_step!r}")
    return np.arange(n_times, dtype=np.float64) * time_step


def perfusion_phantom(
    times: np.ndarray,
    n_slices: int = 8,
    rows: int = 128,
    columns: int = 128,
    *,
    seed: int = 0,
) -> np.ndarray:
    """Draw the sample head at each time in `times` as the bolus passes, in HU.

    Each time point is :func:`dicomarray.sample.head_phantom` (brain ~28-40 HU, CSF ~5,
    bone ~1000, air -1000) with its own noise, with HU added along the curves of
    :data:`PERFUSION_CURVES`: :data:`ARTERY` in a cylinder of radius 4 mm along z around
    ``PERFUSION_REGIONS["artery"]``, :data:`VEIN` around ``PERFUSION_REGIONS["vein"]``,
    and in the rest of the brain a blend of :data:`WHITE_MATTER` in the core and
    :data:`GREY_MATTER` in the cortex (the sample head's grey-white ramp). CSF, bone,
    skin and air do not enhance. The volume is centred on the patient origin, slices
    5 mm apart and a 204.8 mm field of view (1.6 mm pixels at 128 x 128).

    Parameters
    ----------
    times : numpy.ndarray
        Seconds from the first time point (see :func:`perfusion_times`).
    n_slices, rows, columns : int, optional
        Shape of each time point, axes (z, y, x).
    seed : int, optional
        Seed of the noise.

    Returns
    -------
    numpy.ndarray
        int16 array of shape (len(times), n_slices, rows, columns).

    Examples
    --------
    >>> perfusion_phantom(perfusion_times(3), 2, 32, 32).shape
    (3, 2, 32, 32)
    """
    return np.stack(list(_time_points(np.asarray(times), n_slices, rows, columns, seed)))


def _time_points(
    times: np.ndarray, n_slices: int, rows: int, columns: int, seed: int
) -> Iterator[np.ndarray]:
    _check_shape(n_slices, rows, columns)
    spacing = _FIELD_OF_VIEW_MM / max(rows, columns)
    weights = _tissue_weights(n_slices, rows, columns, spacing)
    for i, t in enumerate(times):
        # Each time point its own noise, as each rotation of the scanner has.
        hu = head_phantom(
            n_slices,
            rows,
            columns,
            slice_spacing=_SLICE_SPACING_MM,
            pixel_spacing=(spacing, spacing),
            seed=seed * len(times) + i,
        )
        added = sum(weight * float(PERFUSION_CURVES[name](t)) for name, weight in weights.items())
        yield (hu + np.rint(added)).astype(np.int16)


def _tissue_weights(
    n_slices: int, rows: int, columns: int, spacing: float
) -> dict[str, np.ndarray]:
    """How much of each curve every voxel follows (float32, summing to 1 in the brain)."""
    axes = (
        _axis_mm(n_slices, _SLICE_SPACING_MM),
        _axis_mm(rows, spacing),
        _axis_mm(columns, spacing),
    )
    labels, q_brain = _label_volume(axes)
    vessels = {}
    for number, name in _VESSEL_LABELS.items():
        region = PERFUSION_REGIONS[name]
        # Long in z: a cylinder through every slice, drawn inside the brain only.
        semi_axes = (1e6, _VESSEL_RADIUS_MM, _VESSEL_RADIUS_MM)
        _paint(labels, axes, (0.0, region.y, region.x), semi_axes, number)
        vessels[name] = (labels == number).astype(np.float32)
    grey = _cortex_ramp(q_brain) / np.float32(_GREY_MINUS_WHITE) * (labels == _BRAIN)
    return {
        **vessels,
        "grey matter": grey,
        "white matter": (labels == _BRAIN) - grey,
    }


def make_perfusion_series(
    out_dir: str | os.PathLike,
    *,
    n_times: int = 24,
    time_step: float = 2.0,
    n_slices: int = 8,
    rows: int = 128,
    columns: int = 128,
    tags: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> list[pathlib.Path]:
    """Write :func:`perfusion_phantom` as a CT perfusion series, one file per slice and time.

    Every time point is written by :func:`dicomarray.sample.write_series` at the same
    slice positions (``ImagePositionPatient``), with (0020,0100) *Temporal Position
    Identifier* and (0020,0012) *Acquisition Number* ``1..n_times``, (0020,0105) *Number
    of Temporal Positions* ``n_times``, ``AcquisitionTime``, ``ContentTime`` and
    ``AcquisitionDateTime`` ``SeriesTime + time`` (the same for every slice of a time
    point, as a scanner covering all slices at once writes them) and ``InstanceNumber``
    ``1..n_times * n_slices`` time point by time point, inferior slice first. Stored
    int16 with ``RescaleSlope`` 1 and ``RescaleIntercept`` -1024; series number 3,
    ``SeriesTime`` 10 minutes after ``StudyTime``.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Folder to write into; created if missing.
    n_times : int, default 24
        Time points.
    time_step : float, default 2.0
        Seconds between time points (:func:`perfusion_times`).
    n_slices, rows, columns : int, optional
        Shape of each time point.
    tags : mapping, optional
        DICOM keywords and values overriding the defaults; pass another series' patient and
        study tags (including ``StudyInstanceUID``) to put the series in its study. The
        per-time-point tags above are always written.
    seed : int, optional
        Seed of the default patient, study, UIDs and noise.

    Returns
    -------
    list of pathlib.Path
        The written files, time point by time point, each inferior slice first.
    """
    times = perfusion_times(n_times, time_step)
    header = _series_header(dict(tags or {}), seed, (n_times, n_slices, rows, columns))
    spacing = _FIELD_OF_VIEW_MM / max(rows, columns)
    paths: list[pathlib.Path] = []
    frames = _time_points(times, n_slices, rows, columns, seed)
    for i, (t, hu) in enumerate(zip(times, frames, strict=True)):
        paths += write_series(
            out_dir,
            hu,
            pixel_spacing=(spacing, spacing),
            slice_spacing=_SLICE_SPACING_MM,
            tags={**header, **_time_point_tags(header, i, t)},
            first_instance=i * n_slices + 1,
            seed=i,  # instance UIDs come from the seed: each time point its own
        )
    return paths


def _series_header(tags: dict[str, Any], seed: int, shape: tuple[int, ...]) -> dict[str, Any]:
    """The tags every file of the series shares, its identity resolved once for all."""
    values = {**_default_patient(seed), **_SERIES_TAGS, **tags}
    study_uid = values.setdefault("StudyInstanceUID", _uid("study", seed))
    values.setdefault("SeriesInstanceUID", _uid(study_uid, "series", "perfusion", seed, shape))
    start = _series_start_seconds({"SeriesTime": values["StudyTime"]}) + _SERIES_OFFSET_S
    values.setdefault("SeriesTime", _tm(start).split(".")[0])
    values["NumberOfTemporalPositions"] = shape[0]
    return values


def _time_point_tags(header: Mapping[str, Any], i: int, seconds: float) -> dict[str, Any]:
    time = _tm(_series_start_seconds(header) + seconds)
    date = dt.datetime.strptime(str(header["StudyDate"]), "%Y%m%d")
    return {
        "TemporalPositionIdentifier": i + 1,
        "AcquisitionNumber": i + 1,
        "AcquisitionTime": time,
        "ContentTime": time,
        "AcquisitionDateTime": f"{date:%Y%m%d}{time}",
    }
