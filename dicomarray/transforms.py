"""Pure numpy transforms of pixel values: modality rescale, VOI windowing and presets.

Functions here take and return numpy (or dask) arrays and know nothing of files or attrs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Window presets (center, width) in HU. Head presets follow common radiology practice
#: (e.g. Radiopaedia, "Windowing (CT)"); lung is the usual chest setting.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "bone": (600.0, 2800.0),
    "soft_tissue": (50.0, 350.0),
    "lung": (-600.0, 1500.0),
}


def rescale(stored: Any, slope: Any = 1.0, intercept: Any = 0.0) -> Any:
    """Modality values from stored values: ``stored * slope + intercept`` as float32.

    (0028,1053) *Rescale Slope* and (0028,1052) *Rescale Intercept*; both may be arrays
    that broadcast against ``stored`` (one value per slice).
    """
    return stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def linear_window(values: Any, center: float, width: float) -> Any:
    """The DICOM linear VOI function (PS3.3 C.11.2.1.2.1) scaled to [0, 1], float32.

    Values at or below ``center - 0.5 - (width - 1) / 2`` map to 0, values above
    ``center - 0.5 + (width - 1) / 2`` to 1, and values between linearly.
    """
    if not width >= 1:
        raise ValueError(f"window width must be at least 1, got {width}")
    scaled = (values - np.float32(center - 0.5)) / np.float32(max(width - 1.0, 1e-6)) + np.float32(
        0.5
    )
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)
