"""Batch conversion: fault isolation, hostile names, resume, a killed run, a cluster, report."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor as ThreadPool
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import xarray as xr

import dicomarray
import dicomarray.batch
from dicomarray.batch import MANIFEST, convert
from dicomarray.sample import head_phantom, write_series

from .conftest import UNEVEN_POSITIONS, patient_series
from .nd_series import OFFSET_HU, expected_values, open_time_series, write_time_series

pytest.importorskip("distributed")

HOSTILE = {"PatientID": "../../x", "StudyID": "a/b\\c", "SeriesDescription": "", "StudyDate": ""}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """Four small series: two plain patients, one with cut pixel data, one with hostile tags."""
    root = tmp_path_factory.mktemp("tree")
    tags = [{"PatientID": "P1"}, {"PatientID": "P2"}, {"PatientID": "CUT"}, HOSTILE]
    patient_series(root, tags, slices=6)
    cut = sorted((root / "s2").iterdir())[2]
    cut.write_bytes(cut.read_bytes()[:-500])
    return root


def statuses(report) -> dict[str, str]:
    return dict(zip(report["PatientID"], report["status"], strict=True))


def test_failure_is_isolated_and_names_are_safe(tree, tmp_path):
    out = tmp_path / "out"
    report = convert(tree, out, formats=("zarr", "npy", "jpg"), workers=0, progress=False)
    assert statuses(report) == {"P1": "ok", "P2": "ok", "CUT": "failed", "../../x": "ok"}
    failed = report[report["status"] == "failed"].iloc[0]
    assert "truncated" in failed["error"]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(out.resolve() in p.resolve().parents for p in written)
    hostile = report[report["PatientID"] == "../../x"].iloc[0]
    folders = [p.parent for p in out.rglob(MANIFEST)]
    assert len(folders) == 3
    for folder in folders:
        rel = folder.relative_to(out).parts
        assert len(rel) == 3 and all(part and ".." not in part for part in rel)
    (hostile_patient,) = [
        p for p in out.iterdir() if p.name.startswith("x~")
    ]  # "../../x" made safe
    assert hostile_patient.is_dir()
    assert int(hostile["slices"]) == 6
    (p1,) = [f for f in folders if f.relative_to(out).parts[0] == "P1"]
    assert xr.open_zarr(p1 / "image.zarr")["image"].shape == (6, 32, 32)
    assert (out / "report.csv").read_text().count("\n") == 5


def test_second_run_skips_and_overwrite_redoes(tree, tmp_path):
    out = tmp_path / "out"
    convert(tree, out, formats=("npy",), workers=0, progress=False)
    again = convert(tree, out, formats=("npy",), workers=0, progress=False)
    assert sorted(again["status"]) == ["failed", "skipped", "skipped", "skipped"]
    forced = convert(tree, out, formats=("npy",), workers=0, overwrite=True, progress=False)
    assert sorted(forced["status"]) == ["failed", "ok", "ok", "ok"]


def test_a_series_left_half_written_is_redone(tree, tmp_path):
    out = tmp_path / "out"
    convert(tree, out, formats=("npy",), workers=0, progress=False)
    folder = next(out.rglob(MANIFEST)).parent
    shutil.rmtree(folder)  # as if killed while writing: only the staging folder remains
    stale = folder.parent / f".{folder.name}.abcd.partial"
    stale.mkdir()
    (stale / "image.npy").write_bytes(b"half")
    report = convert(tree, out, formats=("npy",), workers=0, progress=False)
    assert sorted(report["status"]) == ["failed", "ok", "skipped", "skipped"]
    assert np.load(folder / "image.npy").shape == (6, 32, 32)


def test_a_folder_that_is_not_our_output_is_never_replaced(tree, tmp_path):
    out = tmp_path / "out"
    convert(tree, out, formats=("npy",), workers=0, progress=False)
    folder = next((out / "P1").rglob(MANIFEST)).parent
    shutil.rmtree(folder)
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        report = convert(
            tree, out, formats=("npy",), workers=0, overwrite=overwrite, progress=False
        )
        row = report[report["PatientID"] == "P1"].iloc[0]
        assert row["status"] == "failed" and "nothing was replaced" in row["error"]
        assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_output_inside_the_input_tree_is_refused(tree):
    from dicomarray import DicomArrayError

    before = sorted(str(p) for p in tree.rglob("*"))
    with pytest.raises(DicomArrayError, match="inside the input tree"):
        convert(tree, tree / "out", workers=0, progress=False)
    with pytest.raises(DicomArrayError, match="inside the input tree"):
        convert(tree, tree, workers=0, progress=False)
    assert sorted(str(p) for p in tree.rglob("*")) == before


def test_series_sharing_a_name_keep_their_own_folders_across_runs(tmp_path):
    tags = {"PatientID": "P9", "SeriesNumber": 2, "SeriesDescription": "HEAD", "StudyID": "1"}
    root = patient_series(tmp_path / "in", [tags, tags])
    uids = [
        str(pydicom.dcmread(next((root / s).iterdir())).SeriesInstanceUID) for s in ("s0", "s1")
    ]
    out = tmp_path / "out"
    convert(root, out, formats=("npy",), workers=0, progress=False)
    for overwrite, status in ((False, "skipped"), (True, "ok")):  # B's own folder, not A's
        rerun = convert(
            root,
            out,
            config={"SeriesInstanceUID": uids[1]},
            formats=("npy",),
            workers=0,
            overwrite=overwrite,
            progress=False,
        )
        assert list(rerun["status"]) == [status]
        manifests = out.rglob(MANIFEST)
        owners = sorted(json.loads(m.read_text())["SeriesInstanceUID"] for m in manifests)
        assert owners == sorted(uids)  # A's outputs were not replaced by B's


def test_deidentified_errors_name_neither_folders_nor_files(tmp_path):
    root = tmp_path / "DOE_JOHN_PID12345"
    hu = head_phantom(4, 32, 32, slice_spacing=20.0, pixel_spacing=(7.2, 7.2))
    paths = write_series(root / "s", hu, pixel_spacing=(7.2, 7.2), slice_spacing=20.0)
    paths[1].write_bytes(paths[1].read_bytes()[:-300])
    deidentifier = dicomarray.deid.Deidentifier(key="k" * 32)
    report = convert(
        root, tmp_path / "out", formats=("npy",), workers=0, deidentify=deidentifier, progress=False
    )
    (row,) = report.itertuples()
    assert row.status == "failed" and row.error.startswith(f"PixelDataError in {row.folder}: ")
    assert paths[1].stem not in row.error
    assert "PID12345" not in (tmp_path / "out" / "report.csv").read_text()


def test_local_cluster_with_two_worker_processes(tree, tmp_path):
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        report = convert(
            tree, tmp_path / "out", formats=("zarr", "jpg"), client=client, progress=False
        )
    assert statuses(report) == {"P1": "ok", "P2": "ok", "CUT": "failed", "../../x": "ok"}


def test_killed_run_then_complete_run(tree, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "dicomarray", "batch", str(tree), str(out), "--workers", "0"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not _any_file(out, ".npy") and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == -signal.SIGTERM  # killed part way, not finished
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 1  # the cut series fails, alone
    assert "1 failed" in result.stdout
    for manifest in out.rglob(MANIFEST):
        outputs = json.loads(manifest.read_text())["outputs"]
        assert np.load(manifest.parent / "image.npy").shape == (6, 32, 32)
        assert all((manifest.parent / name).exists() for name in outputs)
    leftovers = [p for p in out.rglob(".*") if p.name != ".zgroup"]
    assert not [p for p in leftovers if p.parent.joinpath(MANIFEST).exists()]
    assert not list(out.rglob("*.partial"))  # the killed run's partials: removed by the next


def test_stale_partials_are_removed_and_live_ones_kept(tree, tmp_path):
    from dicomarray import staging

    out = tmp_path / "out"
    convert(tree, out, formats=("npy",), workers=0, progress=False)
    study = next(out.rglob(MANIFEST)).parent.parent
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    live = staging.partial_path(study / "series")
    stale = live.with_name(live.name.replace(f"-{os.getpid()}-", f"-{ended}-"))
    for partial in (live, stale):
        partial.mkdir()
        (partial / "image.npy").write_bytes(b"half")
    convert(tree, out, formats=("npy",), workers=0, progress=False)
    assert live.is_dir() and not stale.exists()


def _any_file(folder: Path, suffix: str) -> bool:
    """Whether a file with the suffix exists; tolerant of folders vanishing meanwhile."""
    return any(name.endswith(suffix) for _, _, names in os.walk(folder) for name in names)


def test_unknown_format_is_an_error(tree, tmp_path):
    from dicomarray import DicomArrayError

    with pytest.raises(DicomArrayError, match="tiff"):
        convert(tree, tmp_path, formats=("tiff",), workers=0)


def test_cli_exit_code_reflects_failures(tree, tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    for path in sorted((tree / "s0").iterdir()):
        os.link(path, good / path.name)
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "dicomarray",
            "batch",
            str(good),
            str(tmp_path / "o1"),
            "--workers",
            "0",
            "--format",
            "npy",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0 and "1 ok" in ok.stdout


# --------------------------------------------------------------------------------------------
# Every series ends as a row; report.csv is always written
# --------------------------------------------------------------------------------------------


class Panic(BaseException):
    """What a Rust decoder's panic looks like from Python (pyo3's PanicException)."""


def panic_on(folder_name: str):
    """A FrameStack.read_into that panics, like pylibjpeg-rle, for files in ``folder_name``."""
    from dicomarray.pixels import FrameStack

    original = FrameStack.read_into

    def read_into(self, index, out, rows=None):
        if Path(self.paths[index]).parent.name == folder_name:
            raise Panic("called `Option::unwrap()` on a `None` value")
        return original(self, index, out, rows)

    return read_into


def test_a_decoder_panic_fails_its_series_alone(tree, tmp_path, monkeypatch):
    from dicomarray.pixels import FrameStack

    monkeypatch.setattr(FrameStack, "read_into", panic_on("s1"))  # patient P2
    out = tmp_path / "out"
    report = convert(tree, out, formats=("npy", "jpg"), workers=0, progress=False)
    assert statuses(report) == {"P1": "ok", "P2": "failed", "CUT": "failed", "../../x": "ok"}
    failed = report[report["PatientID"] == "P2"].iloc[0]
    assert failed["error"].startswith("Panic: called `Option::unwrap()`")
    assert len(pd.read_csv(out / "report.csv")) == 4


FAILING_WORKER_SCRIPT = """
import os
import sys
from pathlib import Path

