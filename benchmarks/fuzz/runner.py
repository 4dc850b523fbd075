"""Making the cases and running each one in its own forked child, under limits.

The parent imports dicomarray once and never reads pixel data (so it holds no threads), then
forks one child per case. The child sets ``RLIMIT_AS`` (its address space at the fork plus
the memory budget) and ``RLIMIT_CPU`` (the time budget), runs the stages and sends their
outcomes back through a pipe. A child that is still running after three times the time
budget of wall-clock time (a blocked read, a machine under load) is killed. So every case
starts from the same clean state, an allocation past the budget fails in the case that made
it, and a hang is caught and named with the stage it hung in.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import random
import resource
import select
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .corpus import Seed
from .mutate import choose
from .stages import STAGES, run_stages

#: Probability that a case gets a second mutation on top of the first.
STACK_PROBABILITY = 0.15

#: Special entries a case's tree may also hold, with their weights. A named pipe blocks
#: whoever opens it, so it is rare: every one costs the wall-clock budget until scan skips it.
TREE_EXTRAS: dict[str, int] = {
    "none": 960,
    "link outside": 12,
    "link to parent folder": 8,
    "dangling link": 8,
    "socket": 6,
    "fifo": 2,
}


@dataclass
class Case:
    """One mutated input tree: where it came from, what was done, and its files."""

    id: int
    seed: str
    syntax: str
    mutations: list[str]
    files: dict[str, bytes] = field(repr=False)
    target: str
    extra: str = "none"
    control: bool = False

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "seed": self.seed,
            "syntax": self.syntax,
            "mutations": self.mutations,
            "target": self.target,
            "extra": self.extra,
            "control": self.control,
            "bytes": len(self.files[self.target]),
        }


def make_case(number: int, run_seed: int, corpus: list[Seed]) -> Case:
    """Case ``number`` of a run: the same number and run seed always give the same bytes.

    The first ``len(corpus)`` cases are the seeds unchanged (the controls: a valid file
    must pass every stage); the others cycle through the seeds so every syntax gets its share.
    """
    seed = corpus[number % len(corpus)]
    files = dict(seed.files)
    if number < len(corpus):
        return Case(
            number, seed.name, seed.syntax, ["none"], files, seed.target, control=seed.passes
        )
    rng = random.Random(f"{run_seed}:{number}")
    data, done = files[seed.target], []
    while True:
        mutation = choose(rng, dicomdir=seed.syntax == "DICOMDIR")
        data, description = mutation(rng, data)
        done.append(f"{mutation.__name__}: {description}")
        if rng.random() >= STACK_PROBABILITY or not data:
            break
    files[seed.target] = data
    extra = rng.choices(list(TREE_EXTRAS), list(TREE_EXTRAS.values()))[0]
    return Case(number, seed.name, seed.syntax, done, files, seed.target, extra)


def write_case(case: Case, folder: Path, sentinel: bytes) -> Path:
    """Write the case's tree under ``folder/input`` and a valid file beside it, outside."""
    input_dir = folder / "input"
    for relative, data in case.files.items():
        path = input_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (folder / "outside").mkdir(parents=True, exist_ok=True)
    (folder / "outside" / "sentinel.dcm").write_bytes(sentinel)
    (folder / "out").mkdir(exist_ok=True)
    _add_extra(case.extra, input_dir / EXTRA_NAME)
    return input_dir


#: The name of a case's special entry, in the top folder of its tree.
EXTRA_NAME = "special.dcm"


def _add_extra(extra: str, path: Path) -> None:
    if extra == "link outside":
        path.symlink_to(Path("..", "outside", "sentinel.dcm"))
    elif extra == "link to parent folder":
        path.symlink_to(Path(".."), target_is_directory=True)
    elif extra == "dangling link":
        path.symlink_to(Path("nowhere.dcm"))
    elif extra == "socket":
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(str(path))
    elif extra == "fifo":
        os.mkfifo(path)


@dataclass(frozen=True)
class Limits:
    """Per-case budgets: CPU seconds, memory, and wall-clock seconds (default 3 x CPU).

    The wall-clock budget only catches a child that waits without using CPU (a blocked
    read); it is larger than the CPU budget so that a loaded machine does not pass off a
    slow case as a blocked one.
    """

    seconds: float = 10.0
    memory_mb: int = 500
    wall_seconds: float | None = None

    @property
    def wall(self) -> float:
        return self.wall_seconds if self.wall_seconds is not None else 3 * self.seconds


def prepare_parent(corpus: list[Seed], work: Path, stages: tuple[str, ...]) -> None:
    """Import what the children use, once, and keep glibc to one malloc arena.

    The modules are those a child imports while running the controls (the seeds unchanged):
    imported here, every child starts warm and a case costs its own work only. Every thread
    a child starts would otherwise reserve a 64 MB arena of address space, which
    ``RLIMIT_AS`` counts as if it were an allocation.
    """
    import importlib

    import dicomarray  # noqa: F401

    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, 1)  # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc: the limit is only looser
        pass
    for name in _modules_used(corpus, work, stages):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001, S112 - an optional module a child may still import
            continue
    _register_image_plugins()
    # objects alive now are never collected: a child's collector then leaves their pages
    # shared with the parent instead of copying the whole heap on its first collection
    gc.freeze()


def _register_image_plugins() -> None:
    """Pillow registers its format plugins on the first save; do it once, here."""
    try:
        from PIL import Image
    except ImportError:
        return
    Image.init()


