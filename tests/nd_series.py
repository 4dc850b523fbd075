"""A 4-D series for the tests: volumes of known values at the same slice positions.

:func:`write_time_series` writes ``n_t`` volumes of one series into one folder, told apart by
(0020,0100) *Temporal Position Identifier* and (0008,0032) *Acquisition Time*, volume ``k``
holding ``hu + OFFSET_HU * k``; :func:`dicomarray.open_series` opens it as dims
``("t", "z", "y", "x")``, ``t`` in seconds (0, 2, 4), provenance coordinates on ``("t", "z")``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import xarray as xr

import dicomarray
from dicomarray import GeometryWarning
from dicomarray.sample import write_series

#: Seconds between the volumes' acquisitions.
STEP_SECONDS = 2.0
#: HU added to volume k's values: k * OFFSET_HU.
OFFSET_HU = 10.0
_UID = "1.2.826.0.1.3680043.8.498.1313"
#: Tags shared by every volume, so that they are one series of one study.
SHARED_TAGS = {
    "SeriesInstanceUID": f"{_UID}.1",
    "StudyInstanceUID": f"{_UID}.2",
    "FrameOfReferenceUID": f"{_UID}.3",
    "PatientID": "PERFUSION01",
    "SeriesNumber": 7,
    "SeriesDescription": "PERFUSION",
    "StudyDate": "20240514",
    "SeriesDate": "20240514",
    "AcquisitionDate": "20240514",
    "StudyTime": "095500",
    "SeriesTime": "095500",
}


def write_time_series(folder: Path, hu: np.ndarray, n_t: int = 3, **kwargs) -> list[list[Path]]:
    """Write ``n_t`` volumes of one series into ``folder``; item k: volume k's files."""
    volumes = []
    for k in range(n_t):
        seconds = 10 * 3600 + STEP_SECONDS * k
        tags = {
            **SHARED_TAGS,
            "NumberOfTemporalPositions": n_t,
            "TemporalPositionIdentifier": k + 1,
            "AcquisitionTime": f"{int(seconds // 3600):02d}{int(seconds % 3600 // 60):02d}"
            f"{seconds % 60:09.6f}",
        }
        volumes.append(write_series(folder, hu + OFFSET_HU * k, tags=tags, seed=k, **kwargs))
    return volumes


def expected_values(hu: np.ndarray, n_t: int) -> np.ndarray:
    """The (t, z, y, x) values :func:`write_time_series` wrote."""
    return np.stack([hu + OFFSET_HU * k for k in range(n_t)])


def open_time_series(folder: Path) -> xr.DataArray:
    """The series as ``(t, z, y, x)``, checked to be so."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeometryWarning)
        opened = dicomarray.open_series(folder)
    assert opened.dims == ("t", "z", "y", "x"), opened.dims
    for name in ("source_file", "frame", "sop_instance_uid"):
        assert opened[name].dims == ("t", "z"), (name, opened[name].dims)
    return opened
