"""The writers stream: peak memory is a few chunks, not the volume (measured by tracemalloc).

A volume of 48 chunks is exported by each writer; numpy's buffers (and the pixel reads,
which stay below dicomarray's 4 MiB memory-map threshold here) are traced, so the peak
counts every chunk held at once. Whole-process peak memory of large exports is measured
in a fresh process by the benchmark harness (``python -m benchmarks``, zarr task).
"""

from __future__ import annotations

import tracemalloc

import dask
import pytest

import dicomarray
from dicomarray.sample import make_series

from .export_helpers import lazy_hu

SLICES, SIZE, SLICES_PER_CHUNK = 96, 256, 2


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    folder = tmp_path_factory.mktemp("memory") / "series"
    make_series(folder, SLICES, rows=SIZE, columns=SIZE)
    return dicomarray.open_series(folder, chunks=SLICES_PER_CHUNK)


def peak_bytes(export) -> int:
    export()  # once untraced: imports and caches are not what is measured
    with dask.config.set(scheduler="threads", num_workers=2):
        tracemalloc.start()
        try:
            export()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()


EXPORTS = {
    "npy": lambda v, out: v.dicom.to_npy(out / "ct.npy", overwrite=True),
    "zarr": lambda v, out: v.dicom.to_zarr(out / "ct.zarr", overwrite=True),
    "nifti": lambda v, out: v.dicom.to_nifti(out / "ct.nii", overwrite=True),
    "dicom": lambda v, out: v.dicom.to_dicom(out / "dcm", template=v, overwrite=True),
}


@pytest.mark.parametrize("writer", sorted(EXPORTS))
def test_peak_memory_is_a_few_chunks_not_the_volume(volume, tmp_path, writer):
    # DICOM is written from HU: float64 chunks, four times the stored ones
    source = lazy_hu(volume) if writer == "dicom" else volume
    chunk = source.nbytes // 48
    peak = peak_bytes(lambda: EXPORTS[writer](source, tmp_path))
    assert peak < 8 * chunk, f"{writer}: peak {peak / chunk:.1f} chunks"
    assert peak < source.nbytes / 4
