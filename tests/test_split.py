"""Frames that repeat slice positions open as a grid of volumes (dicomarray.split).

Series are written in each test with a known value per (volume, slice), so every test
checks both the dims and that each frame landed in its cell of the grid.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

import dicomarray
from dicomarray.errors import AssemblyError, GeometryWarning
from dicomarray.split import ORDER_RULE, split_volumes

SERIES_UID = "1.2.826.0.1.3680043.8.498.77"
SIZE = 6


def write_frames(folder: Path, frames: list[dict[str, Any]]) -> list[Path]:
    """One single-frame MR file per entry: ``z`` (and ``x``) in mm, ``value`` (every pixel)
    and tags.

    Files are written in a shuffled order of names so that nothing depends on it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    order = np.random.default_rng(0).permutation(len(frames))
    for number, i in enumerate(order):
        spec = dict(frames[i])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"f{number:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = SERIES_UID
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.78"
        ds.Modality = "MR"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [float(spec.pop("x", 0.0)), 0.0, float(spec.pop("z"))]
        ds.PixelSpacing = [1.0, 1.0]
        ds.Rows = ds.Columns = SIZE
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0
        ds.PixelData = np.full((SIZE, SIZE), spec.pop("value"), np.uint16).tobytes()
        for keyword, value in spec.items():
            setattr(ds, keyword, value)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def grid_of(n_volumes: int, n_slices: int, tags: Any) -> list[dict[str, Any]]:
    """Frames of ``n_volumes`` x ``n_slices``; value 100 * volume + slice; ``tags(v, s)``."""
    return [
        {"z": 3.0 * s, "value": 100 * v + s, "InstanceNumber": v * n_slices + s + 1, **tags(v, s)}
        for v in range(n_volumes)
        for s in range(n_slices)
    ]


def corner_values(volume: Any) -> np.ndarray:
    """The value of pixel (0, 0) of every frame, in the array's order."""
    return np.asarray(volume[..., 0, 0].values)


def test_temporal_positions_make_a_time_dim_in_seconds(tmp_path):
    def tags(v: int, s: int) -> dict[str, Any]:
        # a slice's own acquisition time within its volume: time is per volume start
        return {"TemporalPositionIdentifier": v + 1, "AcquisitionTime": f"1200{v * 2:02d}.{s}"}

    write_frames(tmp_path / "s", grid_of(3, 4, tags))
    volume = dicomarray.open_series(tmp_path / "s")
    assert volume.dims == ("t", "z", "y", "x") and volume.shape == (3, 4, SIZE, SIZE)
    np.testing.assert_allclose(volume["t"], [0.0, 2.0, 4.0])
    assert volume["t"].attrs["units"] == "s"
    np.testing.assert_array_equal(volume["temporal_position"], [1, 2, 3])
    np.testing.assert_array_equal(
        corner_values(volume), [[0, 1, 2, 3], [100, 101, 102, 103], [200, 201, 202, 203]]
    )
    np.testing.assert_allclose(volume["z"], [0, 3, 6, 9])
    # per-frame provenance over the whole grid, per-slice times over (t, z)
    assert volume["source_file"].dims == ("t", "z")
    assert volume["acquisition_time"].dims == ("t", "z")
    report = volume.attrs["dicomarray_assembly"]
    assert report["dims"] == [{"dim": "t", "size": 3, "split_by": ["TemporalPositionIdentifier"]}]


def test_echoes_make_an_echo_dim_in_ms(tmp_path):
    def tags(v: int, s: int) -> dict[str, Any]:
        return {"EchoNumbers": v + 1, "EchoTime": [4.92, 7.38][v]}

    write_frames(tmp_path / "s", grid_of(2, 3, tags))
    volume = dicomarray.open_series(tmp_path / "s")
    assert volume.dims == ("echo", "z", "y", "x")
    np.testing.assert_array_equal(volume["echo_number"], [1, 2])
    np.testing.assert_array_equal(corner_values(volume), [[0, 1, 2], [100, 101, 102]])


