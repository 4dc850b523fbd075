"""What every writer promises: a failure leaves nothing behind, under any name."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import xarray as xr

import dicomarray

from .export_helpers import digests, lazy_hu

EXPORTS = {
    "npy": lambda v, out: v.dicom.to_npy(out / "ct.npy"),
    "zarr": lambda v, out: v.dicom.to_zarr(out / "ct.zarr"),
    "nifti": lambda v, out: v.dicom.to_nifti(out / "ct.nii.gz", json_path=out / "ct.json"),
    "dicom": lambda v, out: v.dicom.to_dicom(out / "dcm", template=v),
}


def failing(volume: xr.DataArray, bad_block: int, *, on_read: int) -> xr.DataArray:
    """Chunk ``bad_block`` fails on its ``on_read``-th read, while the others are written."""
    reads = Counter()

    def explode(block, block_info=None):
        location = block_info[0]["chunk-location"][0]
        reads[location] += 1
        if location == bad_block and reads[location] == on_read:
            time.sleep(0.02)  # the other chunk is being written now
            raise RuntimeError("disk on fire")
        return block

    return volume.copy(data=volume.data.map_blocks(explode, meta=volume.data._meta))


@pytest.mark.parametrize("writer", sorted(EXPORTS))
def test_a_failed_export_leaves_nothing_behind(make_series, tmp_path, writer):
    volume = lazy_hu(dicomarray.open_series(make_series()[0].parent, chunks=6))
    out = tmp_path / "out"
    out.mkdir()
    # through the accessor, the failure leaves as a DicomArrayError caused by it
    with pytest.raises(dicomarray.DicomArrayError, match="RuntimeError: disk on fire"):
        # to_dicom reads the volume twice (its value range first): fail while writing
        EXPORTS[writer](failing(volume, bad_block=1, on_read=2 if writer == "dicom" else 1), out)
    time.sleep(0.2)  # any straggling chunk write would land by now
    assert sorted(p.name for p in out.iterdir()) == []


@pytest.mark.parametrize("writer", sorted(EXPORTS))
def test_the_source_files_are_never_changed(make_series, tmp_path, writer):
    paths = make_series()
    before = digests(paths)
    EXPORTS[writer](lazy_hu(dicomarray.open_series(paths[0].parent)), tmp_path / "out")
    assert digests(paths) == before
    assert sorted(p.name for p in paths[0].parent.iterdir()) == sorted(p.name for p in paths)
