"""Helpers shared by the writer tests: identifying tags, byte searches, reference readings."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
import xarray as xr

#: Identifying tags with values that cannot occur by chance in the output bytes.
PATIENT_TAGS = {
    "PatientName": "SECRETIVE^PERSONA",
    "PatientID": "PID-8675309",
    "PatientBirthDate": "19350817",
    "InstitutionName": "Hidden Valley Clinic",
    "ReferringPhysicianName": "WHO^DOCTOR",
}


def identifying_strings() -> list[bytes]:
    return [value.encode() for value in PATIENT_TAGS.values()] + [b"SECRETIVE", b"8675309"]


def files_under(root: Path) -> list[Path]:
    return [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())


def series_uids(paths: list[Path]) -> list[bytes]:
    """The Study, Series and every SOP Instance UID of a series' files: identifying too."""
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    uids = [headers[0].StudyInstanceUID, headers[0].SeriesInstanceUID]
    return [uid.encode() for uid in uids + [ds.SOPInstanceUID for ds in headers]]


def leaked(root: Path, also: Sequence[bytes] = ()) -> list[tuple[str, bytes]]:
    """(file, identifying string) for each identifying string found in the bytes under root.

    ``also``: more strings to look for, such as the :func:`series_uids` of the source.
    """
    found = []
    for path in files_under(root):
        data = path.read_bytes()
        found += [(str(path), s) for s in [*identifying_strings(), *also] if s in data]
    return found


def digests(paths: list[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def modality_values(volume: xr.DataArray) -> np.ndarray:
    """Stored values times the per-slice (or common) rescale, by the test's own arithmetic."""

    def per_slice(coord: str, keyword: str, default: float) -> np.ndarray:
        if coord in volume.coords:
            values = volume.coords[coord].values
        else:
            values = volume.attrs.get(keyword, default)
        return np.asarray(values, float).reshape(-1, 1, 1)

    slope = per_slice("rescale_slope", "RescaleSlope", 1.0)
    intercept = per_slice("rescale_intercept", "RescaleIntercept", 0.0)
    return volume.values * slope + intercept


def sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def temporaries(folder: Path) -> list[Path]:
    """Leftover temporary names of the writers (``.<name>.<hex>.tmp``)."""
    return sorted(folder.glob(".*.tmp"))


#: A series folder named as people name them: after the patient.
PATIENT_FOLDER = "DOE_JANE_8675309"


def texts_holding(volume: xr.DataArray, text: str) -> list[str]:
    """Names of the coordinates and attrs of a volume (read back) whose values hold ``text``."""

    def holds(value) -> bool:
        if isinstance(value, dict):
            return any(holds(v) for v in value.values())
        if isinstance(value, list | tuple | np.ndarray):
            return any(holds(v) for v in np.asarray(value, dtype=object).ravel())
        return text in str(value)

    found = [str(name) for name, coord in volume.coords.items() if holds(coord.values)]
    return found + [str(name) for name, value in volume.attrs.items() if holds(value)]


def head_and_feet_first(make_series, hu: np.ndarray, spacing: float = 12.0) -> tuple[Path, Path]:
    """One patient scanned head first and feet first: the same voxels in the patient, stored
    in two orders (feet first: columns toward the right, slices toward the feet).

    ``hu`` is (z, y, x) with z toward the head, y toward posterior, x toward the left, as
    the head-first series stores it; the feet-first series stores ``hu[::-1, :, ::-1]``.
    """
    slices, rows, columns = hu.shape
    corner = np.array([-100.0, -80.0, -60.0])  # voxel 0 of the head-first series
    far = corner + [(columns - 1) * 3.6, 0.0, (slices - 1) * spacing]
    head = make_series("head_first", hu=hu, origin=tuple(corner), tags={"PatientPosition": "HFS"})
    feet = make_series(
        "feet_first",
        hu=np.ascontiguousarray(hu[::-1, :, ::-1]),
        origin=tuple(far),
        orientation=(-1, 0, 0, 0, 1, 0),
        tags={"PatientPosition": "FFS"},
    )
    return head[0].parent, feet[0].parent


#: write_series keyword arguments of the kinds of series every format must round-trip.
SERIES_KINDS = {
    "axial": {},
    "per-slice-rescale": {"per_slice_rescale": True},
    "sagittal": {"orientation": (0, 1, 0, 0, 0, -1)},
    "gap": {
        "positions": [0.0, 12.0, 24.0, 36.0, 48.0, 60.0, 84.0, 96.0, 108.0, 120.0, 132.0, 144.0]
    },
    "uint12": {"bits_stored": 12, "signed": False, "intercept": -1024.0},
}


def lazy_hu(volume: xr.DataArray) -> xr.DataArray:
    """Modality values, lazily, without the rescale attrs and coordinates (as a transform would)."""
    slope = volume.coords.get("rescale_slope", volume.attrs.get("RescaleSlope", 1.0))
    intercept = volume.coords.get("rescale_intercept", volume.attrs.get("RescaleIntercept", 0.0))
    hu = volume.astype(np.float64) * slope + intercept
    hu = hu.drop_vars(["rescale_slope", "rescale_intercept"], errors="ignore")
    hu.attrs = {k: v for k, v in volume.attrs.items() if not k.startswith("Rescale")}
    hu.attrs["units"] = "HU"
    return hu


#: The provenance coords the n-D assembly puts on each frame, dims ``(*extra, "z")``.
FRAME_COORDS = ("source_file", "frame", "sop_instance_uid")


def stacked(volume: xr.DataArray, dim: str, values, **coords) -> xr.DataArray:
    """An n-D volume as the assembly builds it (issue 13's contract), from a 3-D one:
    ``volume``, ``volume + 1`` ... along ``dim`` (first) with coordinate ``values``, the
    other ``coords`` on ``dim`` and the :data:`FRAME_COORDS` on ``(dim, *their dims)``."""
    parts = [(volume + i).assign_attrs(volume.attrs) for i in range(len(values))]
    stack = xr.concat(parts, dim=dim).assign_coords({dim: (dim, values)})
    per_frame = {
        name: stack[name].expand_dims({dim: len(values)})
        for name in FRAME_COORDS
        if name in stack.coords and dim not in stack[name].dims
    }
    return stack.assign_coords(per_frame).assign_coords({k: (dim, v) for k, v in coords.items()})


def two_echo_folder(make_series, phantom, folder: Path, tags=None) -> Path:
    """One folder of two echoes (EchoTime 10 and 20 ms) of one series, the second + 5: the
    n-D assembly opens it with dims ``("echo", "z", "y", "x")``. Files are copied: shutil."""
    import shutil

    folder.mkdir(parents=True)
    for index, echo_time in enumerate((10.0, 20.0)):
        echo_tags = {**(tags or {}), "SeriesInstanceUID": "1.2.3.9", "EchoNumbers": index + 1}
        echo_tags["EchoTime"] = echo_time
        paths = make_series(f"echo{index}", hu=phantom + 5 * index, seed=index, tags=echo_tags)
        for path in paths:
            shutil.copy(path, folder / f"e{index}_{path.name}")
    return folder