def test_two_tags_together_make_two_dims(tmp_path):
    """A field map: 2 echoes x magnitude/phase, each tag alone repeats positions."""

    def tags(v: int, s: int) -> dict[str, Any]:
        kind = ["M", "P"][v % 2]
        return {"EchoNumbers": v // 2 + 1, "ImageType": ["ORIGINAL", "PRIMARY", kind]}

    write_frames(tmp_path / "s", grid_of(4, 3, tags))
    volume = dicomarray.open_series(tmp_path / "s")
    assert volume.dims == ("echo", "image_type", "z", "y", "x")
    assert list(volume["image_type"].values) == ["ORIGINAL\\PRIMARY\\M", "ORIGINAL\\PRIMARY\\P"]
    np.testing.assert_array_equal(corner_values(volume)[:, :, 0], [[0, 100], [200, 300]])


def test_volumes_told_apart_only_by_their_order(tmp_path):
    """GE fMRI: no tag differs; the k-th file at each position (InstanceNumber) is volume k."""
    write_frames(tmp_path / "s", grid_of(3, 4, lambda v, s: {}))
    volume = dicomarray.open_series(tmp_path / "s")
    assert volume.dims == ("volume", "z", "y", "x")
    assert volume.attrs["dicomarray_assembly"]["dims"][0]["split_by"] == [ORDER_RULE]
    np.testing.assert_array_equal(corner_values(volume)[:, 0], [0, 100, 200])


def test_split_by_and_dims_override_the_decision(tmp_path):
    def tags(v: int, s: int) -> dict[str, Any]:
        return {"TemporalPositionIdentifier": v + 1, "AcquisitionNumber": 10 - v}

    write_frames(tmp_path / "s", grid_of(2, 3, tags))
    by_number = dicomarray.open_series(tmp_path / "s", split_by=("AcquisitionNumber",))
    assert by_number.dims[0] == "t"
    np.testing.assert_array_equal(by_number["acquisition_number"], [9, 10])
    np.testing.assert_array_equal(corner_values(by_number)[:, 0], [100, 0])  # by its values
    with pytest.raises(AssemblyError, match="split_by names 'NoSuchTag'"):
        dicomarray.open_series(tmp_path / "s", split_by=("NoSuchTag",))
    # the order of acquisition takes the name asked for
    by_order = dicomarray.open_series(tmp_path / "s", dims=("echo",))
    assert by_order.dims[0] == "echo" and by_order.sizes["echo"] == 2
    # a t dim by its tags, unless a volume dim is asked for
    assert dicomarray.open_series(tmp_path / "s", dims=("volume",)).dims[0] == "volume"
    with pytest.raises(AssemblyError, match=r"with dims=\('echo', 'diffusion'\)"):
        dicomarray.open_series(tmp_path / "s", dims=("echo", "diffusion"))


def test_split_by_and_dims_given_as_one_string_name_one_tag_or_dim(tmp_path):
    """A str is one name, not a sequence of letters ('E', 'c', 'h', 'o')."""

    def tags(v: int, s: int) -> dict[str, Any]:
        return {"AcquisitionNumber": v + 1}

    write_frames(tmp_path / "s", grid_of(2, 3, tags))
    by_tag = dicomarray.open_series(tmp_path / "s", split_by="AcquisitionNumber")
    assert by_tag.attrs["dicomarray_assembly"]["dims"][0]["split_by"] == ["AcquisitionNumber"]
    assert dicomarray.open_series(tmp_path / "s", dims="echo").dims[0] == "echo"
    with pytest.raises(AssemblyError, match=r"with split_by=\('EchoTime',\)\."):
        dicomarray.open_series(tmp_path / "s", split_by="EchoTime")


@pytest.mark.parametrize(
    ("dims", "problem"),
    [(("z",), r"names \['z'\]"), (("t", "y"), r"names \['y'\]"), (("t", "t"), r"repeats \['t'\]")],
)
def test_dims_that_cannot_be_made_are_refused_naming_them(tmp_path, dims, problem):
    """A spatial or repeated dim name is an AssemblyError, not xarray's size conflict."""
    write_frames(tmp_path / "s", grid_of(2, 3, lambda v, s: {}))
    with pytest.raises(AssemblyError, match=problem):
        dicomarray.open_series(tmp_path / "s", dims=dims)


def test_an_empty_split_by_is_reported_as_one_volume(tmp_path):
    write_frames(tmp_path / "s", grid_of(2, 3, lambda v, s: {}))
    with pytest.raises(AssemblyError) as caught:
        dicomarray.open_series(tmp_path / "s", split_by=())
    assert "split_by=(): 1 volumes of 6 frames for 3 positions" in str(caught.value)


def test_a_missing_slice_is_refused_naming_the_rules_tried_and_the_files(tmp_path):
    frames = grid_of(3, 4, lambda v, s: {"TemporalPositionIdentifier": v + 1})
    del frames[6]  # volume 1, slice 2
    write_frames(tmp_path / "s", frames)
    with pytest.raises(AssemblyError, match="do not form a full grid") as caught:
        dicomarray.open_series(tmp_path / "s")
    message = str(caught.value)
    assert "11 frames at 4 slice positions (each holds 2 to 3)" in message
    assert "split_by=('TemporalPositionIdentifier',): 3 volumes of 3 to 4 frames" in message
    assert "split_by=" in message and "dims=" in message  # what to try
    # the files named are those at the position that lacks a frame
    named = {p for p in message.split() if p.startswith(str(tmp_path))}
    at_slice_2 = {
        str(p)
        for p in (tmp_path / "s").iterdir()
        if pydicom.dcmread(p).ImagePositionPatient[2] == 6
    }
    assert {n.rstrip(",:") for n in named} <= at_slice_2


def test_selecting_one_volume_reads_only_its_frames(tmp_path, reads):
    write_frames(tmp_path / "s", grid_of(3, 4, lambda v, s: {"TemporalPositionIdentifier": v + 1}))
    volume = dicomarray.open_series(tmp_path / "s")
    reads.clear()
    one = volume.isel(t=2, z=1).values
    assert int(one[0, 0]) == 201
    assert len(reads) == 1
    reads.clear()
    np.testing.assert_array_equal(volume.isel(t=1).values[:, 0, 0], [100, 101, 102, 103])
    assert len(reads) == 4


def test_chunks_hold_whole_volumes_and_may_name_extra_dims(tmp_path):
    write_frames(tmp_path / "s", grid_of(3, 4, lambda v, s: {"TemporalPositionIdentifier": v + 1}))
    volume = dicomarray.open_series(tmp_path / "s")
    assert volume.chunks == ((3,), (4,), (SIZE,), (SIZE,))
    named = dicomarray.open_series(tmp_path / "s", chunks={"t": 1, "z": 2})
    assert named.chunks == ((1, 1, 1), (2, 2), (SIZE,), (SIZE,))
    np.testing.assert_array_equal(named.values, volume.values)


def test_a_volume_whose_slices_move_is_refused(tmp_path):
    """Same z along the normal, 2 mm apart in x: no one geometry holds both volumes."""

    def tags(v: int, s: int) -> dict[str, Any]:
        return {"TemporalPositionIdentifier": v + 1, "x": 2.0 * v}

    write_frames(tmp_path / "s", grid_of(2, 3, tags))
    with pytest.raises(AssemblyError, match="lies 2 mm from the same slice of the first"):
        dicomarray.open_series(tmp_path / "s")


def test_an_affine_that_misses_a_slice_position_warns_by_how_much(tmp_path):
    """1 % uneven spacing is below the uneven-spacing tolerance, not below 0.01 mm."""
    frames = [{"z": z, "value": i} for i, z in enumerate([0.0, 3.0, 6.03, 9.0])]
    write_frames(tmp_path / "s", frames)
    with pytest.warns(GeometryWarning, match=r"misses slice 2's ImagePositionPatient by 0.03 mm"):
        opened = dicomarray.open_series(tmp_path / "s")
    # the remedy the message names exists and places slice 2 where its file says
    message = opened.attrs["dicomarray_assembly"]["warnings"][-1]
    assert ".dicom.geometry.world(indices)" in message
    assert opened.dicom.geometry.world(np.array([2.0, 0.0, 0.0]))[2] == pytest.approx(6.03)
    regular = [{"z": 3.0 * i, "value": i} for i in range(4)]
    write_frames(tmp_path / "r", regular)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeometryWarning)
        dicomarray.open_series(tmp_path / "r")


