"""The dicomarray command, called in-process through main() and as a real subprocess."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import dicomarray
from dicomarray.cli import _left_out, main
from dicomarray.sample import write_series

from .conftest import XA10_FILES, gunzip, pydicom_file
from .nd_series import write_time_series


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory):
    """The demo on two sample patients; the sample study is cached beside the output."""
    base = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DICOMARRAY_CACHE", str(base / "cache"))
        assert main(["demo", "--out", str(base / "output"), "--patients", "2"]) == 0
    base.joinpath("output", "sample_study").symlink_to(next((base / "cache").iterdir()))
    return base / "output"


def test_demo_converts_each_head_series(demo_output, capsys):
    folders = sorted(p.parent for p in demo_output.rglob("manifest.json"))
    heads = [f for f in folders if f.name.startswith("2_HEAD")]
    assert [f.relative_to(demo_output).parts[0] for f in heads] == ["PAT041", "PAT042"]
    # and the first patient's perfusion series, with its curves (tests/test_perfusion.py)
    (perfusion,) = set(folders) - set(heads)
    assert (perfusion / "time_curves.png").is_file() and (perfusion / "image.npy").is_file()
    for folder in heads:
        names = {p.name for p in folder.iterdir()}
        assert {"image.zarr", "image.npy", "image.json", "middle.jpg"} <= names
        assert {"orthogonal.jpg", "montage.jpg"} <= names
        picture = np.asarray(Image.open(folder / "middle.jpg"))
        assert picture.shape == (512, 512)
        assert picture[0, 0] < 5  # air is black in the brain window
        assert picture[256, 256] > 60  # brain is grey
        hu = np.load(folder / "image.npy", mmap_mode="r")
        assert hu.dtype == np.float32 and -1001 <= hu[0, 0, 0] <= -999


def test_demo_prints_a_summary_and_reuses_the_sample(demo_output, capsys, monkeypatch):
    cache = demo_output.parent / "cache"
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*")}
    monkeypatch.setenv("DICOMARRAY_CACHE", str(cache))
    assert main(["demo", "--out", str(demo_output), "--patients", "2"]) == 0
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*")} == before
    printed = capsys.readouterr().out
    assert "PAT041" in printed and "3 series of 2 patients" in printed and "0 failed" in printed


def test_demo_on_a_given_tree(demo_output, tmp_path):
    report_rows = main(
        ["demo", "--data", str(demo_output / "sample_study"), "--out", str(tmp_path)]
    )
    assert report_rows == 0
    assert len(list(tmp_path.rglob("manifest.json"))) == 3  # two heads and a perfusion


def test_scan_writes_the_index(demo_output, tmp_path, capsys):
    out = tmp_path / "index.csv"
    assert main(["scan", str(demo_output / "sample_study"), "--out", str(out)]) == 0
    expected = len(dicomarray.scan(demo_output / "sample_study"))
    assert f"{expected} DICOM instances" in capsys.readouterr().out
    assert len(out.read_text().splitlines()) == expected + 1


def test_errors_are_one_line_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dicomarray", "scan", str(tmp_path / "absent")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "absent" in result.stderr and "Traceback" not in result.stderr


def test_bad_usage_exits_2():
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dicomarray", *args], capture_output=True, text=True, check=False
    )


def test_series_table(demo_output):
    result = run_cli("series", str(demo_output / "sample_study"))
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 1 + 5 and "AXIAL" in result.stdout and "SAGITTAL" in result.stdout


def test_info_describes_geometry_and_tags(demo_output):
    head = next((demo_output / "sample_study" / "041").glob("*/2_*"))
    result = run_cli("info", str(head))
    assert result.returncode == 0
    assert "sorted by ImagePositionPatient" in result.stdout
    assert "PatientID" in result.stdout and "affine" in result.stdout


def test_info_shows_spacing_and_left_out_frames_for_people(tmp_path, capsys):
    # real Siemens XA10 enhanced files: two time points of 6 frames, one file each, open
    # as one (t, z, y, x) series; the times are the first frames' FrameAcquisitionDateTime
    # (083634.295 and 083634.795, by pydicom), the split the enhanced TemporalPositionIndex
    gunzip(XA10_FILES, tmp_path)
    assert main(["info", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "spacing     z 2.4 mm, y 3.375 mm, x 3.375 mm" in lines
    assert "t           2 volumes, 0 .. 0.5 s, split by TemporalPositionIndex" in lines
    assert "left out    0 file(s)" in lines
    frames = [{"path": "a.dcm"}] * 6 + [{"path": "b.dcm"}]
    assert _left_out(frames) == "7 frame(s) of 2 file(s)"  # multi-frame files: by frame
    assert main(["info", str(pydicom_file("CT_small.dcm"))]) == 0  # one slice: no z step
    assert "spacing     z unknown, y 0.661468 mm, x 0.661468 mm" in capsys.readouterr().out


def test_filter_prints_matches_and_json(demo_output, tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"is_localizer": false, "Modality": "CT"}')
    plain = run_cli("filter", str(demo_output / "sample_study"), "--config", str(config))
    assert plain.returncode == 0 and len(plain.stdout.splitlines()) == 3
    as_json = run_cli(
        "filter", str(demo_output / "sample_study"), "--config", str(config), "--json"
    )
    records = json.loads(as_json.stdout)
    assert [r["meta"]["PatientID"] for r in records] == ["PAT041", "PAT041", "PAT042"]


def test_filter_with_a_bad_config_is_bad_usage(demo_output, tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"NoSuchTag": 1}')
    result = run_cli("filter", str(demo_output / "sample_study"), "--config", str(config))
    assert result.returncode == 2 and "NoSuchTag" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("case", ["missing", "empty", "junk"])
def test_info_on_bad_input_fails_with_one_line(tmp_path, case):
    target = tmp_path / case
    if case != "missing":
        target.mkdir()
    if case == "junk":
        (target / "notes.txt").write_text("not dicom")
    result = run_cli("info", str(target))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and case in result.stderr


@pytest.fixture
def head_series(demo_output):
    return next((demo_output / "sample_study" / "041").glob("*/2_*"))


def test_to_npy_with_the_script_flags(head_series, tmp_path):
    npy, sidecar = tmp_path / "v.npy", tmp_path / "v.json"
    result = run_cli("to-npy", "-i", str(head_series), "-n", str(npy), "-j", str(sidecar))
    assert result.returncode == 0, result.stderr
    hu = np.load(npy)
    stored = dicomarray.open_series(head_series)
    expected = stored.values * stored.attrs["RescaleSlope"] + stored.attrs["RescaleIntercept"]
    np.testing.assert_allclose(hu, expected)
    meta = json.loads(sidecar.read_text())
    assert meta["PatientID"] == "PAT041" and len(meta["geometry"]["z"]) == hu.shape[0]
    raw = tmp_path / "raw.npy"
    flags = ("--input-dicom", str(head_series), "--output-npy", str(raw))
    assert (
        run_cli("to-npy", *flags, "--output-json", str(tmp_path / "r.json"), "--raw").returncode
        == 0
    )
    np.testing.assert_array_equal(np.load(raw), stored.values)
    again = run_cli("to-npy", "-i", str(head_series), "-n", str(npy), "-j", str(sidecar))
    assert again.returncode == 1 and "already exists" in again.stderr


def test_to_dicom_round_trip_and_shape_mismatch(head_series, tmp_path):
    npy = tmp_path / "v.npy"
    assert (
        run_cli(
            "to-npy", "-i", str(head_series), "-n", str(npy), "-j", str(tmp_path / "v.json")
        ).returncode
        == 0
    )
    out = tmp_path / "dicom"
    result = run_cli("to-dicom", "-n", str(npy), "-d", str(head_series), "-o", str(out))
    assert result.returncode == 0, result.stderr
    back = dicomarray.open_series(out).dicom.hu().values
    np.testing.assert_allclose(back, np.load(npy), atol=1.0)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 4, 5), np.float32))
    mismatch = run_cli(
        "to-dicom",
        "-n",
        str(bad),
        "-d",
        str(head_series),
        "-o",
        str(tmp_path / "x"),
        "--values",
        "modality",
    )
    assert mismatch.returncode == 1 and "shape" in mismatch.stderr
    assert "Traceback" not in mismatch.stderr


def test_to_zarr_and_render(head_series, tmp_path):
    import xarray as xr

    store = tmp_path / "v.zarr"
    assert run_cli("to-zarr", "-i", str(head_series), "-o", str(store)).returncode == 0
    assert xr.open_zarr(store)["image"].dtype == np.float32
    picture = tmp_path / "coronal.png"
    args = ("render", "-i", str(head_series), "-o", str(picture), "--axis", "coronal")
    assert run_cli(*args, "--preset", "bone").returncode == 0
    assert Image.open(picture).size[0] == 512
    assert (
        run_cli(
            "render", "-i", str(head_series), "-o", str(tmp_path / "m.jpg"), "--montage"
        ).returncode
        == 0
    )
    unknown = run_cli(*args, "--preset", "nope", "--overwrite")
    assert unknown.returncode == 1 and "nope" in unknown.stderr


@pytest.mark.parametrize("url", ["foo://bucket/x.zarr", "s3://bucket/x.zarr"])
def test_a_store_that_cannot_be_opened_is_one_line(head_series, capsys, url):
    if url.startswith("s3:") and importlib.util.find_spec("s3fs") is not None:
        pytest.skip("s3fs is installed: the store would be opened")
    assert main(["to-zarr", "-i", str(head_series), "-o", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dicomarray: error: {url}: ") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["to-npy", "to-zarr", "render"])
def test_missing_input_is_one_line(tmp_path, command):
    out = tmp_path / "o.jpg"
    flags = {"to-npy": ["-n", str(tmp_path / "a.npy"), "-j", str(tmp_path / "a.json")]}.get(
        command, ["-o", str(out)]
    )
    result = run_cli(command, "-i", str(tmp_path / "absent"), *flags)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------------
# Small series written in the tests, run in-process
# --------------------------------------------------------------------------------------------


def stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.fixture
def small_series(make_series):
    """A 12-slice 64 x 64 series (number 7, "SMALL HEAD") in its own folder."""
    tags = {"SeriesNumber": 7, "SeriesDescription": "SMALL HEAD"}
    return make_series("small", tags=tags)[0].parent


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_works_anywhere_on_the_line(tmp_path, where):
    args = ["scan", str(tmp_path / "absent")]
    args = ["--debug", *args] if where == "before" else [*args, "--debug"]
    with pytest.raises(dicomarray.SeriesNotFoundError):  # --debug: the exception itself
        main(args)


class Panic(BaseException):
    """What pyo3 raises when a Rust decoder panics: not an Exception."""


@pytest.mark.parametrize("raised", [RuntimeError("boom"), Panic("decoder panicked")])
def test_any_failure_is_one_error_line(small_series, monkeypatch, capsys, raised):
    def failing(*args, **kwargs):
        raise raised

    monkeypatch.setattr("dicomarray.volume.open_series", failing)
    assert main(["info", str(small_series)]) == 1
    lines = stderr_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("dicomarray: error: unexpected ")
    assert str(raised) in lines[0] and type(raised).__name__ in lines[0]


def test_scan_refuses_an_unknown_suffix_before_scanning(small_series, tmp_path, capsys):
    out = tmp_path / "index.xlsx"
    assert main(["scan", str(small_series), "--out", str(out)]) == 1
    assert not out.exists()
    assert stderr_lines(capsys) == [
        f"dicomarray: error: {out}: unknown index format .xlsx; use .csv or .parquet"
    ]


def test_scan_replaces_an_index_only_with_overwrite(small_series, tmp_path, capsys):
    out = tmp_path / "index.csv"
    out.write_text("mine\n")
    assert main(["scan", str(small_series), "--out", str(out)]) == 1
    assert out.read_text() == "mine\n"
    assert stderr_lines(capsys) == [
        f"dicomarray: error: {out} already exists; pass --overwrite to replace it"
    ]
    assert main(["scan", str(small_series), "--out", str(out), "--overwrite"]) == 0
    table = pd.read_csv(out)
    assert len(table) == 12 and sorted(p.name for p in tmp_path.iterdir()) == ["index.csv", "small"]
    # multi-values as JSON lists, missing values as empty cells, never "None" or "<NA>"
    assert json.loads(table["PixelSpacing"].iloc[0]) == [3.6, 3.6]
    assert table["SpacingBetweenSlices"].isna().all()
    assert "None" not in out.read_text() and "<NA>" not in out.read_text()


def test_scan_writes_parquet_with_column_types(small_series, tmp_path):
    pytest.importorskip("pyarrow")
    out = tmp_path / "index.parquet"
    assert main(["scan", str(small_series), "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    expected = dicomarray.scan(small_series)
    assert list(table["path"]) == list(expected["path"])
    assert sorted(table["InstanceNumber"].tolist()) == list(range(1, 13))
    assert list(table["PixelSpacing"].iloc[0]) == [3.6, 3.6]
    assert table["Rows"].dtype.kind in "iu" or str(table["Rows"].dtype) == "Int64"


def test_scan_parquet_without_pyarrow_is_one_line(small_series, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    out = tmp_path / "index.parquet"
    assert main(["scan", str(small_series), "--out", str(out)]) == 1
    assert stderr_lines(capsys) == [
        f"dicomarray: error: {out}: writing parquet needs pyarrow: "
        "pip install 'dicomarray[parquet]'"
    ]
    assert not out.exists()


def test_render_replaces_a_picture_only_with_overwrite(small_series, tmp_path, capsys):
    picture = tmp_path / "slice.png"
    picture.write_bytes(b"mine")
    assert main(["render", "-i", str(small_series), "-o", str(picture)]) == 1
    assert picture.read_bytes() == b"mine"
    assert "pass --overwrite to replace it" in capsys.readouterr().err
    assert main(["render", "-i", str(small_series), "-o", str(picture), "--overwrite"]) == 0
    assert Image.open(picture).size == (64, 64)


def test_library_messages_name_the_cli_flag(small_series, tmp_path, capsys):
    npy, sidecar = tmp_path / "v.npy", tmp_path / "v.json"
    flags = ["-i", str(small_series), "-n", str(npy), "-j", str(sidecar)]
    assert main(["to-npy", *flags]) == 0
    assert main(["to-npy", *flags]) == 1
    err = capsys.readouterr().err
    assert "pass --overwrite to replace it" in err and "overwrite=True" not in err
    assert main(["to-npy", *flags, "--overwrite"]) == 0


@pytest.fixture
def two_series(make_series):
    """One folder holding a 12-slice series (number 1) and a 6-slice one (number 2)."""
    many = make_series("both", tags={"SeriesNumber": 1})
    few = make_series("few", hu=np.full((6, 64, 64), 40.0), tags={"SeriesNumber": 2}, seed=3)
    for path in few:
        path.rename(many[0].parent / f"few_{path.name}")
    uids = dicomarray.scan(many[0].parent).groupby("SeriesNumber")["SeriesInstanceUID"].first()
    return many[0].parent, str(uids[1]), str(uids[2])


def test_series_uid_chooses_the_series_on_every_command(two_series, tmp_path, capsys):
    folder, _, small = two_series
    pick = ["--series-uid", small]
    assert (
        main(
            [
                "to-npy",
                "-i",
                str(folder),
                "-n",
                str(tmp_path / "a.npy"),
                "-j",
                str(tmp_path / "a.json"),
                *pick,
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "a.npy").shape == (6, 64, 64)
    assert main(["to-zarr", "-i", str(folder), "-o", str(tmp_path / "a.zarr"), *pick]) == 0
    assert (
        main(
            ["render", "-i", str(folder), "-o", str(tmp_path / "a.png"), "--axis", "coronal", *pick]
        )
        == 0
    )
    assert main(["info", str(folder), *pick]) == 0
    assert f"series      {small}" in capsys.readouterr().out
    assert (
        main(
            [
                "to-dicom",
                "-n",
                str(tmp_path / "a.npy"),
                "-d",
                str(folder),
                "-o",
                str(tmp_path / "dicom"),
                *pick,
            ]
        )
        == 0
    )
    assert len(list((tmp_path / "dicom").iterdir())) == 6


def test_series_table_shows_uids_and_integers(two_series, capsys):
    folder, large, small = two_series
    stray = folder / "no_number.dcm"  # one instance without a SeriesNumber: a None in the column
    import pydicom

    ds = pydicom.dcmread(next(folder.glob("few_*")))
    del ds.SeriesNumber
    ds.SeriesInstanceUID = ds.SOPInstanceUID = "1.2.3.4.5"
    ds.save_as(stray)
    assert main(["series", str(folder)]) == 0
    out = capsys.readouterr().out
    assert large in out and small in out and "1.2.3.4.5" in out
    header, *rows = out.splitlines()
    assert "SeriesInstanceUID" in header
    numbers = [row.split()[header.split().index("SeriesNumber")] for row in rows]
    assert sorted(numbers) == ["1", "2", "<NA>"]


def test_warnings_are_printed_once_naming_their_series(make_series, tmp_path, capsys):
    hu = np.zeros((8, 64, 64))
    positions = [0, 5, 10, 15, 30, 35, 40, 45]  # a gap: uneven spacing
    files = make_series(
        "gappy", hu=hu, positions=positions, tags={"SeriesNumber": 9, "SeriesDescription": "GAPPY"}
    )
    npy = tmp_path / "g.npy"
    assert (
        main(["to-npy", "-i", str(files[0].parent), "-n", str(npy), "-j", str(tmp_path / "g.json")])
        == 0
    )
    lines = stderr_lines(capsys)
    assert lines and all(line.startswith('warning: series 9 "GAPPY" (') for line in lines)
    assert str(files[0].parent) in lines[0] and "uneven spacing" in lines[0]
    assert len(lines) == len(set(lines))


def test_batch_keeps_dask_info_logs_quiet(small_series, tmp_path):
    result = run_cli(
        "batch",
        str(small_series),
        str(tmp_path / "out"),
        "--workers",
        "1",
        "--format",
        "npy",
    )
    assert result.returncode == 0, result.stderr
    assert "INFO" not in result.stderr and "Scheduler at" not in result.stderr
    assert "Register worker" not in result.stderr


def hu_of_series(folder) -> np.ndarray:
    volume = dicomarray.open_series(folder)
    return volume.values * volume.attrs["RescaleSlope"] + volume.attrs["RescaleIntercept"]


def test_raw_npy_round_trips_through_to_dicom(small_series, tmp_path):
    raw = tmp_path / "raw.npy"
    assert (
        main(
            [
                "to-npy",
                "-i",
                str(small_series),
                "-n",
                str(raw),
                "-j",
                str(tmp_path / "raw.json"),
                "--raw",
            ]
        )
        == 0
    )
    out = tmp_path / "back"
    assert main(["to-dicom", "-n", str(raw), "-d", str(small_series), "-o", str(out)]) == 0
    np.testing.assert_array_equal(hu_of_series(out), hu_of_series(small_series))


def test_to_dicom_refuses_an_npy_of_another_series(make_series, small_series, tmp_path, capsys):
    other = make_series("other", seed=5)[0].parent  # same shape and positions, other instances
    npy = tmp_path / "other.npy"
    assert (
        main(["to-npy", "-i", str(other), "-n", str(npy), "-j", str(tmp_path / "other.json")]) == 0
    )
    out = tmp_path / "x"
    assert main(["to-dicom", "-n", str(npy), "-d", str(small_series), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "another series" in err and "Traceback" not in err and not out.exists()


def test_to_dicom_without_a_sidecar_needs_values(small_series, tmp_path, capsys):
    stored = dicomarray.open_series(small_series).values
    npy = tmp_path / "bare.npy"
    np.save(npy, stored)
    out = tmp_path / "x"
    assert main(["to-dicom", "-n", str(npy), "-d", str(small_series), "-o", str(out)]) == 1
    assert "--values stored" in capsys.readouterr().err and not out.exists()
    assert (
        main(
            [
                "to-dicom",
                "-n",
                str(npy),
                "-d",
                str(small_series),
                "-o",
                str(out),
                "--values",
                "stored",
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(hu_of_series(out), hu_of_series(small_series))


def test_info_warns_once_about_the_series_it_chose(two_series, capsys):
    folder, large, small = two_series
    assert main(["info", str(folder)]) == 0
    assert f"series      {large}" in capsys.readouterr().out
    assert main(["info", str(folder)]) == 0
    lines = stderr_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("warning: series 1 ")
    assert f"({folder})" in lines[0] and small in lines[0]


def test_batch_prints_the_report_warnings_once_per_series(tmp_path, monkeypatch, capsys):
    report = pd.DataFrame(
        {
            "SeriesInstanceUID": ["1.2.3", "1.2.4"],
            "PatientID": ["A", "A"],
            "status": ["ok", "ok"],
            "error": ["", ""],
            "folder": ["A/S1/2_HEAD", "A/S1/3_BONE"],
            "warnings": ["uneven spacing: x | left out 1 frame(s): localizer", ""],
        }
    )
    monkeypatch.setattr("dicomarray.batch.convert", lambda *args, **kwargs: report)
    assert main(["batch", str(tmp_path / "in"), str(tmp_path / "out")]) == 0
    head = tmp_path / "out" / "A" / "S1" / "2_HEAD"
    assert stderr_lines(capsys) == [
        f"warning: series ({head}): uneven spacing: x",
        f"warning: series ({head}): left out 1 frame(s): localizer",
    ]


@pytest.mark.parametrize(
    ("library", "cli"),
    [
        ("x exists; pass overwrite=True to replace it", "x exists; pass --overwrite to replace it"),
        (
            "2 series tie; pass series_uid to choose one",
            "2 series tie; pass --series-uid to choose one",
        ),
        ("open it with series_uid=1.2.3", "open it with --series-uid 1.2.3"),
        ("cannot overwrite a folder", "cannot overwrite a folder"),  # prose, not a keyword
        ("pass compute=False", "pass compute=False"),  # no such flag: left as it is
    ],
)
def test_library_keywords_are_worded_as_flags(library, cli):
    from dicomarray.cli import _cli_wording

    assert _cli_wording(library, frozenset({"--overwrite", "--series-uid"})) == cli


def test_scan_shows_each_note_about_the_tree_once(small_series, tmp_path, capsys):
    from pydicom.fileset import FileSet

    tree = tmp_path / "media"
    fs = FileSet()
    for path in sorted(small_series.iterdir())[:6]:
        fs.add(str(path))
    fs.write(tree)
    extra = tree / "added_later.dcm"  # a file the DICOMDIR does not record
    extra.write_bytes(sorted(small_series.iterdir())[6].read_bytes())
    assert main(["scan", str(tree)]) == 0
    lines = stderr_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"warning: {tree}: ")
    assert "1 instances are not recorded" in lines[0]


# --------------------------------------------------------------------------------------------
# info: the geometry, as VolumeGeometry gives it
# --------------------------------------------------------------------------------------------


def _info_lines(folder, capsys) -> dict[str, str]:
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    return {line[:12].strip(): line[12:] for line in out if line[:1] != " "} | {"": out}


def test_info_shows_no_single_slice_spacing_for_an_uneven_series(tmp_path, capsys):
    import pydicom

    from .conftest import UNEVEN_POSITIONS

    files = dicomarray.sample.write_series(
        tmp_path / "ge", np.zeros((28, 8, 8)), pixel_spacing=(0.5, 0.5), positions=UNEVEN_POSITIONS
    )
    lines = _info_lines(tmp_path / "ge", capsys)
    assert lines["spacing"] == "z none (no one step), y 0.5 mm, x 0.5 mm"
    assert lines["slices"].startswith(
        "two blocks: 14 slices at 4 mm, then 14 at 7 mm after slice 13"
    )
    assert lines["orientation"] == "LPS (x toward L, y toward P, z toward S)"
    assert lines["tilt"] == "0.00 degrees"
    out = lines[""]
    start = next(i for i, line in enumerate(out) if line.startswith("affine (z, y, x, 1)"))
    affine = np.array([[float(v) for v in row.split()] for row in out[start + 1 : start + 5]])
    first = [float(v) for v in pydicom.dcmread(files[0]).ImagePositionPatient]
    expected = np.eye(4)
    expected[:3, 0] = [0, 0, (UNEVEN_POSITIONS[-1] - UNEVEN_POSITIONS[0]) / 27]
    expected[:3, 1] = [0, 0.5, 0]
    expected[:3, 2] = [0.5, 0, 0]
    expected[:3, 3] = first
    np.testing.assert_allclose(affine, expected, atol=1e-3)
    assert "exact at the ends only" in out[start]


def test_info_shows_the_spacing_orientation_and_tilt_of_a_series(make_series, tmp_path, capsys):
    make_series("tilted", tilt_degrees=15.0)
    lines = _info_lines(tmp_path / "tilted", capsys)
    # slices 12 mm apart along a direction 15 degrees from the normal: 12 cos 15 between planes
    assert lines["spacing"] == "z 11.5911 mm, y 3.6 mm, x 3.6 mm"
    assert lines["tilt"] == "15.00 degrees (sheared: each slice offset in-plane)"
    assert lines["slices"].startswith("regular: ")
    make_series("coronal", orientation=(1, 0, 0, 0, 0, -1))
    lines = _info_lines(tmp_path / "coronal", capsys)
    assert lines["spacing"] == "z 12 mm, y 3.6 mm, x 3.6 mm"
    assert lines["orientation"] == "LIP (x toward L, y toward I, z toward P)"
    assert lines["tilt"] == "0.00 degrees"


# --------------------------------------------------------------------------------------------
# n-D series: info shows the extra dims; --split-by and --dims reach open_series
# --------------------------------------------------------------------------------------------


@pytest.fixture
def time_series(tmp_path):
    """Three volumes of 4 slices, 2 s apart: the folder and each volume's files."""
    hu = np.zeros((4, 16, 16)) + np.arange(4)[:, None, None]
    folder = tmp_path / "perfusion"
    return folder, write_time_series(folder, hu, 3, pixel_spacing=(2.0, 2.0), slice_spacing=5.0)