import dask
from distributed import Client, LocalCluster

from dicomarray.batch import convert


class Panic(BaseException):
    pass


def install(how):  # runs in each worker process
    from dicomarray.pixels import FrameStack

    original = FrameStack.read_into

    def read_into(self, index, out, rows=None):
        if Path(self.paths[index]).parent.name == "s1":
            if how == "exit":
                os._exit(1)  # the worker process dies
            raise Panic("decoder panicked")
        return original(self, index, out, rows)

    FrameStack.read_into = read_into


if __name__ == "__main__":
    # a dead worker's task fails at once (no retry on a fresh worker), and only the task
    # running there dies with it: one task per worker thread
    config = {"distributed.scheduler.allowed-failures": 0,
              "distributed.scheduler.worker-saturation": 1.0}
    with dask.config.set(config), LocalCluster(n_workers=2, threads_per_worker=1,
                                               processes=True) as cluster:
        with Client(cluster) as client:
            client.run(install, sys.argv[3])
            report = convert(sys.argv[1], sys.argv[2], formats=("npy",), client=client,
                             progress=False)
    print(sorted(zip(report["PatientID"], report["status"])))
"""


@pytest.mark.parametrize(("how", "error"), [("panic", "Panic"), ("exit", "KilledWorker")])
def test_a_worker_process_that_panics_or_dies_fails_its_series_alone(tree, tmp_path, how, error):
    import dicomarray

    script = tmp_path / "failing.py"
    script.write_text(FAILING_WORKER_SCRIPT)
    out = tmp_path / "out"
    # the script and its workers import this dicomarray, not another installed one
    here = str(Path(dicomarray.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    try:
        result = subprocess.run(
            [sys.executable, str(script), str(tree), str(out), how],
            capture_output=True,
            env=env,
            text=True,
            timeout=240,  # a panic used to hang it forever
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the batch hung on a worker's {how}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "('P2', 'failed')" in result.stdout and "('P1', 'ok')" in result.stdout
    report = pd.read_csv(out / "report.csv")
    assert report.loc[report["PatientID"] == "P2", "error"].iloc[0].startswith(error)


def test_an_interrupted_batch_still_writes_its_report(tree, tmp_path, monkeypatch):
    import dicomarray.batch

    def interrupt(done, total):
        raise KeyboardInterrupt  # the user's ^C, as the first series ends

    monkeypatch.setattr(dicomarray.batch, "_show_progress", interrupt)
    monkeypatch.setattr(dicomarray.batch, "ThreadPoolExecutor", lambda n: ThreadPool(1))
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        convert(tree, out, formats=("npy",), workers=0, progress=True)
    report = pd.read_csv(out / "report.csv", keep_default_na=False)
    assert len(report) == 4  # the series that ended, and three the interrupt left
    not_run = report["error"].str.startswith("not run")
    assert not_run.sum() == 3 and set(report.loc[not_run, "status"]) == {"failed"}


def test_a_series_that_cannot_be_assembled_fails_alone(tmp_path):
    root = _good_and_unassemblable_series(tmp_path / "in")
    report = convert(root, tmp_path / "out", formats=("npy",), workers=0, progress=False)
    assert statuses(report) == {"G": "ok", "T": "failed"}
    assert "AssemblyError" in report.loc[report["PatientID"] == "T", "error"].iloc[0]


# --------------------------------------------------------------------------------------------
# Resume: more formats, full figures
# --------------------------------------------------------------------------------------------


def test_a_rerun_with_more_formats_writes_only_the_missing_ones(tree, tmp_path):
    out = tmp_path / "out"
    first = convert(tree, out, formats=("npy",), workers=0, progress=False)
    folder = out / first.loc[first["PatientID"] == "P1", "folder"].iloc[0]
    npy = (folder / "image.npy").stat()
    more = convert(tree, out, formats=("npy", "zarr"), workers=0, progress=False)
    assert statuses(more) == {"P1": "ok", "P2": "ok", "CUT": "failed", "../../x": "ok"}
    assert xr.open_zarr(folder / "image.zarr")["image"].shape == (6, 32, 32)
    assert (folder / "image.npy").stat().st_ino == npy.st_ino  # kept, not written again
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["formats"] == ["npy", "zarr"]
    assert set(manifest["outputs"]) == {"image.json", "image.npy", "image.zarr"}
    resumed = convert(tree, out, formats=("zarr",), workers=0, progress=False)
    row = resumed[resumed["PatientID"] == "P1"].iloc[0]
    fresh = more[more["PatientID"] == "P1"].iloc[0]
    assert row["status"] == "skipped"
    for column in ("folder", "slices", "spacing_mm", "outputs"):
        assert row[column] == fresh[column], column
    assert row["spacing_mm"] == "20 x 7.2 x 7.2" and row["slices"] == 6
    assert not [p for p in out.rglob("*.partial")]


def test_report_rows_name_their_folder(tree, tmp_path):
    out = tmp_path / "out"
    report = convert(tree, out, formats=("npy",), workers=0, progress=False)
    for row in report[report["status"] == "ok"].itertuples():
        manifest = json.loads((out / row.folder / MANIFEST).read_text())
        assert manifest["SeriesInstanceUID"] == row.SeriesInstanceUID
    cut = report[report["PatientID"] == "CUT"].iloc[0]
    assert cut["folder"] and not (out / cut["folder"]).exists()  # where it would have gone
    columns = (
        "SeriesInstanceUID PatientID status error folder outputs dims shape slices spacing_mm "
        "slice_steps seconds"
    )
    assert list(pd.read_csv(out / "report.csv").columns) == [*columns.split(), "warnings"]


def test_warnings_raised_while_converting_are_in_the_report(tmp_path, recwarn):
    root = tmp_path / "in"
    hu = head_phantom(5, 32, 32, slice_spacing=20.0, pixel_spacing=(7.2, 7.2))
    write_series(
        root / "gap",
        hu,
        pixel_spacing=(7.2, 7.2),
        positions=[0.0, 20.0, 40.0, 80.0, 100.0],
        tags={"PatientID": "GAP"},
    )
    write_series(root / "even", hu, pixel_spacing=(7.2, 7.2), tags={"PatientID": "EVEN"}, seed=1)
    report = convert(root, tmp_path / "out", formats=("npy",), workers=0, progress=False)
    rows = report.set_index("PatientID")
    assert "GeometryWarning" in rows.loc["GAP", "warnings"]
    assert rows.loc["EVEN", "warnings"] == ""
    saved = pd.read_csv(tmp_path / "out" / "report.csv", keep_default_na=False)
    assert saved.set_index("PatientID").loc["GAP", "warnings"] == rows.loc["GAP", "warnings"]


# --------------------------------------------------------------------------------------------
# Names, file roots
# --------------------------------------------------------------------------------------------

PATIENTS = ("A/B", "A B", "A_B", "Müller", "Möller", "abc", "ABC", "CON", "nul.txt", "COM1")


def test_folder_names_never_merge_patients_nor_use_reserved_names(tmp_path):
    from dicomarray.paths import is_reserved

    root = tmp_path / "in"
    tags = {"StudyID": "CON", "SeriesDescription": "AUX"}  # names Windows reserves
    patient_series(root, [{"PatientID": p, **tags} for p in PATIENTS], slices=2, size=16)
    out = tmp_path / "out"
    report = convert(root, out, formats=("npy",), workers=0, progress=False)
    assert list(report["status"]) == ["ok"] * len(PATIENTS)
    patients = [Path(folder).parts[0] for folder in report["folder"]]
    assert len({name.casefold() for name in patients}) == len(PATIENTS)
    parts = [part for folder in report["folder"] for part in Path(folder).parts]
    assert not [part for part in parts if is_reserved(part)]
    assert sorted(p.name for p in out.iterdir()) == sorted([*patients, "report.csv"])
    # the README's examples
    named = dict(zip(report["PatientID"], patients, strict=True))
    assert [named[p] for p in ("A/B", "A B", "A_B")] == [
        "A_B~998d3ed8983acf39",
        "A_B~fea4c5ce720c1d6a",
        "A_B",
    ]


def test_output_inside_a_file_root_is_refused(tree, tmp_path):
    from dicomarray import DicomArrayError

    file = next((tree / "s0").iterdir())
    dicomdir = tmp_path / "export"
    dicomdir.mkdir()
    (dicomdir / "DICOMDIR").write_bytes(b"")  # a DICOMDIR stands for its folder
    for root, out in [
        (file, file),
        (file, file / "out"),
        ([file], file),
        (dicomdir / "DICOMDIR", dicomdir / "out"),
    ]:
        with pytest.raises(DicomArrayError, match="inside the input tree"):
            convert(root, out, workers=0, progress=False)
    assert sorted(p.name for p in dicomdir.iterdir()) == ["DICOMDIR"]
    assert file.is_file()


def test_demo_data_with_a_series_that_cannot_be_assembled_converts_the_others(tmp_path):
    from dicomarray.demo import run_demo

    root = _good_and_unassemblable_series(tmp_path / "in")
    report = run_demo(tmp_path / "out", data=root)
    assert statuses(report) == {"G": "ok", "T": "failed"}
    assert (tmp_path / "out" / "report.csv").is_file()


def test_an_output_that_is_a_file_or_holds_a_foreign_report_is_refused_first(tree, tmp_path):
    from dicomarray import DicomArrayError

    blocker = tmp_path / "file"
    blocker.write_text("mine")
    with pytest.raises(DicomArrayError, match="file: cannot write"):
        convert(tree, blocker, workers=0, progress=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.csv").write_text("my,own,table\n")
    with pytest.raises(DicomArrayError, match="not a batch report export; nothing was replaced"):
        convert(tree, out, workers=0, progress=False)
    assert [p.name for p in out.iterdir()] == ["report.csv"]
    assert (out / "report.csv").read_text() == "my,own,table\n" and blocker.read_text() == "mine"


def _good_and_unassemblable_series(root):
    """Patient G: a clean series; patient T: two slices at one position (an AssemblyError)."""
    hu = head_phantom(4, 32, 32, slice_spacing=20.0, pixel_spacing=(7.2, 7.2))
    write_series(root / "good", hu, pixel_spacing=(7.2, 7.2), tags={"PatientID": "G"})
    write_series(
        root / "twice",
        hu,
        pixel_spacing=(7.2, 7.2),
        positions=[0.0, 20.0, 20.0, 40.0],
        tags={"PatientID": "T"},
        seed=1,
    )
    return root


# --------------------------------------------------------------------------------------------
# Records: a series is scanned once (at selection) and assembled once (in its job)
# --------------------------------------------------------------------------------------------


def test_each_data_problem_is_logged_and_reported_once(tmp_path, caplog):
    import logging

    hu = head_phantom(5, 16, 16, slice_spacing=20.0, pixel_spacing=(7.2, 7.2))
    files = write_series(
        tmp_path / "in", hu, pixel_spacing=(7.2, 7.2), positions=[0.0, 20.0, 40.0, 80.0, 100.0]
    )
    ds = pydicom.dcmread(files[0])
    ds.SliceThickness = ["20", "21"]  # a note of the scan: not one number
    ds.save_as(files[0])
    with caplog.at_level(logging.WARNING, logger="dicomarray"):
        report = convert(
            tmp_path / "in", tmp_path / "out", formats=("npy",), workers=0, progress=False
        )
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("dicomarray")]
    assert sum("SliceThickness: 1 values" in m for m in logged) == 1
    assert sum("uneven spacing" in m for m in logged) == 1
    assert report.loc[0, "warnings"].count("uneven spacing") == 1


def test_a_job_assembles_the_rows_its_selection_scanned(tree, tmp_path, monkeypatch):
    import dicomarray.index

    scans = []
    real_scan = dicomarray.index.scan
    monkeypatch.setattr(
        dicomarray.index, "scan", lambda *a, **k: scans.append(a) or real_scan(*a, **k)
    )
    report = convert(tree, tmp_path / "out", formats=("npy",), workers=0, progress=False)
    assert len(report) == 4 and len(scans) == 1


def test_an_uneven_series_reports_each_slice_step_and_no_single_one(tmp_path):
    hu = np.zeros((28, 8, 8))
    write_series(tmp_path / "in" / "ge", hu, pixel_spacing=(0.5, 0.5), positions=UNEVEN_POSITIONS)
    write_series(tmp_path / "in" / "even", hu[:6], pixel_spacing=(0.5, 0.25), seed=1)
    for status in ("ok", "skipped"):  # a resumed row has the figures of its manifest
        report = convert(
            tmp_path / "in", tmp_path / "out", formats=("npy",), workers=0, progress=False
        )
        assert set(report["status"]) == {status}
        saved = pd.read_csv(tmp_path / "out" / "report.csv", keep_default_na=False, dtype=str)
        rows = saved.set_index("slices")
        assert rows.loc["28", "spacing_mm"] == "4/7 x 0.5 x 0.5"
        assert rows.loc["28", "slice_steps"].startswith(
            "two blocks: 14 slices at 4 mm, then 14 at 7 mm after slice 13"
        )
        assert rows.loc["6", "spacing_mm"] == "5 x 0.5 x 0.25"
        assert rows.loc["6", "slice_steps"] == "regular: 6 slices at 5 mm"


def test_an_uneven_series_goes_to_nifti_equalized_and_its_row_says_so(tmp_path):
    nib = pytest.importorskip("nibabel")
    hu = np.zeros((28, 8, 8))
    write_series(tmp_path / "in" / "ge", hu, pixel_spacing=(0.5, 0.5), positions=UNEVEN_POSITIONS)
    report = convert(
        tmp_path / "in", tmp_path / "out", formats=("nifti",), workers=0, progress=False
    )
    row = report.iloc[0]
    assert row["status"] == "ok", row["error"]
    assert "NIfTI written equalized onto the finest slice step" in row["warnings"]
    image = nib.load(next((tmp_path / "out").rglob("*.nii*")))
    # 13 steps of 4 mm and 14 of 7 mm, on 4 mm steps: (52 + 98) / 4 + 1 slices
    assert sorted(image.header.get_zooms()) == pytest.approx([0.5, 0.5, 4.0])
    assert 4.0 * (max(image.shape) - 1) == pytest.approx(150.0, abs=4.0)


def test_batch_pictures_are_annotated_when_asked(tmp_path):
    from PIL import Image

    write_series(tmp_path / "in" / "a", np.zeros((6, 64, 64)), pixel_spacing=(1.0, 1.0))
    pictures = {}
    for annotate in (False, True):
        out = tmp_path / f"out-{annotate}"
        report = convert(
            tmp_path / "in", out, formats=("jpg",), workers=0, progress=False, annotate=annotate
        )
        assert set(report["status"]) == {"ok"}
        pictures[annotate] = np.asarray(Image.open(next(out.rglob("*.jpg"))).convert("L"))
    assert pictures[False].max() < 30  # a blank series, drawn black
    assert pictures[True].max() > 200  # white letters on it


def test_a_failed_multiframe_series_reports_the_frames_it_selected(tmp_path):
    from .test_volume import write_multiframe

    path = tmp_path / "in" / "mf.dcm"
    path.parent.mkdir()
    write_multiframe(path, np.zeros((6, 8, 8), np.int16), z=[2.0 * i for i in range(6)])
    path.write_bytes(path.read_bytes()[:-100])  # cut pixel data: the series fails
    (row,) = convert(
        tmp_path / "in", tmp_path / "out", formats=("npy",), workers=0, progress=False
    ).to_dict("records")
    assert row["status"] == "failed" and row["slices"] == 6


# --------------------------------------------------------------------------------------------
# One reading of the files for every format; n-D series
# --------------------------------------------------------------------------------------------

ALL_FORMATS = ("zarr", "npy", "nifti", "jpg", "orthogonal", "montage", "dicom")


def one_series(root: Path) -> Path:
    patient_series(root, [{"PatientID": "P1"}], slices=6)
    return root


def reference_hu(folder: Path) -> np.ndarray:
    """HU of a series' files in slice order, by pydicom."""
    headers = [pydicom.dcmread(p) for p in folder.iterdir()]
    headers.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    return np.stack(
        [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in headers]
    )


