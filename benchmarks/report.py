"""The results as JSON (everything), Markdown (the tables) and PNG (the chart)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.chart import draw_chart

TASK_TITLES = {
    "import": "Import time in a fresh interpreter",
    "index": "Header index of a tree",
    "stored": "Stored values of a series in memory (open from scratch, compute)",
    "hu": "Float32 HU volume in memory",
    "slice": "One HU slice of a series, opened from scratch",
    "zarr": "Zarr export as float32 HU",
    "batch-1w": "Ten-patient batch to zarr, 1 worker process",
    "batch-2w": "Ten-patient batch to zarr, 2 worker processes",
}

METHOD = """\
- Every figure is the median of {rounds} timed rounds after {warmup} discarded warm-up
  round(s). Each run is a fresh `python` process; within a round the contenders run one
  after the other, in an order rotated by one each round.
- Time is the task alone, measured inside the child with `time.perf_counter`, after the
  contender's imports (import times are the separate *import* task).
- Peak memory is the child's own account, the high-water mark of its resident set (`VmHWM`
  in `/proc/self/status`, reset after the imports; `ru_maxrss` is not used because Linux
  carries it over from the parent across `exec`). *Above imports* is the task's peak minus
  the resident size right after the imports (the memory the task needed); *process* is the
  whole process's peak, imports included. Memory ratios use *above imports*; worker
  processes (batch) are not counted.
- Warm cache: every contender reads the same files, alternating, after a warm-up round, so
  all of them read from the OS page cache; the figures are CPU and memory bound, not disk
  bound.
- SimpleITK: `ImageSeriesReader` on `GetGDCMSeriesFileNames`, then
  `GetArrayViewFromImage` (no copy). It always applies the rescale (int16 or int32 HU, as
  GDCM picks for the layout), so its *stored* run is its full load, and the targets' "SimpleITK
  full load" is that run. Its index is GDCM's series scan of each folder; its slice sorts with
  GDCM and reads the middle file alone.
- pydicom loop: `dcmread` every file, sort along the slice normal, `np.stack` the
  `pixel_array`s, one float32 cast and an in-place rescale. Its index reads every header with
  `stop_before_pixels=True` and keeps the tags dicomarray indexes.
- dicom-numpy: `combine_slices(datasets, rescale=..., c_order_axes=True)` on datasets read
  with `dcmread`.
- Floor: read each file's bytes, convert its trailing Rows x Columns x 2 bytes into one
  preallocated array (float32 with slope and intercept for HU), one thread, slice order and
  rescale known in advance. Its index reads the first 4 KiB of every file.
- Zarr: every contender writes float32 chunks of 32 slices with zarr's default codec;
  dicomarray through its own writer. The store is deleted after each run.
"""


def write_results(results: dict[str, Any], out: Path) -> list[Path]:
    """results.json, results.md and results.png in ``out``; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "results.md", out / "results.png"]
    paths[0].write_text(json.dumps(results, indent=1, default=str) + "\n")
    paths[1].write_text(markdown(results))
    draw_chart(results, paths[2])
    return paths