def test_info_shows_each_extra_dim_its_range_and_its_split(time_series, capsys):
    assert main(["info", str(time_series[0])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "shape       {'t': 3, 'z': 4, 'y': 16, 'x': 16}  dtype int16"
    assert lines[2] == "t           3 volumes, 0 .. 4 s, split by TemporalPositionIdentifier"
    assert lines[3].startswith("spacing     z 5 mm")


def test_info_of_a_3d_series_has_no_extra_dim_lines(time_series, capsys):
    assert main(["info", str(time_series[1][0][0])]) == 0  # one file: one slice
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("spacing ")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], {}),
        (["--split-by", "EchoNumbers, ImageType"], {"split_by": ("EchoNumbers", "ImageType")}),
        (
            ["--dims", "t", "--split-by", "AcquisitionTime"],
            {"dims": ("t",), "split_by": ("AcquisitionTime",)},
        ),
    ],
)
@pytest.mark.parametrize("command", ["info", "to-npy", "to-zarr", "render"])
def test_split_by_and_dims_reach_open_series(tmp_path, monkeypatch, command, flags, expected):
    seen = []
    real = dicomarray.open_series

    def spy(source, series_uid=None, **kwargs):
        seen.append(kwargs)
        return real(source, series_uid)

    monkeypatch.setattr(dicomarray.volume, "open_series", spy)
    folder = str(write_series(tmp_path / "plain", np.zeros((3, 8, 8)))[0].parent)
    outputs = {
        "info": [folder],
        "to-npy": ["-i", folder, "-n", str(tmp_path / "v.npy"), "-j", str(tmp_path / "v.json")],
        "to-zarr": ["-i", folder, "-o", str(tmp_path / "v.zarr")],
        "render": ["-i", folder, "-o", str(tmp_path / "v.jpg")],
    }
    assert main([command, *outputs[command], *flags]) == 0
    assert seen == [expected]


def test_cli_info_of_a_4d_series_split_as_asked_in_a_subprocess(time_series):
    result = run_cli("info", str(time_series[0]), "--split-by", "AcquisitionTime")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "shape       {'t': 3, 'z': 4, 'y': 16, 'x': 16}  dtype int16" in lines
    assert "t           3 volumes, 0 .. 4 s, split by AcquisitionTime" in lines
    wrong = run_cli("info", str(time_series[0]), "--split-by", "EchoTime")
    assert wrong.returncode == 1 and len(wrong.stderr.strip().splitlines()) == 1
    assert "EchoTime" in wrong.stderr
