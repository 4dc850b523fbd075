"""Exports of volumes: ``.npy`` with a JSON sidecar, zarr, NIfTI, and DICOM over a template.

One writer per module, each streaming chunk by chunk (DICOM: slice by slice) and atomic:
the output appears under its final name only once it is complete. What they share
(running staged exports, chunk stores) lives in :mod:`.common`, the staging itself in
:mod:`dicomarray.staging`; the JSON sidecar and de-identification in :mod:`.metadata`.
"""

from __future__ import annotations

from .dicom import to_dicom
from .metadata import DEIDENTIFY_KEYWORDS, series_metadata, write_sidecar
from .nifti import nifti_affine, to_nifti
from .npy import open_npy, to_npy
from .zarr import to_zarr

__all__ = [
    "DEIDENTIFY_KEYWORDS",
    "nifti_affine",
    "open_npy",
    "series_metadata",
    "to_dicom",
    "to_nifti",
    "to_npy",
    "to_zarr",
    "write_sidecar",
]
