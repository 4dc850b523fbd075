"""One timing in a fresh interpreter: ``python -m benchmarks.task TASK CONTENDER FOLDER``.

The child imports the contender's libraries, notes its resident memory (the baseline),
runs the task once under the clock, notes its peak resident memory and prints one JSON line.

Peak memory is the kernel's own account of this process: ``VmHWM`` in
``/proc/self/status``, the high-water mark of its resident set, reset to the current size
after the imports (``/proc/self/clear_refs``), so that the task's own peak is measured, not
a transient of the imports. ``getrusage(RUSAGE_SELF).ru_maxrss`` is not usable here: Linux
carries it across ``exec`` from the parent, so every child would report at least the
parent's peak. Where ``/proc`` is missing, ``ru_maxrss`` is the fallback. Worker processes,
if a task starts any, are not counted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.contenders import TASKS, Data, imports_for

STATUS = Path("/proc/self/status")


def memory_mb() -> tuple[float, float]:
    """This process's (resident, peak resident) memory in MiB."""
    try:
        fields = dict(line.split(":", 1) for line in STATUS.read_text().splitlines())
        return _kib(fields["VmRSS"]) / 1024.0, _kib(fields["VmHWM"]) / 1024.0
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
        return peak, peak


def _kib(field: str) -> int:
    return int(field.split()[0])


def reset_peak() -> bool:
    """Start the peak resident set over from the current size; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def run(task: str, contender: str, folder: Path | None, scratch: Path) -> dict[str, Any]:
    """Import, time one run of the task and describe what it returned."""
    start = time.perf_counter()
    for module in imports_for(task, contender):
        importlib.import_module(module)
    import_seconds = time.perf_counter() - start
    import_peak = memory_mb()[1]
    reset_peak()
    baseline = memory_mb()[0]
    data = Data.load(folder, scratch) if folder is not None else Data(Path(), scratch)
    function = TASKS[task][contender]
    start = time.perf_counter()
    result = function(data)
    seconds = import_seconds if task == "import" else time.perf_counter() - start
    peak = memory_mb()[1]
    return {
        "seconds": seconds,
        "import_seconds": import_seconds,
        "rss_base_mb": baseline,
        "rss_peak_mb": max(peak, import_peak),
        "peak_above_mb": max(peak - baseline, 0.0),
        "result": describe(result),
        "notes": data.notes,
    }


def describe(result: Any) -> dict[str, Any]:
    """Shape, dtype and mean of an array, or the size of an index or a store.

    The mean (in float64, so that summation order does not matter) lets the report check
    that the contenders agree on the values, not only on the speed.
    """
    if isinstance(result, tuple):  # (array view, object keeping its buffer alive)
        result = result[0]
    if result is None:
        return {}
    if isinstance(result, Path):
        return _describe_store(result)
    if hasattr(result, "dtype") and hasattr(result, "shape"):
        import numpy as np

        return {
            "shape": list(result.shape),
            "dtype": str(result.dtype),
            "mean": float(np.mean(result, dtype=np.float64)),
        }
    if hasattr(result, "columns") and "status" in getattr(result, "columns", ()):
        return {"items": len(result), "status": result["status"].value_counts().to_dict()}
    return {"items": len(result)}


def _describe_store(store: Path) -> dict[str, Any]:
    """Size on disk and, from the metadata alone, the shape of the 3-D array in a store."""
    import zarr

    size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    node = zarr.open(store, mode="r")
    arrays = [node] if isinstance(node, zarr.Array) else [a for _, a in node.arrays()]
    volume = next((a for a in arrays if a.ndim == 3), None)
    if volume is None:
        return {"bytes": size}
    return {"bytes": size, "shape": list(volume.shape), "dtype": str(volume.dtype)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("contender")
    parser.add_argument("folder", help="dataset folder, or - for none")
    parser.add_argument("--scratch", type=Path, required=True, help="folder for outputs")
    args = parser.parse_args(argv)
    if args.contender not in TASKS[args.task]:
        parser.error(f"{args.contender} has no {args.task} task")
    folder = None if args.folder == "-" else Path(args.folder)
    print(json.dumps(run(args.task, args.contender, folder, args.scratch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
