"""What each contender does for each task, written the way its users would write it.

Every function takes a :class:`Data` and returns its result (an array, an index, a store);
the child process (:mod:`benchmarks.task`) times the call and describes the result after
the clock stops. Heavy libraries are imported inside the functions, and beforehand by the
child (:func:`imports_for`), so that import time never counts as task time.

The floor is what no reader can beat on this machine: read each file's bytes, take the
trailing ``Rows * Columns * 2`` bytes and convert them into one preallocated array, with
the slice order, dtype and rescale known in advance (from the dataset manifest).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.datasets import load_manifest

CONTENDERS = ("dicomarray", "simpleitk", "pydicom", "dicom-numpy", "floor")
#: Slices per zarr chunk for the contenders that write zarr themselves: the same as
#: dicomarray's default dask chunk (16 MiB of int16 slices), so all write the same chunks.
ZARR_CHUNK_SLICES = 32
#: Bytes the floor reads of each file when indexing: a generous header.
FLOOR_HEADER_BYTES = 4096

_IMPORTS = {
    "dicomarray": ("numpy", "dicomarray", "xarray", "dask.array"),
    "simpleitk": ("numpy", "SimpleITK"),
    "pydicom": ("numpy", "pydicom"),
    "dicom-numpy": ("numpy", "pydicom", "dicom_numpy"),
    "floor": ("numpy",),
}


@dataclass
class Data:
    """A dataset folder as a task sees it, plus a scratch folder for outputs."""

    folder: Path
    scratch: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    #: Things worth reporting about how the task ran (e.g. a fallback taken).
    notes: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, folder: Path, scratch: Path) -> Data:
        return cls(folder, scratch, load_manifest(folder))

    @property
    def dicom_dir(self) -> Path:
        return self.folder / "dicom"

    @property
    def ordered_files(self) -> list[Path]:
        return [self.dicom_dir / name for name in self.manifest["files"]]


def imports_for(task: str, contender: str) -> tuple[str, ...]:
    """Modules the child imports before the clock starts."""
    modules = _IMPORTS[contender]
    if task == "import":
        # the import task times exactly what a user types first
        return {"dicomarray": ("dicomarray",), "simpleitk": ("SimpleITK",)}.get(contender, modules)
    if task == "zarr":
        modules += ("zarr",)
    if task == "index" and contender == "pydicom":
        modules += ("dicomarray.header",)  # for the list of index tags only
    if task.startswith("batch"):
        modules += ("distributed",)
    return modules


# --- helpers shared by several contenders ---------------------------------------------


def walk_files(root: Path) -> Iterator[str]:
    """Every file under ``root`` in a stable order, as a reader that knows nothing would."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield os.path.join(dirpath, name)


def write_zarr(volume: Any, store: Path) -> Path:
    """Write a ``(z, y, x)`` volume as float32 zarr, chunked as dicomarray chunks."""
    import zarr

    n, rows, columns = volume.shape
    array = zarr.create_array(
        store,
        shape=volume.shape,
        dtype="float32",
        chunks=(min(ZARR_CHUNK_SLICES, n), rows, columns),
    )
    array[...] = volume  # zarr casts chunk by chunk, so int16 input costs no float copy
    return store


def _hu_float32(stored: Any, slope: float, intercept: float) -> Any:
    """Rescale a stacked volume in place after one float32 cast, as careful user code does."""
    import numpy as np

    volume = stored.astype(np.float32)
    volume *= np.float32(slope)
    volume += np.float32(intercept)
    return volume


# --- dicomarray -----------------------------------------------------------------------


def _da_hu(data: Data, volume: Any) -> Any:
    """HU through the accessor when it exists, else the same arithmetic by hand."""
    if hasattr(volume.dicom, "hu"):
        return volume.dicom.hu()
    import numpy as np

    data.notes.append("dicomarray: da.dicom.hu missing, HU computed by hand")
    slope = np.float32(volume.attrs.get("RescaleSlope", 1.0))
    intercept = np.float32(volume.attrs.get("RescaleIntercept", 0.0))
    return (volume * slope + intercept).astype("float32")


def dicomarray_index(data: Data) -> Any:
    import dicomarray

    return dicomarray.scan(data.dicom_dir)


def dicomarray_stored(data: Data) -> Any:
    import dicomarray

    return dicomarray.open_series(data.dicom_dir).values


def dicomarray_hu(data: Data) -> Any:
    import dicomarray

    return _da_hu(data, dicomarray.open_series(data.dicom_dir)).values


