"""The dicomarray command, called in-process through main() and as a real subprocess."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import dicomarray
from dicomarray.cli import main


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory):
    output = tmp_path_factory.mktemp("demo") / "output"
    assert main(["demo", "--output", str(output), "--patients", "2"]) == 0
    return output


def test_demo_writes_one_brain_window_picture_per_patient(demo_output):
    pictures = sorted(p.name for p in demo_output.glob("*.jpg"))
    assert pictures == ["PAT041.jpg", "PAT042.jpg"]
    picture = np.asarray(Image.open(demo_output / "PAT041.jpg"))
    assert picture.shape == (512, 512)
    assert picture[0, 0] < 5  # air is black in the brain window
    assert picture[256, 256] > 60  # brain is grey


def test_demo_reuses_the_sample_study(demo_output, capsys):
    before = {p: p.stat().st_mtime_ns for p in (demo_output / "sample_study").rglob("*")}
    assert main(["demo", "--output", str(demo_output), "--patients", "2"]) == 0
    after = {p: p.stat().st_mtime_ns for p in (demo_output / "sample_study").rglob("*")}
    assert before == after


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
