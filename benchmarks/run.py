"""Run the suite: write the data once, time every task in fresh processes, write the results.

``python -m benchmarks --help`` lists the options. Each (task, dataset) runs ``--warmup``
discarded rounds and then ``--rounds`` timed rounds; within a round every contender runs
once, in an order rotated by one each round, so that no contender always runs first (or
always right after the same neighbour). The reported figure is the median over the timed
rounds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.contenders import CONTENDERS, NOT_APPLICABLE, TASKS
from benchmarks.datasets import FULL, QUICK, dataset_specs, ensure
from benchmarks.machine import describe_machine, load_average
from benchmarks.report import write_results
from benchmarks.targets import Summary, check_all

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent

#: The datasets each task runs on, by role (see :func:`benchmarks.datasets.dataset_specs`).
TASK_DATASETS: dict[str, tuple[str, ...]] = {
    "import": ("-",),
    "index": ("u12-large", "study"),
    "stored": ("u12-small", "s16-small", "u12-large", "s16-large"),
    "hu": ("u12-small", "s16-small", "u12-large", "s16-large"),
    "slice": ("u12-small", "s16-small"),
    "zarr": ("u12-large",),
    "batch-1w": ("study",),
    "batch-2w": ("study",),
}
METRICS = ("seconds", "import_seconds", "peak_above_mb", "rss_peak_mb", "wall_seconds")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time dicomarray against SimpleITK, pydicom, dicom-numpy and a floor.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny data (8-12 slices of 64x64)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="discarded rounds (default 1)")
    parser.add_argument(
        "--tasks", default=",".join(TASK_DATASETS), help="comma-separated; default: all"
    )
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated")
    parser.add_argument("--data", type=Path, default=HERE / "data", help="data cache folder")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results folder")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per process")
    options = parser.parse_args(argv)
    options.tasks = _choices(parser, "tasks", options.tasks, TASK_DATASETS)
    options.contenders = _choices(parser, "contenders", options.contenders, CONTENDERS)
    if options.rounds < 1 or options.warmup < 0:
        parser.error("--rounds must be at least 1 and --warmup at least 0")
    return options


def _choices(parser: argparse.ArgumentParser, name: str, text: str, known: Any) -> list[str]:
    picked = [item.strip() for item in text.split(",") if item.strip()]
    unknown = sorted(set(picked) - set(known))
    if unknown:
        parser.error(f"unknown {name} {unknown}; choose from {', '.join(known)}")
    return picked


def main(argv: list[str] | None = None) -> int:
    """Run the suite and write results.{md,json,png}; 0 when every process succeeded."""
    options = parse_args(argv)
    specs = dataset_specs(QUICK if options.quick else FULL)
    plan, skipped = make_plan(options.tasks, options.contenders)
    folders = prepare_data(plan, specs, options.data)
    scratch = options.data / "scratch"
    records: list[dict[str, Any]] = []
    load_before = load_average()
    started = time.perf_counter()
    for task, dataset, contenders in plan:
        records += time_task(task, dataset, contenders, folders.get(dataset), scratch, options)
        _log(f"[{time.perf_counter() - started:6.0f} s] done {task} on {dataset}")
    shutil.rmtree(scratch, ignore_errors=True)
    summary = summarize(records)
    results = {
        "machine": describe_machine(REPO),
        "options": {
            "quick": options.quick,
            "rounds": options.rounds,
            "warmup": options.warmup,
            "total_seconds": round(time.perf_counter() - started, 1),
            "load_before": load_before,
        },
        "datasets": {key: spec.label for key, spec in specs.items()},
        "summary": [
            {"task": t, "dataset": d, "contender": c, **s} for (t, d, c), s in summary.items()
        ],
        "targets": check_all(summary),
        "skipped": skipped,
        "records": records,
    }
    paths = write_results(results, options.out)
    _log("wrote " + ", ".join(str(p) for p in paths))
    return 1 if any("error" in r for r in records) else 0


def make_plan(
    tasks: list[str], contenders: list[str]
) -> tuple[list[tuple[str, str, list[str]]], list[dict[str, str]]]:
    """(task, dataset, contenders) to run, and what is left out with the reason."""
    plan, skipped = [], []
    batch_ready = _batch_available()
    for task in tasks:
        if task.startswith("batch") and not batch_ready:
            skipped.append(_skip(task, "dicomarray", "not yet available: no dicomarray.batch"))
            continue
        runnable = [c for c in contenders if c in TASKS[task]]
        skipped += [
            _skip(task, c, NOT_APPLICABLE[task, c])
            for c in contenders
            if (task, c) in NOT_APPLICABLE
        ]
        if runnable:
            plan += [(task, dataset, runnable) for dataset in TASK_DATASETS[task]]
    return plan, skipped


def _skip(task: str, contender: str, reason: str) -> dict[str, str]:
    return {"task": task, "contender": contender, "reason": reason}


def _batch_available() -> bool:
    # look for the module's file: importing it here would load dicomarray into the parent
    spec = importlib.util.find_spec("dicomarray")
    if spec is None or not spec.submodule_search_locations:
        return False
    return any(
        (Path(p) / "batch.py").exists() or (Path(p) / "batch").is_dir()
        for p in spec.submodule_search_locations
    )


def prepare_data(plan: list[tuple[str, str, list[str]]], specs: dict, root: Path) -> dict:
    """Write (or reuse) every dataset the plan needs; dataset key -> folder."""
    folders = {}
    for key in dict.fromkeys(dataset for _, dataset, _ in plan):
        if key == "-":
            continue
        start = time.perf_counter()
        folders[key] = ensure(specs[key], root)
        _log(f"data {specs[key].label}: {folders[key]} ({time.perf_counter() - start:.1f} s)")
    return folders


def time_task(
    task: str,
    dataset: str,
    contenders: list[str],
    folder: Path | None,
    scratch: Path,
    options: argparse.Namespace,
) -> list[dict[str, Any]]:
    """Warm-up and timed rounds of one task on one dataset, contenders rotated each round."""
    records = []
    for round_number in range(-options.warmup, options.rounds):
        shift = round_number % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            record = run_child(task, contender, folder, scratch, options.timeout)
            record.update(task=task, dataset=dataset, contender=contender, round=round_number)
            record["warmup"] = round_number < 0
            records.append(record)
            _log(_progress_line(record))
    return records


def run_child(
    task: str, contender: str, folder: Path | None, scratch: Path, timeout: float
) -> dict[str, Any]:
    """One timing in a fresh interpreter; the child's JSON plus the wall time seen here."""
    work = scratch / f"{task}-{contender}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    command = [sys.executable, "-m", "benchmarks.task", task, contender]
    command += [str(folder) if folder else "-", "--scratch", str(work)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    finally:
        wall = time.perf_counter() - start
        shutil.rmtree(work, ignore_errors=True)  # outputs are big; the disk is shared
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        return {"error": " | ".join(tail) or f"exit code {done.returncode}", "wall_seconds": wall}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_seconds": wall}


def summarize(records: list[dict[str, Any]]) -> Summary:
    """Medians over the timed rounds by (task, dataset, contender)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for record in records:
        if not record["warmup"]:
            key = (record["task"], record["dataset"], record["contender"])
            groups.setdefault(key, []).append(record)
    return {key: _summary_row(rows) for key, rows in groups.items()}


def _summary_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if "error" not in r]
    row: dict[str, Any] = {"runs": len(ok)}
    errors = sorted({r["error"] for r in rows if "error" in r})
    if errors:
        row["errors"] = errors
    if not ok:
        return row
    for metric in METRICS:
        row[metric] = statistics.median(r[metric] for r in ok)
    row["seconds_min"] = min(r["seconds"] for r in ok)
    row["seconds_max"] = max(r["seconds"] for r in ok)
    row["result"] = ok[-1]["result"]
    row["notes"] = sorted({note for r in ok for note in r.get("notes", [])})
    return row


def _progress_line(record: dict[str, Any]) -> str:
    head = f"{record['task']:>8} {record['dataset']:>9} {record['contender']:>11} "
    head += "warm-up" if record["warmup"] else f"round {record['round'] + 1}"
    if "error" in record:
        return f"{head}: FAILED {record['error']}"
    return f"{head}: {record['seconds']:.3f} s, peak +{record['peak_above_mb']:.0f} MB"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
