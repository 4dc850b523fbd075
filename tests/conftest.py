"""Shared fixtures: small series with known values, built in the tests."""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
import xarray as xr
from pydicom.data import get_testdata_file

import dicomarray
import dicomarray.volume
from dicomarray.sample import head_phantom, write_series

from .geometry_check import GeometryGuard

SMALL = 64  # rows and columns of test series: small enough to be fast, big enough to see anatomy
#: Slice positions (mm) of a GE-like uneven head CT: 14 slices 4 mm apart, then 14 at 7 mm.
UNEVEN_POSITIONS = [4.0 * i for i in range(14)] + [52.0 + 7.0 * i for i in range(1, 15)]


#: Small real files copied from the dcm_qa sets, with their licences (see its README.md).
REALDATA_FILES = Path(__file__).parent / "data" / "realdata"
#: Siemens XA10 enhanced multi-frame: two time points of 6 frames, one file each.
XA10_FILES = ("dcm_qa_enh_XA10_6_1.dcm.gz", "dcm_qa_enh_XA10_6_2.dcm.gz")


def gunzip(names: tuple[str, ...] | list[str], folder: Path) -> list[Path]:
    """Gunzip the named files of tests/data/realdata into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        target = folder / name.removesuffix(".gz")
        with gzip.open(REALDATA_FILES / name, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        paths.append(target)
    return paths


def pydicom_file(name: str) -> Path:
    """A file shipped with pydicom (never downloaded)."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not installed")
    return Path(path)


def patient_series(root: Path, tags: list[dict], *, slices: int = 4, size: int = 32) -> Path:
    """One small head series per entry of ``tags``, in ``root/s0``, ``root/s1`` ...

    7.2 mm pixels and 20 mm slices, whatever the size: the same head, coarser. Each series
    is seeded by its number, so their UIDs differ.
    """
    hu = head_phantom(slices, size, size, slice_spacing=20.0, pixel_spacing=(7.2, 7.2))
    for number, series_tags in enumerate(tags):
        write_series(
            root / f"s{number}",
            hu,
            pixel_spacing=(7.2, 7.2),
            slice_spacing=20.0,
            tags=series_tags,
            seed=number,
        )
    return root


@pytest.fixture(autouse=True)
def geometry_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[GeometryGuard]:
    """Every volume any test opens: its affine must reproduce each frame's
    ImagePositionPatient within 0.01 mm, unless its assembly warned of uneven spacing
    (issue 13, item 5). Checked from coords and the assembly's frames as each volume is
    built (no pixel is read); the test fails at teardown, naming the series."""
    guard = GeometryGuard()
    build = dicomarray.volume.volume_from_assembly

    def checked(assembly, **kwargs):
        volume = build(assembly, **kwargs)
        guard.check(volume, assembly)
        return volume

    monkeypatch.setattr(dicomarray.volume, "volume_from_assembly", checked)
    yield guard
    if guard.failures:
        pytest.fail("\n".join(guard.failures), pytrace=False)


@pytest.fixture
def phantom() -> np.ndarray:
    """A 12-slice 64 x 64 head phantom in HU."""
    return head_phantom(12, SMALL, SMALL, slice_spacing=12.0, pixel_spacing=(3.6, 3.6))


@pytest.fixture
def make_series(tmp_path: Path, phantom: np.ndarray) -> Callable[..., list[Path]]:
    """Write the phantom as a series into a fresh folder; keyword arguments go to write_series."""
    counter = iter(range(1000))

    def make(folder: str | None = None, hu: np.ndarray | None = None, **kwargs) -> list[Path]:
        out = tmp_path / (folder or f"series{next(counter)}")
        kwargs.setdefault("pixel_spacing", (3.6, 3.6))
        kwargs.setdefault("slice_spacing", 12.0)
        return write_series(out, phantom if hu is None else hu, **kwargs)

    return make


class Reads(list):
    """Indices of the frames read from files, in order; ``rows`` holds the rows read."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, int]] = []

    def clear(self) -> None:
        super().clear()
        self.rows.clear()


@pytest.fixture
def reads(monkeypatch) -> Reads:
    """Every frame read from a file: its index, and (in ``reads.rows``) its rows."""
    from dicomarray.pixels import FrameStack

    seen = Reads()
    original = FrameStack.read_into

    def spy(self, index, out, rows=None):
        seen.append(self.slice_indices[index])
        seen.rows.append(rows or (0, self.frames_shape[1]))
        return original(self, index, out, rows)

    monkeypatch.setattr(FrameStack, "read_into", spy)
    return seen


def _open_by_engine(source, series_uid=None, *, chunks=None, **kwargs) -> xr.DataArray:
    # chunks={} asks xarray for dask arrays in the backend's own chunks
    chunks = {"z": chunks} if isinstance(chunks, int) else {} if chunks is None else chunks
    return xr.open_dataarray(source, engine="dicom", series_uid=series_uid, chunks=chunks, **kwargs)


@pytest.fixture(params=["function", "engine"])
def open_volume(request) -> Callable[..., xr.DataArray]:
    """Both doors onto a series: dicomarray.open_series and xarray's engine="dicom"."""
    return dicomarray.open_series if request.param == "function" else _open_by_engine


def copy_files(paths: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(p, folder / p.name)) for p in paths]


def hu_of(paths: list[Path]) -> np.ndarray:
    """Reference HU of files in the given order, by pydicom."""
    slices = []
    for path in paths:
        ds = pydicom.dcmread(path)
        slices.append(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    return np.stack(slices)
