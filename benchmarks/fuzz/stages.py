"""The public entry points one case goes through, in the child process that runs it.

Each stage is one call a user makes: ``scan``, ``open_series``, ``.values``, ``hu()``,
``affine``, ``to_npy``, ``to_zarr``, ``to_jpg``. A stage's outcome is ``ok``, ``dicom_error``
(a :class:`~dicomarray.errors.DicomArrayError`, the only kind allowed out of the API) or
``error`` (anything else, BaseExceptions from decoders included). Stages after
``open`` run on the opened volume; if ``open`` fails they are ``not_run``.
"""

from __future__ import annotations

import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Every stage, in the order a case goes through them.
ALL_STAGES: tuple[str, ...] = (
    "scan", "open", "values", "hu", "affine", "to_npy", "to_zarr", "to_jpg"
)  # fmt: skip

#: The stages of a default run. ``to_zarr`` costs as much as all the others together in a
#: fresh child and shares the metadata path of ``to_npy``: ``--stages`` adds it.
STAGES: tuple[str, ...] = tuple(stage for stage in ALL_STAGES if stage != "to_zarr")


def run_stages(
    input_dir: Path, out_dir: Path, started: Callable[[str], None], stages: tuple[str, ...]
) -> dict[str, Any]:
    """Run ``stages`` on the tree in ``input_dir``; outputs go to ``out_dir``.

    ``started(stage)`` is called before each stage, so that the parent knows where a child
    that hangs or dies was. Returns ``{"stages": {stage: outcome}, "outside": [...]}``.
    """
    names = [p.name for p in input_dir.rglob("*")] + [str(input_dir)]
    outcomes: dict[str, dict[str, Any]] = {}
    outside: list[str] = []
    volume = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for stage in stages:
            if stage != "scan" and stage != "open" and volume is None:
                outcomes[stage] = {"outcome": "not_run"}
                continue
            started(stage)
            try:
                result = _call(stage, input_dir, out_dir, volume)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - decoders raise BaseExceptions too
                outcomes[stage] = describe(exc, names)
                continue
            outcomes[stage] = {"outcome": "ok"}
            if stage == "scan":
                outside = _outside(result, input_dir)
            elif stage == "open":
                volume = result
    return {"stages": outcomes, "outside": outside}


def _call(stage: str, input_dir: Path, out_dir: Path, volume: Any) -> Any:
    """One public call; values are computed so that lazy errors surface in their stage."""
    import numpy as np

    import dicomarray

    if stage == "scan":
        return dicomarray.scan(input_dir)
    if stage == "open":
        return dicomarray.open_series(input_dir)
    if stage == "values":
        return np.asarray(volume.values)
    if stage == "hu":
        return volume.dicom.hu().values
    if stage == "affine":
        return volume.dicom.affine
    if stage == "to_npy":
        return volume.dicom.to_npy(out_dir / "volume.npy")
    if stage == "to_zarr":
        return volume.dicom.to_zarr(out_dir / "volume.zarr")
    if stage == "to_jpg":
        return volume.dicom.to_jpg(out_dir / "slice.jpg")
    raise ValueError(f"unknown stage {stage!r}; stages are {ALL_STAGES}")


def describe(exc: BaseException, names: list[str]) -> dict[str, Any]:
    """The outcome of a stage that raised: kind, type, message, where, and what it names."""
    from dicomarray.errors import DicomArrayError

    message = str(exc)
    return {
        "outcome": "dicom_error" if isinstance(exc, DicomArrayError) else "error",
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": message[:300],
        "where": _where(exc),
        "names_file": any(name and name in message for name in names),
        "memory": _in_chain(exc, MemoryError),
    }


def _where(exc: BaseException) -> str:
    """The innermost dicomarray frame of the traceback (else the innermost frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/dicomarray/" in f.filename]
    frame = (ours or frames or [None])[-1]
    if frame is None:
        return "?"
    short = frame.filename.split("/dicomarray/")[-1] if ours else Path(frame.filename).name
    return f"{short}:{frame.lineno} {frame.name}"


def _in_chain(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``kind`` is the exception or anywhere in its cause/context chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _outside(index: Any, input_dir: Path) -> list[str]:
    """Indexed paths that are not inside the input tree (a DICOMDIR pointing outside)."""
    root = input_dir.resolve()
    paths = [Path(p).resolve() for p in index["path"]] if "path" in index else []
    return [str(p) for p in paths if not p.is_relative_to(root)]