def check_read_once(reads, frames: int) -> None:
    """As many frame reads as frames: with outputs holding every frame's values (checked by
    the caller), each frame was read exactly once."""
    assert len(reads) == frames, sorted(reads)


def test_every_format_reads_each_file_once(tmp_path, reads):
    # before: zarr, npy and nifti each computed hu() from the files (18 frame reads of 6),
    # every format 38
    report = convert(
        one_series(tmp_path / "in"),
        tmp_path / "out",
        formats=ALL_FORMATS,
        workers=0,
        progress=False,
    )
    assert list(report["status"]) == ["ok"], list(report["error"])
    check_read_once(reads, 6)
    folder = tmp_path / "out" / report["folder"].iloc[0]
    hu = np.load(folder / "image.npy")
    np.testing.assert_array_equal(hu, reference_hu(tmp_path / "in" / "s0"))
    np.testing.assert_array_equal(xr.open_zarr(folder / "image.zarr")["image"].values, hu)
    dicom = dicomarray.open_series(folder / "dicom").dicom.hu().values
    np.testing.assert_array_equal(dicom, hu)


def test_a_series_too_large_to_hold_is_streamed_sharing_each_chunk(tmp_path, reads, monkeypatch):
    monkeypatch.setattr(dicomarray.batch, "IN_MEMORY_BYTES", 0)
    report = convert(
        one_series(tmp_path / "in"),
        tmp_path / "out",
        formats=("zarr", "npy", "nifti"),
        workers=0,
        progress=False,
    )
    assert list(report["status"]) == ["ok"], list(report["error"])
    check_read_once(reads, 6)  # the three exports computed together share each chunk
    folder = tmp_path / "out" / report["folder"].iloc[0]
    hu = reference_hu(tmp_path / "in" / "s0")
    np.testing.assert_array_equal(xr.open_zarr(folder / "image.zarr")["image"].values, hu)
    np.testing.assert_array_equal(np.load(folder / "image.npy"), hu)


