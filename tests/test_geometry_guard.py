"""The geometry guard of ``tests/conftest.py``: every volume a test opens has an affine that
reproduces each frame's ImagePositionPatient within 0.01 mm (issue 13, item 5).

The guard must fail on a wrong affine, on a wrong frame of any volume of an n-D series,
and on a stack just too uneven for its affine that no warning flags; it must pass a
flagged uneven stack and read no pixels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
import pytest
import xarray as xr

import dicomarray
from dicomarray.geometry import POSITION_COORDS, VolumeGeometry

from .conftest import UNEVEN_POSITIONS
from .geometry_check import (
    POSITION_TOL_MM,
    GeometryGuard,
    affine_disagreement,
    warned_miss_mm,
)


def test_guard_checks_every_opened_volume_without_reading_pixels(
    make_series, geometry_guard: GeometryGuard, reads
) -> None:
    folder = make_series()[0].parent
    dicomarray.open_series(folder)
    xr.open_dataarray(folder, engine="dicom")
    assert geometry_guard.checked == 2
    assert geometry_guard.failures == []
    assert list(reads) == []


@pytest.mark.parametrize("error", ["origin", "slice step"])
def test_guard_fails_on_a_deliberately_wrong_affine(
    make_series, geometry_guard: GeometryGuard, monkeypatch: pytest.MonkeyPatch, error: str
) -> None:
    files = make_series()
    uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    right = VolumeGeometry.affine

    def wrong(self: VolumeGeometry) -> np.ndarray:
        affine = right(self).copy()
        if error == "origin":
            affine[:3, 3] += [0.02, 0.0, 0.0]  # 0.02 mm off at every slice
        else:
            affine[:3, 0] *= 1.001  # 12 mm slices: 0.012 mm off at slice 1, 0.13 at the last
        return affine

    monkeypatch.setattr(VolumeGeometry, "affine", wrong)
    dicomarray.open_series(files[0].parent)
    (failure,) = geometry_guard.failures
    assert uid in failure
    worst = "0.02 mm" if error == "origin" else "0.132 mm"
    assert f"by up to {worst}" in failure
    geometry_guard.failures.clear()  # recorded as it should be: the test passes


def test_guard_fails_on_an_unflagged_uneven_stack(make_series) -> None:
    volume = dicomarray.open_series(make_series()[0].parent)
    # the upper six slices 0.3 mm higher: no warning in the report, and the affine's mean
    # step misses the middle slices by 0.14 mm
    moved = volume["image_position_s"].values + np.where(np.arange(12) >= 6, 0.3, 0.0)
    uneven = volume.assign_coords(image_position_s=("z", moved), z=("z", moved))
    assert volume.attrs["dicomarray_assembly"]["warnings"] == []
    message = affine_disagreement(uneven, _no_frames())
    assert message is not None and "by up to 0.1364 mm" in message
    assert "with no warning saying so" in message


def test_guard_passes_a_stack_whose_assembly_warns_the_affine_misses(
    make_series, geometry_guard
) -> None:
    # one step 0.3 mm longer: even within 5 %, but the affine misses by 0.14 mm, and says so
    positions = [12.0 * k for k in range(6)] + [12.0 * k + 0.3 for k in range(6, 12)]
    with pytest.warns(dicomarray.GeometryWarning, match="the affine .* misses slice"):
        volume = dicomarray.open_series(make_series(positions=positions)[0].parent)
    assert warned_miss_mm(volume) == pytest.approx(0.136, abs=1e-3)
    assert geometry_guard.checked == 1
    assert geometry_guard.failures == []
    # the same stack with the warning gone is a failure
    del volume.attrs["dicomarray_assembly"]["warnings"][:]
    message = affine_disagreement(volume, _no_frames())
    assert message is not None and "by up to 0.1364 mm" in message


def _no_frames() -> pd.DataFrame:
    return pd.DataFrame(columns=["path", "frame", "ImagePositionPatient"])


def test_guard_passes_a_stack_flagged_unevenly_spaced(make_series, geometry_guard) -> None:
    hu = np.zeros((len(UNEVEN_POSITIONS), 8, 8))
    with pytest.warns(dicomarray.GeometryWarning, match="uneven spacing"):
        dicomarray.open_series(make_series(hu=hu, positions=UNEVEN_POSITIONS)[0].parent)
    assert geometry_guard.checked == 1
    assert geometry_guard.failures == []


def _two_volumes(volume: xr.DataArray) -> xr.DataArray:
    """A (t, z, y, x) volume as the n-D core builds it: the same slices twice, provenance
    on (t, z)."""
    second = volume.assign_coords(frame=("z", volume["frame"].values + 100))
    return xr.concat([volume, second], dim="t", coords="different", compat="equals")


def _frames(volume: xr.DataArray, shift_last: float) -> pd.DataFrame:
    """The frames table of the two volumes, the second volume's last frame ``shift_last``
    mm off along L."""
    positions = np.stack([volume[n].values for n in POSITION_COORDS], axis=1)
    rows = []
    for t in range(2):
        for k, path in enumerate(volume["source_file"].values):
            position = positions[k] + [shift_last, 0, 0] if (t, k) == (1, 11) else positions[k]
            frame = int(volume["frame"].values[t, k])
            rows.append({"path": path, "frame": frame, "ImagePositionPatient": list(position)})
    return pd.DataFrame(rows)


def test_guard_checks_every_frame_of_every_volume_of_an_nd_series(make_series) -> None:
    volume = _two_volumes(dicomarray.open_series(make_series()[0].parent))
    assert volume["frame"].dims == ("t", "z")
    assert affine_disagreement(volume, _frames(volume, 0.0)) is None
    message = affine_disagreement(volume, _frames(volume, 2 * POSITION_TOL_MM))
    assert message is not None and "1 of 36 slice and frame positions" in message
