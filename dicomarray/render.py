"""Pictures of pixel values: 2-D arrays in [0, 1] to JPG or PNG files, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import DicomArrayError

_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}


def save_image(values: np.ndarray, path: str | os.PathLike[str], *, quality: int = 95) -> Path:
    """Write a 2-D array of values in [0, 1] as an 8-bit grey JPG or PNG (by suffix).

    The file appears under its final name only when complete.
    """
    from PIL import Image

    path = Path(path)
    kind = _FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DicomArrayError(f"{path}: unsupported picture suffix; use .jpg, .jpeg or .png")
    if values.ndim != 2:
        raise DicomArrayError(f"{path}: a picture needs a 2-D array, got shape {values.shape}")
    grey = np.round(np.clip(np.nan_to_num(values), 0.0, 1.0) * 255).astype(np.uint8)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(handle, "wb") as file:
            options = {"quality": quality} if kind == "JPEG" else {}
            Image.fromarray(grey, mode="L").save(file, format=kind, **options)
        os.replace(temporary, path)
    except OSError as exc:
        raise DicomArrayError(f"{path}: cannot write the picture: {exc}") from exc
    return path