# -- the rules on frame tables (columns other readers fill: enhanced files, vendors) --------


def frame_table(n_volumes: int, n_slices: int, **columns: Any) -> tuple[pd.DataFrame, np.ndarray]:
    """Frame rows as assembly gives them, in a shuffled order, and their z."""
    rows = [
        {"path": f"v{v}s{s}.dcm", "frame": 0, "InstanceNumber": v * n_slices + s + 1}
        | {key: f(v, s) for key, f in columns.items()}
        for v in range(n_volumes)
        for s in range(n_slices)
    ]
    z = np.array([2.0 * s for v in range(n_volumes) for s in range(n_slices)])
    shuffle = np.random.default_rng(1).permutation(len(rows))
    return pd.DataFrame([rows[i] for i in shuffle]), z[shuffle]


def split(frames: pd.DataFrame, z: np.ndarray, **kwargs: Any) -> Any:
    order = np.lexsort((frames["InstanceNumber"].to_numpy(), z))
    return split_volumes(frames, z, order, **kwargs)


def test_diffusion_directions_in_acquisition_order_with_repeated_b0():
    b_values = [0, 1000, 1000, 0]
    gradients = [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]]
    frames, z = frame_table(
        4,
        3,
        DiffusionBValue=lambda v, s: b_values[v],
        DiffusionGradientOrientation=lambda v, s: gradients[v],
    )
    grid = split(frames, z)
    (dim,) = grid.dims
    assert dim.name == "diffusion" and dim.split_by == (ORDER_RULE,)
    np.testing.assert_array_equal(dim.coords["b_value"][0], b_values)
    np.testing.assert_array_equal(dim.coords["gradient_l"][0], [0, 1, 0, 0])
    np.testing.assert_array_equal(dim.coords["gradient_p"][0], [0, 0, 1, 0])
    ordered = frames.iloc[grid.order]
    assert list(ordered["path"][:4]) == ["v0s0.dcm", "v0s1.dcm", "v0s2.dcm", "v1s0.dcm"]


