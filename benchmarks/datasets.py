"""The benchmark data: CT series in two storage layouts and the ten-patient study.

Data is written once by :mod:`dicomarray.sample` into a cache folder and reused while its
manifest (``dataset.json``, written last) matches the spec, so an interrupted write is
redone. Each dataset folder holds the DICOM files under ``dicom/`` and the manifest beside
them, so that no reader ever sees a non-DICOM file in a series folder.

The manifest also gives the floor what it may know in advance: the files in slice order,
the stored dtype and the rescale.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: Bump when the way data is written changes, so caches are rewritten.
DATA_VERSION = 1
MANIFEST = "dataset.json"

#: The two storage layouts of the issue: SimpleITK's speed depends on them.
LAYOUTS: dict[str, dict[str, Any]] = {
    "u12": {"bits_stored": 12, "signed": False, "slope": 1.0, "intercept": -1024.0},
    "s16": {"bits_stored": 16, "signed": True, "slope": 1.0, "intercept": -1024.0},
}
LAYOUT_LABELS = {
    "u12": "uint16, 12 bits stored",
    "s16": "int16, 16 bits stored",
}

#: Field of view (mm) and head coverage (mm) kept whatever the matrix and slice count, so
#: that every size shows the whole phantom rather than mostly air.
FIELD_OF_VIEW_MM = 230.4
COVERAGE_MM = 150.0


@dataclass(frozen=True)
class Sizes:
    """Slice counts and matrix of one run: the issue's sizes, or tiny ones for ``--quick``."""

    small: int = 300
    large: int = 900
    matrix: int = 512
    patients: int = 10
    study_slices: tuple[int, int] | None = None


FULL = Sizes()
QUICK = Sizes(small=8, large=12, matrix=64, patients=2, study_slices=(4, 6))


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: a series (``layout`` set) or the multi-patient study (``layout`` None)."""

    key: str
    layout: str | None
    n_slices: int
    matrix: int
    patients: int = 0
    study_slices: tuple[int, int] | None = None

    @property
    def folder_name(self) -> str:
        if self.layout is None:
            return f"study-{self.patients}p-{self.matrix}"
        return f"{self.layout}-{self.n_slices}x{self.matrix}"

    @property
    def label(self) -> str:
        """A short human name for tables."""
        if self.layout is None:
            return f"{self.patients}-patient study"
        return f"{self.layout} {self.n_slices}x{self.matrix}x{self.matrix}"


def dataset_specs(sizes: Sizes) -> dict[str, DatasetSpec]:
    """The datasets by role key (``u12-small`` ... ``study``) for these sizes."""
    specs = {
        f"{layout}-{role}": DatasetSpec(f"{layout}-{role}", layout, n, sizes.matrix)
        for role, n in (("small", sizes.small), ("large", sizes.large))
        for layout in LAYOUTS
    }
    specs["study"] = DatasetSpec(
        "study", None, 0, sizes.matrix, patients=sizes.patients, study_slices=sizes.study_slices
    )
    return specs


def ensure(spec: DatasetSpec, root: Path) -> Path:
    """The dataset's folder under ``root``, written first if missing or stale."""
    folder = root / spec.folder_name
    wanted = {"version": DATA_VERSION, "spec": _jsonable(asdict(spec))}
    manifest = folder / MANIFEST
    if manifest.exists():
        found = json.loads(manifest.read_text())
        if {k: found.get(k) for k in wanted} == wanted:
            return folder
    # stale or half-written: this folder belongs to the cache, so start it afresh
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    extra = _write_series(spec, folder) if spec.layout else _write_study(spec, folder)
    manifest.write_text(json.dumps({**wanted, **extra}, indent=1))
    return folder


def _write_series(spec: DatasetSpec, folder: Path) -> dict[str, Any]:
    from dicomarray.sample import make_series

    layout = LAYOUTS[spec.layout or ""]
    pixel_mm = FIELD_OF_VIEW_MM / spec.matrix
    files = make_series(
        folder / "dicom",
        spec.n_slices,
        rows=spec.matrix,
        columns=spec.matrix,
        slice_spacing=COVERAGE_MM / spec.n_slices,
        pixel_spacing=(pixel_mm, pixel_mm),
        bits_stored=layout["bits_stored"],
        signed=layout["signed"],
        slope=layout["slope"],
        intercept=layout["intercept"],
    )
    return {
        "kind": "series",
        "rows": spec.matrix,
        "columns": spec.matrix,
        "dtype": "<i2" if layout["signed"] else "<u2",
        "slope": layout["slope"],
        "intercept": layout["intercept"],
        # make_series returns the files in slice order: what the floor may know in advance
        "files": [p.name for p in files],
    }


def _write_study(spec: DatasetSpec, folder: Path) -> dict[str, Any]:
    from dicomarray.sample import make_study

    make_study(
        folder / "dicom",
        spec.patients,
        n_slices=spec.study_slices,
        rows=spec.matrix,
        columns=spec.matrix,
    )
    files = [p for p in (folder / "dicom").rglob("*") if p.is_file()]
    return {"kind": "study", "n_files": len(files)}


def load_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a dataset folder written by :func:`ensure`."""
    return json.loads((folder / MANIFEST).read_text())


def _jsonable(value: Any) -> Any:
    # tuples come back from JSON as lists; compare like with like
    return json.loads(json.dumps(value))
