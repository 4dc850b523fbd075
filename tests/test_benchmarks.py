"""The benchmark harness runs end to end on tiny data and writes sane results.

These tests time nothing that matters: they run ``benchmarks`` with ``--quick`` (8-12 slices
of 64 x 64) for one round of two tasks, and check the files it writes and the numbers in
them. The real benchmark is ``python -m benchmarks``, never part of the test run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import run
from benchmarks.contenders import TASKS
from benchmarks.report import value_mismatches
from benchmarks.targets import issue_targets
from benchmarks.task import describe, memory_mb

TASK_LIST = ("slice", "index")
CONTENDER_LIST = ("dicomarray", "pydicom", "floor")


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One quick run of the harness, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("bench")
    argv = ["--quick", "--rounds", "1", "--warmup", "0"]
    argv += ["--tasks", ",".join(TASK_LIST), "--contenders", ",".join(CONTENDER_LIST)]
    argv += ["--data", str(root / "data"), "--out", str(root / "results")]
    assert run.main(argv) == 0
    return root / "results"


@pytest.fixture(scope="module")
def results(results_dir: Path) -> dict:
    return json.loads((results_dir / "results.json").read_text())


def test_harness_writes_markdown_json_and_png(results_dir: Path) -> None:
    text = (results_dir / "results.md").read_text()
    assert "## Targets of issue 7" in text
    assert "| dicomarray |" in text
    with Image.open(results_dir / "results.png") as image:
        assert image.format == "PNG"
        assert image.width > 500 and image.height > 200


def test_every_planned_run_is_summarized(results: dict) -> None:
    got = {(r["task"], r["dataset"], r["contender"]) for r in results["summary"]}
    want = {
        (task, dataset, contender)
        for task in TASK_LIST
        for dataset in run.TASK_DATASETS[task]
        for contender in CONTENDER_LIST
        if contender in TASKS[task]
    }
    assert got == want


def test_timings_and_memory_are_sane(results: dict) -> None:
    for row in results["summary"]:
        assert row["runs"] == 1, row
        assert 0 < row["seconds"] < 30, row
        assert row["seconds_min"] <= row["seconds"] <= row["seconds_max"]
        assert row["peak_above_mb"] >= 0
        # a Python process with numpy resident is tens of MB, never more than this machine
        assert 10 < row["rss_peak_mb"] < 24 * 1024, row


def test_contenders_agree_on_values(results: dict) -> None:
    assert value_mismatches(results["summary"]) == []
    slices = [r for r in results["summary"] if r["task"] == "slice"]
    assert all(r["result"]["shape"] == [64, 64] for r in slices)


def test_index_finds_every_series_file(results: dict) -> None:
    index = {
        r["contender"]: r["result"]["items"]
        for r in results["summary"]
        if (r["task"], r["dataset"]) == ("index", "u12-large")
    }
    assert index == {"dicomarray": 12, "pydicom": 12, "floor": 12}


def test_targets_are_all_listed(results: dict) -> None:
    assert [t["target"] for t in results["targets"]] == [t.label for t in issue_targets()]
    statuses = {t["status"] for t in results["targets"]}
    assert statuses <= {"met", "MISSED", "not measured"}


def test_machine_is_described(results: dict) -> None:
    machine = results["machine"]
    assert machine["cores"] >= 1 and machine["python"]
    assert machine["libraries"]["pydicom"]


def test_describe_reports_shape_dtype_and_mean() -> None:
    array = np.arange(6, dtype=np.int16).reshape(1, 2, 3)
    assert describe((array, object())) == {"shape": [1, 2, 3], "dtype": "int16", "mean": 2.5}
    assert describe([1, 2, 3]) == {"items": 3}


def test_memory_mb_reads_resident_and_peak() -> None:
    resident, peak = memory_mb()
    assert 0 < resident <= peak
