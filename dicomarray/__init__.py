"""dicomarray: DICOM study trees as lazy, labelled xarray volumes.

Import cost is kept low: the accessor and the backend register on import, the rest of
the heavy machinery loads when first used.
"""

from __future__ import annotations

import logging

from . import accessor as _accessor  # noqa: F401 - registers the .dicom accessor
from .deid import Deidentifier
from .deid.tree import deidentify
from .errors import (
    AmbiguousSeriesError,
    AssemblyError,
    DeidentificationError,
    DeidentificationKeyWarning,
    DicomArrayError,
    DicomArrayWarning,
    GeometryWarning,
    HeaderLimitError,
    InvalidDicomError,
    MissingDecoderError,
    PixelDataError,
    SeriesNotFoundError,
    SeriesSelectionWarning,
    WriteError,
)
from .index import scan
from .query import Series, dicom_filter, list_series, read_pixels, read_tags
from .volume import open_series, open_study
from .writers.dicom import to_dicom

logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__ = [
    "AmbiguousSeriesError",
    "AssemblyError",
    "DeidentificationError",
    "DeidentificationKeyWarning",
    "Deidentifier",
    "DicomArrayError",
    "DicomArrayWarning",
    "GeometryWarning",
    "HeaderLimitError",
    "InvalidDicomError",
    "MissingDecoderError",
    "PixelDataError",
    "SeriesNotFoundError",
    "Series",
    "SeriesSelectionWarning",
    "WriteError",
    "deidentify",
    "dicom_filter",
    "list_series",
    "open_series",
    "open_study",
    "read_pixels",
    "read_tags",
    "scan",
    "to_dicom",
]
