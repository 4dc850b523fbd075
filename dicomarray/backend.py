"""The xarray backend: ``xarray.open_dataset(path, engine="dicom")``, a door onto open_series."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import xarray as xr
from xarray.backends import BackendEntrypoint

_SUFFIXES = (".dcm", ".dicom", ".ima")


class DicomBackendEntrypoint(BackendEntrypoint):
    """Open a DICOM series (a folder, a file or a list of files) as a Dataset.

    The Dataset holds one variable, ``image``, exactly as :func:`dicomarray.open_series`
    returns it; keyword arguments (``series_uid``, ``chunks``, ``rtol``, ``max_bytes``,
    ``split_by``, ``dims``) are passed on.
    """

    description = "Open DICOM series as lazy (z, y, x) or n-D volumes with dicomarray"
    url = "https://github.com/dicomarray/dicomarray"
    open_dataset_parameters = (
        "filename_or_obj",
        "drop_variables",
        "series_uid",
        "rtol",
        "max_bytes",
        "split_by",
        "dims",
    )

    def open_dataset(  # type: ignore[override]
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        series_uid: str | None = None,
        **kwargs: Any,
    ) -> xr.Dataset:
        from .volume import open_series

        volume = open_series(filename_or_obj, series_uid, **kwargs)
        # so that chunks={} gives the same dask chunks as open_series
        volume.encoding["preferred_chunks"] = {
            d: c[0] for d, c in zip(volume.dims, volume.chunks or (), strict=True)
        }
        dataset = volume.to_dataset()
        if drop_variables:
            dropped = [drop_variables] if isinstance(drop_variables, str) else list(drop_variables)
            dataset = dataset.drop_vars(dropped, errors="ignore")
        return dataset

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """A cheap look: a DICOM suffix, or ``DICM`` at byte 128. Never raises."""
        try:
            path = os.fspath(filename_or_obj)
        except TypeError:
            return False
        try:
            if str(path).lower().endswith(_SUFFIXES):
                return True
            with open(path, "rb") as file:
                file.seek(128)
                return file.read(4) == b"DICM"
        except (OSError, ValueError):
            return False
