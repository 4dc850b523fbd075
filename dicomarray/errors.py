"""The package's errors and warnings, and the one helper that reports a data problem.

Every error a user can cause with bad data is a :class:`DicomArrayError` (a ``ValueError``)
whose message names the file and the problem. Data-quality problems that still allow a
volume to be built (a gap, a tilt, a left-out localizer) are :class:`GeometryWarning` s.
"""

from __future__ import annotations

import logging
import os
import sys
import types
import warnings

logger = logging.getLogger("dicomarray")


class DicomArrayError(ValueError):
    """Base class of every error raised by dicomarray."""


class InvalidDicomError(DicomArrayError):
    """A file is not DICOM, or its header cannot be parsed."""


class HeaderLimitError(InvalidDicomError):
    """A file's header passes a bound on its size, elements, sequence items or nesting."""


class SeriesNotFoundError(DicomArrayError):
    """No series (or not the requested one) was found in the source."""


class AmbiguousSeriesError(SeriesNotFoundError):
    """A source holds several series of the same, largest size and none was asked for."""


class AssemblyError(DicomArrayError):
    """The instances of a series cannot be put together into one volume."""


class WriteError(DicomArrayError):
    """An export cannot be written: the target exists, a shape or template does not fit."""


class PixelDataError(DicomArrayError):
    """Pixel data is missing, truncated, too large or in a layout that is not supported."""


class MissingDecoderError(PixelDataError):
    """Pixel data is compressed with a transfer syntax no installed decoder can read."""


class TransformError(DicomArrayError):
    """A value transform cannot be done: an unknown preset, a window width <= 0, bad bounds."""


class ResampleError(DicomArrayError):
    """A volume cannot be resampled: a bad spacing or method, missing spatial dims, unusable
    positions."""


class RenderError(DicomArrayError):
    """A picture cannot be made or written: an unknown axis, an index out of range, a bad path."""


class DeidentificationError(DicomArrayError):
    """Data cannot be de-identified as asked: no usable key, burned-in annotation, options
    that exclude each other, an output inside the input."""


class DicomArrayWarning(UserWarning):
    """Base class of dicomarray's warnings."""


class GeometryWarning(DicomArrayWarning):
    """A data problem in a series' geometry: a gap, uneven spacing, a tilt, a left-out slice."""


class SeriesSelectionWarning(DicomArrayWarning):
    """A source held several series and one was chosen for the caller."""


class DeidentificationKeyWarning(DicomArrayWarning):
    """A de-identification key was generated and saved: where it is, to keep it secret."""


def warn_data_problem(message: str, category: type[Warning] = GeometryWarning) -> None:
    """Warn and log the same message, so that batch logs keep what a warning said.

    The warning points at the caller's own line: the first frame outside dicomarray.
    """
    logger.warning(message)
    warnings.warn(message, category, stacklevel=_first_outside_package())


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _first_outside_package() -> int:
    """The stacklevel of the first frame outside this package, for warnings.warn."""
    frame: types.FrameType | None = sys._getframe(2)  # the caller of warn_data_problem
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return level