def test_distinct_diffusion_directions_split_by_the_diffusion_tags():
    frames, z = frame_table(
        3,
        2,
        DiffusionBValue=lambda v, s: [0, 500, 1000][v],
        DiffusionGradientOrientation=lambda v, s: [[0, 0, 0], [1, 0, 0], [0, 1, 0]][v],
    )
    (dim,) = split(frames, z).dims
    assert dim.name == "diffusion"
    assert dim.split_by == ("DiffusionBValue", "DiffusionGradientOrientation")
    np.testing.assert_array_equal(dim.coords["b_value"][0], [0, 500, 1000])


def test_an_enhanced_dimension_index_names_the_split_first():
    """The Dimension Index Sequence says time, though echoes also vary (one per volume)."""
    frames, z = frame_table(
        2,
        3,
        TemporalPositionIndex=lambda v, s: v + 1,
        EchoTime=lambda v, s: [5.0, 6.0][v],
        DimensionIndexPointers=lambda v, s: ["InStackPositionNumber", "TemporalPositionIndex"],
    )
    (dim,) = split(frames, z).dims
    assert (dim.name, dim.split_by) == ("t", ("TemporalPositionIndex",))


def test_order_rule_names_time_from_the_declared_temporal_positions():
    frames, z = frame_table(
        3, 2, NumberOfTemporalPositions=lambda v, s: 3, RepetitionTime=lambda v, s: 2000.0
    )
    (dim,) = split(frames, z).dims
    assert dim.name == "t"
    np.testing.assert_allclose(dim.coords["t"][0], [0.0, 2.0, 4.0])
    assert "RepetitionTime" in dim.coords["t"][1]["long_name"]


def test_times_across_midnight_count_on():
    frames, z = frame_table(
        2,
        2,
        AcquisitionTime=lambda v, s: ["235959.5", "000001.5"][v],
        TemporalPositionIdentifier=lambda v, s: v + 1,
    )
    (dim,) = split(frames, z).dims
    np.testing.assert_allclose(dim.coords["t"][0], [0.0, 2.0])


def test_one_volume_is_no_grid():
    frames, z = frame_table(1, 5, AcquisitionTime=lambda v, s: f"10000{s}")
    grid = split(frames, z)
    assert grid.dims == () and grid.shape == (5,)


def test_volumes_told_apart_by_times_of_day_follow_them_across_midnight():
    """Split by AcquisitionTime alone: the volume at 00:00:01 comes after the one at 23:59:59."""
    frames, z = frame_table(2, 2, AcquisitionTime=lambda v, s: ["235959.5", "000001.5"][v])
    grid = split(frames, z)
    (dim,) = grid.dims
    assert dim.split_by == ("AcquisitionTime",)
    np.testing.assert_allclose(dim.coords["t"][0], [0.0, 2.0])
    assert list(frames.iloc[grid.order]["path"]) == ["v0s0.dcm", "v0s1.dcm", "v1s0.dcm", "v1s1.dcm"]


def test_a_rule_named_by_the_dimension_index_and_the_tag_rules_is_tried_once():
    frames, z = frame_table(
        4,
        3,
        EchoTime=lambda v, s: [2.3, 4.6][v // 2],
        ImageType=lambda v, s: ["ORIGINAL", "PRIMARY", ["M", "P"][v % 2]],
        DimensionIndexPointers=lambda v, s: ["InStackPositionNumber", "EffectiveEchoTime"],
    )
    grid = split(frames, z)
    assert [d.name for d in grid.dims] == ["echo", "image_type"]
    assert grid.candidates == [
        "split_by=('EchoTime',): 2 volumes of 6 frames for 3 positions",
        "split_by=('ImageType',): 2 volumes of 6 frames for 3 positions",
    ]


def test_the_readme_volumes_example_runs(tmp_path, monkeypatch):
    import re

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### Volumes over the same slices", 1)[1].split("\n#", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    monkeypatch.chdir(tmp_path)
    names: dict[str, Any] = {}
    exec(compile(block, "README.md", "exec"), names)
    assert names["volume"].dims == ("t", "z", "y", "x")
    np.testing.assert_allclose(names["volume"]["t"], [0, 2, 4, 6, 8, 10])
    assert names["frame"].shape == (64, 64)
    np.testing.assert_array_equal(names["by_number"].values, names["volume"].values)
