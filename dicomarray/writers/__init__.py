"""Exports of volumes: ``.npy`` with a JSON sidecar, zarr, NIfTI, and DICOM over a template.

One writer per module, each streaming chunk by chunk (DICOM: slice by slice) and atomic:
the output appears under its final name only once it is complete. What they share
(temporary names, atomic renames, chunk stores) lives in :mod:`.common`; the JSON
sidecar and de-identification in :mod:`.metadata`.
"""

from __future__ import annotations

from .metadata import DEIDENTIFY_KEYWORDS, series_metadata, write_sidecar

__all__ = [
    "DEIDENTIFY_KEYWORDS",
    "series_metadata",
    "write_sidecar",
]
