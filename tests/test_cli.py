"""The dicomarray command, called in-process through main() and as a real subprocess."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import dicomarray
from dicomarray.cli import main


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
    assert [f.relative_to(demo_output).parts[0] for f in folders] == ["PAT041", "PAT042"]
    for folder in folders:
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
    assert "PAT041" in printed and "2 series of 2 patients" in printed and "0 failed" in printed


def test_demo_on_a_given_tree(demo_output, tmp_path):
    report_rows = main(
        ["demo", "--data", str(demo_output / "sample_study"), "--out", str(tmp_path)]
    )
    assert report_rows == 0
    assert len(list(tmp_path.rglob("manifest.json"))) == 2


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
    assert len(lines) == 1 + 4 and "AXIAL" in result.stdout and "SAGITTAL" in result.stdout


def test_info_describes_geometry_and_tags(demo_output):
    head = next((demo_output / "sample_study" / "041").glob("*/2_*"))
    result = run_cli("info", str(head))
    assert result.returncode == 0
    assert "sorted by ImagePositionPatient" in result.stdout
    assert "PatientID" in result.stdout and "affine" in result.stdout


def test_filter_prints_matches_and_json(demo_output, tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"is_localizer": false, "Modality": "CT"}')
    plain = run_cli("filter", str(demo_output / "sample_study"), "--config", str(config))
    assert plain.returncode == 0 and len(plain.stdout.splitlines()) == 2
    as_json = run_cli(
        "filter", str(demo_output / "sample_study"), "--config", str(config), "--json"
    )
    records = json.loads(as_json.stdout)
    assert [r["meta"]["PatientID"] for r in records] == ["PAT041", "PAT042"]


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
        "to-dicom", "-n", str(bad), "-d", str(head_series), "-o", str(tmp_path / "x")
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