@pytest.fixture
def time_series(tmp_path) -> tuple[Path, np.ndarray]:
    """Three volumes of 6 slices, 2 s apart, (t, z, y, x)."""
    hu = head_phantom(6, 32, 32, slice_spacing=20.0, pixel_spacing=(7.2, 7.2))
    folder = tmp_path / "in" / "perfusion"
    write_time_series(folder, hu, 3, pixel_spacing=(7.2, 7.2), slice_spacing=20.0)
    return folder.parent, expected_values(hu, 3)


def nifti_writes_4d(tmp_path) -> bool:
    volume = open_time_series(_tiny_time_series(tmp_path)).dicom.hu()
    try:
        volume.dicom.to_nifti(tmp_path / "probe.nii.gz")
    except dicomarray.WriteError as exc:
        if "needs the three dims" in str(exc):
            return False
        raise
    return True


def _tiny_time_series(tmp_path):
    folder = tmp_path / "tiny"
    write_time_series(folder, np.zeros((2, 4, 4)), 2, pixel_spacing=(1.0, 1.0), slice_spacing=1.0)
    return folder


def test_a_4d_series_goes_through_every_format_reading_each_file_once(time_series, tmp_path, reads):
    from PIL import Image

    root, expected = time_series
    formats = tuple(f for f in ALL_FORMATS if f != "nifti" or nifti_writes_4d(tmp_path))
    reads.clear()
    report = convert(root, tmp_path / "out", formats=formats, workers=0, progress=False)
    (row,) = report.to_dict("records")
    assert row["status"] == "ok", row["error"]
    assert (row["dims"], row["shape"], row["slices"]) == ("t,z,y,x", "3x6x32x32", 6)
    check_read_once(reads, 18)
    folder = tmp_path / "out" / row["folder"]
    np.testing.assert_array_equal(np.load(folder / "image.npy"), expected)
    zarr = xr.open_zarr(folder / "image.zarr")["image"]
    assert zarr.dims == ("t", "z", "y", "x")
    np.testing.assert_array_equal(zarr.values, expected)
    np.testing.assert_allclose(zarr["t"].values, [0.0, 2.0, 4.0])
    written = sorted((folder / "dicom").iterdir())
    times = [int(pydicom.dcmread(p).TemporalPositionIdentifier) for p in written]
    assert times == [1] * 6 + [2] * 6 + [3] * 6
    hu = [pydicom.dcmread(p) for p in written]
    hu = np.stack(
        [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in hu]
    )
    np.testing.assert_array_equal(hu, expected.reshape(18, 32, 32))
    # the pictures show the first volume: as the 3-D volume of its own files draws it
    first = dicomarray.open_series(
        sorted(
            p
            for p in (root / "perfusion").iterdir()
            if pydicom.dcmread(p, stop_before_pixels=True).TemporalPositionIdentifier == 1
        )
    ).dicom.hu()
    first.dicom.to_jpg(tmp_path / "first.jpg")
    np.testing.assert_array_equal(
        np.asarray(Image.open(folder / "middle.jpg")),
        np.asarray(Image.open(tmp_path / "first.jpg")),
    )
    assert expected[1].mean() == expected[0].mean() + OFFSET_HU  # a later volume would differ


def test_a_skipped_4d_series_reports_its_dims_from_the_manifest(time_series, tmp_path):
    root, _expected = time_series
    convert(root, tmp_path / "out", formats=("npy",), workers=0, progress=False)
    (row,) = convert(root, tmp_path / "out", formats=("npy",), workers=0, progress=False).to_dict(
        "records"
    )
    assert (row["status"], row["dims"], row["shape"]) == ("skipped", "t,z,y,x", "3x6x32x32")