def _modules_used(corpus: list[Seed], work: Path, stages: tuple[str, ...]) -> list[str]:
    """The modules a forked child has imported after running every control case."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        code = 0
        try:
            _quiet()
            for number in range(len(corpus)):
                case = make_case(number, 0, corpus)
                folder = work / f"warm-{number}"
                run_stages(write_case(case, folder, b""), folder / "out", lambda _: None, stages)
            os.write(write_end, json.dumps(sorted(sys.modules)).encode())
        except BaseException:  # noqa: BLE001 - the parent then starts cold, nothing worse
            code = 70
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return [name for name in json.loads(data or b"[]") if name not in sys.modules]


def run_case(
    case: Case, folder: Path, sentinel: bytes, limits: Limits, stages: tuple[str, ...] = STAGES
) -> dict[str, Any]:
    """Run one case in a forked child; the record of what happened, whatever happened."""
    input_dir = write_case(case, folder, sentinel)
    read_end, write_end = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        _child(input_dir, folder / "out", write_end, limits, stages)
    os.close(write_end)
    lines, killed = _collect(read_end, pid, limits.wall)
    _, status, usage = os.wait4(pid, 0)
    record = case.record()
    record.update(_status(status, killed, lines))
    record["wall_s"] = round(time.monotonic() - start, 3)
    record["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 3)
    record["max_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    record["input_changed"] = _changed(case, input_dir)
    shutil.rmtree(folder, ignore_errors=True)
    return record


def _child(
    input_dir: Path, out_dir: Path, fd: int, limits: Limits, stages: tuple[str, ...]
) -> None:
    code = 0
    try:
        _quiet()
        _limit(limits)

        def started(stage: str) -> None:
            message = {"stage": stage, "cpu": time.process_time()}
            os.write(fd, json.dumps(message).encode() + b"\n")

        result = run_stages(input_dir, out_dir, started, stages)
        message = {"result": result, "cpu": time.process_time()}
        os.write(fd, json.dumps(message).encode() + b"\n")
    except BaseException:  # noqa: BLE001 - the parent reads the missing result as a crash
        code = 70
    finally:
        os._exit(code)


def _quiet() -> None:
    """Decoders and dask may print; the run's output stays the parent's."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)


def _limit(limits: Limits) -> None:
    address_space = _address_space() + limits.memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    seconds = int(limits.seconds + 0.999)
    used = resource.getrusage(resource.RUSAGE_SELF)
    already = int(used.ru_utime + used.ru_stime)
    resource.setrlimit(resource.RLIMIT_CPU, (already + seconds, already + seconds + 1))


def _address_space() -> int:
    """This process's virtual memory size in bytes (VmSize)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmSize in /proc/self/status")


def _collect(fd: int, pid: int, wall_seconds: float) -> tuple[list[dict], bool]:
    """Read the child's messages until it closes the pipe or runs out of wall-clock time."""
    deadline = time.monotonic() + wall_seconds
    buffer, killed = b"", False
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                killed = True
                break
            ready, _, _ = select.select([pipe], [], [], left)
            if not ready:
                continue
            chunk = pipe.read(1 << 16)
            if not chunk:
                break
            buffer += chunk
    lines = [json.loads(line) for line in buffer.splitlines() if line.strip()]
    return lines, killed


def _status(status: int, killed: bool, lines: list[dict]) -> dict[str, Any]:
    """``done`` with the stage outcomes, or ``timeout`` / ``crash`` with the last stage."""
    stages = [line for line in lines if "stage" in line]
    results = [line for line in lines if "result" in line]
    last = stages[-1]["stage"] if stages else None
    if results:
        end = results[0]["cpu"]
        return {"status": "done", **results[0]["result"], "stage_cpu_s": _stage_cpu(stages, end)}
    if killed:
        return {"status": "timeout", "stage": last, "reason": "wall-clock"}
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGXCPU, signal.SIGKILL):
        return {"status": "timeout", "stage": last, "reason": "cpu"}
    reason = (
        f"signal {signal.Signals(os.WTERMSIG(status)).name}"
        if os.WIFSIGNALED(status)
        else f"exit code {os.WEXITSTATUS(status)}"
    )
    return {"status": "crash", "stage": last, "reason": reason}


def _stage_cpu(started: list[dict], end: float) -> dict[str, float]:
    """CPU seconds of each stage, from the times the stages started and the run ended."""
    times = [line["cpu"] for line in started] + [end]
    return {
        line["stage"]: round(b - a, 3)
        for line, a, b in zip(started, times[:-1], times[1:], strict=True)
    }


def _changed(case: Case, input_dir: Path) -> bool:
    """Whether any input file was changed, removed or added by the stages."""
    on_disk = {
        p.relative_to(input_dir).as_posix()
        for p in input_dir.rglob("*")
        if p.name != EXTRA_NAME and not p.is_dir()
    }
    if on_disk != set(case.files):
        return True
    return any((input_dir / name).read_bytes() != data for name, data in case.files.items())


def run(
    numbers: range,
    run_seed: int,
    corpus: list[Seed],
    work: Path,
    limits: Limits,
    *,
    stages: tuple[str, ...] = STAGES,
    progress: bool = False,
    log: TextIO | None = None,
) -> list[dict[str, Any]]:
    """Run the cases ``numbers`` one after the other; one record per case.

    With ``log``, each record is also written there as one JSON line as soon as its case
    ends, so a long run can be read (and summarized) while it goes on.
    """
    prepare_parent(corpus, work, stages)
    sentinel = next(iter(corpus[0].files.values()))
    records = []
    for number in numbers:
        case = make_case(number, run_seed, corpus)
        records.append(run_case(case, work / str(number), sentinel, limits, stages))
        if log is not None:
            log.write(json.dumps(records[-1], default=str) + "\n")
            log.flush()
        if progress and len(records) % 100 == 0:
            print(f"{len(records)} / {len(numbers)} cases", file=sys.stderr, flush=True)
    return records