def markdown(results: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    options = results["options"]
    lines = ["# dicomarray benchmarks", "", _machine_line(results["machine"]), ""]
    lines += [_load_line(options.get("load_before"), results["machine"].get("load_average")), ""]
    if options["quick"]:
        lines += ["**Quick run on tiny data: the figures mean nothing.**", ""]
    lines += ["## Targets of issue 7", "", *target_table(results["targets"]), ""]
    lines += ["## Results", ""]
    rows = results["summary"]
    for task in dict.fromkeys(r["task"] for r in rows):
        lines += [f"### {TASK_TITLES.get(task, task)}", ""]
        lines += result_table([r for r in rows if r["task"] == task], results["datasets"]) + [""]
    lines += _batch_speedup(rows)
    lines += _skipped(results["skipped"]) + _checks(rows) + _notes(rows)
    lines += ["## How it was measured", "", METHOD.format(**options)]
    lines.append(f"Total run time: {options['total_seconds'] / 60:.1f} min.")
    return "\n".join(lines) + "\n"


def _machine_line(machine: dict[str, Any]) -> str:
    libraries = ", ".join(f"{k} {v}" for k, v in machine["libraries"].items() if v)
    return (
        f"Run {machine['date']} on {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['memory_gib']} GiB RAM, {machine['os']}; Python {machine['python']}; "
        f"{libraries}; commit {machine['commit']}."
    ) + _changed(machine.get("changed_library_files"))


def _load_line(before: list[float] | None, after: list[float] | None) -> str:
    """The load averages around the run: other processes on a shared machine add noise."""
    if not before or not after:
        return ""
    return (
        f"Load average (1 min): {before[0]:g} before the run, {after[0]:g} after it. Other work "
        "on the machine was not stopped; the ranges show the noise it left."
    )


def _changed(files: list[str] | None) -> str:
    if not files:
        return ""
    return f" Library files changed from that commit when measured: {', '.join(files)}."


def target_table(targets: list[dict[str, Any]]) -> list[str]:
    lines = ["| target | measured | limit | status | detail |", "|---|--:|--:|---|---|"]
    for t in targets:
        value = "" if t["value"] is None else f"{t['value']:.3g}"
        lines.append(
            f"| {t['target']} | {value} | {t['limit']:g} | {t['status']} | {t.get('detail', '')} |"
        )
    return lines


def result_table(rows: list[dict[str, Any]], datasets: dict[str, str]) -> list[str]:
    """One task's rows: medians, ratios to the floor and to SimpleITK, memory, result."""
    lines = [
        "| data | contender | median s | range s | x floor | x SimpleITK "
        "| peak MB above imports | peak MB process | result |",
        "|---|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in rows:
        label = datasets.get(row["dataset"], "-")
        if "seconds" not in row:
            errors = "; ".join(row.get("errors", ["no run"]))
            lines.append(f"| {label} | {row['contender']} | failed: {errors} |" + " |" * 6)
            continue
        floor = _peer(rows, row, "floor")
        sitk = _peer(rows, row, "simpleitk")
        lines.append(
            f"| {label} | {row['contender']} | {row['seconds']:.3f} "
            f"| {row['seconds_min']:.3f}-{row['seconds_max']:.3f} "
            f"| {_ratio(row, floor)} | {_ratio(row, sitk)} "
            f"| {row['peak_above_mb']:.0f} | {row['rss_peak_mb']:.0f} "
            f"| {describe_result(row['result'])}{_rate(row)} |"
        )
    return lines


def _rate(row: dict[str, Any]) -> str:
    if not row["task"].startswith("batch") or "items" not in row["result"]:
        return ""
    return f", {row['result']['items'] / row['seconds']:.2f} series/s"


def _batch_speedup(rows: list[dict[str, Any]]) -> list[str]:
    seconds = {r["task"]: r.get("seconds") for r in rows if r["task"].startswith("batch")}
    one, two = seconds.get("batch-1w"), seconds.get("batch-2w")
    if not (one and two):
        return []
    return [f"Batch speed-up from 1 to 2 worker processes: {one / two:.2f} x.", ""]


def _peer(rows: list[dict[str, Any]], row: dict[str, Any], contender: str) -> dict | None:
    for other in rows:
        if other["dataset"] == row["dataset"] and other["contender"] == contender:
            return other if "seconds" in other else None
    return None


def _ratio(row: dict[str, Any], reference: dict[str, Any] | None) -> str:
    if reference is None or not reference["seconds"]:
        return ""
    return f"{row['seconds'] / reference['seconds']:.2f}"


def describe_result(result: dict[str, Any]) -> str:
    """``300x512x512 int16, mean -696.6``, ``900 items``, ``... 210 MB on disk``."""
    parts = []
    if "shape" in result:
        parts.append("x".join(str(n) for n in result["shape"]) + f" {result['dtype']}")
    if "mean" in result:
        parts.append(f"mean {result['mean']:.2f}")
    if "items" in result:
        parts.append(f"{result['items']} items")
    if "status" in result:
        parts.append(", ".join(f"{k} {v}" for k, v in result["status"].items()))
    if "bytes" in result:
        parts.append(f"{result['bytes'] / 2**20:.0f} MB on disk")
    return ", ".join(parts)


def value_mismatches(rows: list[dict[str, Any]]) -> list[str]:
    """Contenders whose mean value differs from the floor's on the same task and data.

    SimpleITK always rescales, so its *stored* result is compared with the HU floor.
    """
    means = {
        (r["task"], r["dataset"], r["contender"]): r["result"]["mean"]
        for r in rows
        if "mean" in r.get("result", {})
    }
    problems = []
    for (task, dataset, contender), mean in means.items():
        ref_task = "hu" if (task, contender) == ("stored", "simpleitk") else task
        expected = means.get((ref_task, dataset, "floor"))
        if expected is not None and abs(mean - expected) > 1e-3 * max(1.0, abs(expected)):
            problems.append(
                f"{task} on {dataset}: {contender} mean {mean:.4f}, floor {expected:.4f}"
            )
    return problems


def _skipped(skipped: list[dict[str, str]]) -> list[str]:
    if not skipped:
        return []
    lines = ["## Not measured", ""]
    lines += [f"- {s['task']}, {s['contender']}: {s['reason']}" for s in skipped]
    return lines + [""]


def _checks(rows: list[dict[str, Any]]) -> list[str]:
    problems = value_mismatches(rows)
    if not problems:
        return ["## Checks", "", "Every contender's mean value agrees with the floor's.", ""]
    return ["## Checks", "", *(f"- values differ: {p}" for p in problems), ""]


def _notes(rows: list[dict[str, Any]]) -> list[str]:
    notes = sorted({note for r in rows for note in r.get("notes", [])})
    return ["## Notes", "", *(f"- {n}" for n in notes), ""] if notes else []