def dicomarray_slice(data: Data) -> Any:
    """Select, then convert: the order the accessor's docs ask for."""
    import dicomarray

    volume = dicomarray.open_series(data.dicom_dir)
    return _da_hu(data, volume.isel(z=volume.sizes["z"] // 2)).values


def dicomarray_zarr(data: Data) -> Path:
    import dicomarray

    hu = _da_hu(data, dicomarray.open_series(data.dicom_dir))
    store = data.scratch / "dicomarray.zarr"
    if hasattr(hu.dicom, "to_zarr"):
        hu.dicom.to_zarr(store)
    else:
        data.notes.append("dicomarray: da.dicom.to_zarr missing, wrote with xarray's to_zarr")
        hu.to_dataset(name=hu.name or "image").to_zarr(store)
    return store


def _dicomarray_batch(data: Data, workers: int) -> Any:
    """Every series of the study to zarr; a series that fails fails the run, so that the
    time of a batch that did nothing is never reported as a speed."""
    from dicomarray import batch

    report = batch.convert(
        data.dicom_dir, data.scratch / "batch", formats=("zarr",), workers=workers, progress=False
    )
    failed = report[report["status"] == "failed"]
    if len(failed):
        first = failed["error"].iloc[0]
        raise RuntimeError(f"{len(failed)} of {len(report)} series failed, first: {first}")
    return report


# --- SimpleITK ------------------------------------------------------------------------


def simpleitk_load(data: Data) -> tuple[Any, Any]:
    """ImageSeriesReader on GDCM's sorted file names: int16 HU; a view keeps no copy."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(data.dicom_dir)))
    image = reader.Execute()
    # the view shares the image's buffer; returning the image keeps that buffer alive
    return sitk.GetArrayViewFromImage(image), image


def simpleitk_index(data: Data) -> list[str]:
    """GDCM's series scan of every folder: SimpleITK's way to find and sort series."""
    import SimpleITK as sitk

    found: list[str] = []
    for dirpath, _, filenames in os.walk(data.dicom_dir):
        if not filenames:
            continue
        for series_id in sitk.ImageSeriesReader.GetGDCMSeriesIDs(dirpath):
            found.extend(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(dirpath, series_id))
    return found


def simpleitk_slice(data: Data) -> tuple[Any, Any]:
    """Sort with GDCM, then read the middle file alone."""
    import SimpleITK as sitk

    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(data.dicom_dir))
    image = sitk.ReadImage(names[len(names) // 2])
    view = sitk.GetArrayViewFromImage(image)
    return view.reshape(view.shape[-2:]), image


def simpleitk_zarr(data: Data) -> Path:
    view, _image = simpleitk_load(data)
    return write_zarr(view, data.scratch / "simpleitk.zarr")


# --- a plain pydicom loop -------------------------------------------------------------


def _by_position(datasets: list[Any]) -> list[Any]:
    """Sort along the slice normal, the projection of ImagePositionPatient."""
    import numpy as np

    orientation = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    return sorted(
        datasets, key=lambda ds: float(normal @ np.asarray(ds.ImagePositionPatient, dtype=float))
    )


def _pydicom_series(data: Data) -> list[Any]:
    import pydicom

    return _by_position([pydicom.dcmread(path) for path in walk_files(data.dicom_dir)])


def pydicom_index(data: Data) -> list[dict[str, Any]]:
    """dcmread(stop_before_pixels) of every file, keeping the tags dicomarray indexes."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    from dicomarray.header import INDEX_KEYWORDS

    rows = []
    for path in walk_files(data.dicom_dir):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            continue  # README.txt, Thumbs.db and friends
        rows.append({keyword: ds.get(keyword) for keyword in INDEX_KEYWORDS})
    return rows


def _stack(datasets: list[Any]) -> Any:
    import numpy as np

    return np.stack([ds.pixel_array for ds in datasets])


def pydicom_stored(data: Data) -> Any:
    return _stack(_pydicom_series(data))


def pydicom_hu(data: Data) -> Any:
    """Stack, then one float32 rescale with the first slice's slope and intercept."""
    datasets = _pydicom_series(data)
    first = datasets[0]
    return _hu_float32(_stack(datasets), float(first.RescaleSlope), float(first.RescaleIntercept))


def pydicom_slice(data: Data) -> Any:
    """Read every header to sort, then the middle file's pixels."""
    import pydicom

    headers = [
        pydicom.dcmread(path, stop_before_pixels=True) for path in walk_files(data.dicom_dir)
    ]
    middle = _by_position(headers)[len(headers) // 2]
    ds = pydicom.dcmread(middle.filename)
    return _hu_float32(ds.pixel_array, float(ds.RescaleSlope), float(ds.RescaleIntercept))


def pydicom_zarr(data: Data) -> Path:
    return write_zarr(pydicom_hu(data), data.scratch / "pydicom.zarr")


# --- dicom-numpy ----------------------------------------------------------------------


def _dicom_numpy(data: Data, rescale: bool) -> Any:
    import dicom_numpy
    import pydicom

    datasets = [pydicom.dcmread(path) for path in walk_files(data.dicom_dir)]
    voxels, _ = dicom_numpy.combine_slices(datasets, rescale=rescale, c_order_axes=True)
    return voxels


def dicom_numpy_stored(data: Data) -> Any:
    return _dicom_numpy(data, rescale=False)


def dicom_numpy_hu(data: Data) -> Any:
    return _dicom_numpy(data, rescale=True)


def dicom_numpy_zarr(data: Data) -> Path:
    return write_zarr(_dicom_numpy(data, rescale=True), data.scratch / "dicom-numpy.zarr")


# --- the floor ------------------------------------------------------------------------


def _trailing_frame(path: Path, data: Data) -> Any:
    """The last ``Rows * Columns`` 16-bit words of a file, as a 2-D array."""
    import numpy as np

    rows, columns = data.manifest["rows"], data.manifest["columns"]
    with open(path, "rb") as file:
        raw = file.read()
    count = rows * columns
    stored = np.frombuffer(raw, data.manifest["dtype"], count=count, offset=len(raw) - 2 * count)
    return stored.reshape(rows, columns)


def floor_stored(data: Data) -> Any:
    import numpy as np

    files = data.ordered_files
    m = data.manifest
    out = np.empty((len(files), m["rows"], m["columns"]), dtype=m["dtype"])
    for i, path in enumerate(files):
        out[i] = _trailing_frame(path, data)
    return out


def floor_hu(data: Data) -> Any:
    import numpy as np

    files = data.ordered_files
    m = data.manifest
    slope, intercept = np.float32(m["slope"]), np.float32(m["intercept"])
    out = np.empty((len(files), m["rows"], m["columns"]), dtype=np.float32)
    for i, path in enumerate(files):
        np.multiply(_trailing_frame(path, data), slope, out=out[i])
        out[i] += intercept
    return out


def floor_slice(data: Data) -> Any:
    import numpy as np

    files = data.ordered_files
    stored = _trailing_frame(files[len(files) // 2], data)
    out = np.multiply(stored, np.float32(data.manifest["slope"]), dtype=np.float32)
    out += np.float32(data.manifest["intercept"])
    return out


def floor_index(data: Data) -> list[bytes]:
    """Read the first few KiB of every file: the I/O an index cannot avoid."""
    heads = []
    for path in walk_files(data.dicom_dir):
        with open(path, "rb") as file:
            heads.append(file.read(FLOOR_HEADER_BYTES))
    return heads


def floor_zarr(data: Data) -> Path:
    return write_zarr(floor_hu(data), data.scratch / "floor.zarr")


TaskFunction = Callable[[Data], Any]

#: task -> contender -> function. A contender missing from a task is not applicable
#: there; :data:`NOT_APPLICABLE` says why when that is worth a line in the report.
TASKS: dict[str, dict[str, TaskFunction]] = {
    "import": {name: (lambda data: None) for name in CONTENDERS},
    "index": {
        "dicomarray": dicomarray_index,
        "simpleitk": simpleitk_index,
        "pydicom": pydicom_index,
        "floor": floor_index,
    },
    "stored": {
        "dicomarray": dicomarray_stored,
        "simpleitk": lambda data: simpleitk_load(data),
        "pydicom": pydicom_stored,
        "dicom-numpy": dicom_numpy_stored,
        "floor": floor_stored,
    },
    "hu": {
        "dicomarray": dicomarray_hu,
        "simpleitk": lambda data: simpleitk_load(data),
        "pydicom": pydicom_hu,
        "dicom-numpy": dicom_numpy_hu,
        "floor": floor_hu,
    },
    "slice": {
        "dicomarray": dicomarray_slice,
        "simpleitk": simpleitk_slice,
        "pydicom": pydicom_slice,
        "floor": floor_slice,
    },
    "zarr": {
        "dicomarray": dicomarray_zarr,
        "simpleitk": simpleitk_zarr,
        "pydicom": pydicom_zarr,
        "dicom-numpy": dicom_numpy_zarr,
        "floor": floor_zarr,
    },
    "batch-1w": {"dicomarray": lambda data: _dicomarray_batch(data, 1)},
    "batch-2w": {"dicomarray": lambda data: _dicomarray_batch(data, 2)},
}

NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("index", "dicom-numpy"): "no header index: combine_slices takes datasets already read",
    ("slice", "dicom-numpy"): "no lazy or single-slice mode: combine_slices needs every slice",
}
