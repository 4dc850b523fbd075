"""What the benchmark ran on: CPU, cores, memory, Python and library versions, commit."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = (
    "dicomarray",
    "pydicom",
    "SimpleITK",
    "dicom-numpy",
    "numpy",
    "pandas",
    "xarray",
    "dask",
    "distributed",
    "zarr",
)


def describe_machine(repo: Path) -> dict[str, Any]:
    """A JSON-safe description of this machine and software, with the date (UTC)."""
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        # the machine may be shared: a busy one makes every contender slower and noisier
        "load_average": load_average(),
        "commit": _commit(repo),
        "changed_library_files": _changed_files(repo),
    }


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, rounded."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _commit(repo: Path) -> str | None:
    """The checked-out commit, marked ``+dirty`` when library files differ from it."""
    head = _git(repo, "rev-parse", "--short", "HEAD")
    if not head:
        return None
    return f"{head}+dirty" if _changed_files(repo) else head


def _changed_files(repo: Path) -> list[str]:
    """Library files that differ from the commit: what was measured is not only the commit."""
    status = _git(repo, "status", "--porcelain", "--", "dicomarray")
    return [line[3:] for line in status.splitlines() if line.strip()]


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    except OSError:
        return ""
    return done.stdout.rstrip() if done.returncode == 0 else ""
