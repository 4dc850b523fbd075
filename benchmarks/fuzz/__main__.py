"""``python -m benchmarks.fuzz``: mutate DICOM files and run them through the public API.

Examples
--------
``python -m benchmarks.fuzz --n 10000`` runs 10,000 cases and writes
``benchmarks/fuzz/results/summary.{json,md}`` and ``cases.jsonl``; the exit code is 1 when a
case has a hard finding. ``python -m benchmarks.fuzz --replay 1234 --keep case/`` writes
case 1234's files to ``case/`` and runs it alone, to reproduce a finding.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from .corpus import load_corpus, syntaxes
from .runner import Limits, make_case, run, write_case
from .stages import ALL_STAGES, STAGES
from .summary import markdown, read_cases, summarize, write

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    corpus = load_corpus()
    limits = Limits(args.seconds, args.memory_mb)
    stages = tuple(args.stages.split(",")) if args.stages else STAGES
    if args.replay is not None:
        return _replay(args, corpus, limits, stages)
    if args.summarize:
        records = read_cases(args.out)
        return _report(records, _run_info(args, stages, corpus, None), args.out)
    start = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="dicomarray-fuzz-") as work,
        open(args.out / "cases.jsonl", "w") as log,
    ):
        numbers = range(args.n)
        records = run(
            numbers, args.seed, corpus, Path(work), limits, stages=stages, progress=True, log=log
        )
    return _report(records, _run_info(args, stages, corpus, time.monotonic() - start), args.out)


def _report(records: list[dict], info: dict, out: Path) -> int:
    summary = summarize(records, info)
    write(summary, out)
    print(f"{len(records)} cases, {summary['hard_findings']} with a hard finding: {out}")
    return 1 if summary["hard_findings"] else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__)
    parser.add_argument("--n", type=int, default=1000, help="cases to run (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (default 0)")
    parser.add_argument("--seconds", type=float, default=10.0, help="CPU seconds per case")
    parser.add_argument("--memory-mb", type=int, default=500, help="memory budget per case")
    parser.add_argument("--stages", help=f"comma-separated subset of {','.join(ALL_STAGES)}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results go")
    parser.add_argument("--replay", type=int, help="run only this case number")
    parser.add_argument(
        "--summarize", action="store_true", help="summarize OUT/cases.jsonl (a run going on)"
    )
    parser.add_argument("--keep", type=Path, help="with --replay: write the case's files here")
    return parser


def _replay(args, corpus, limits: Limits, stages: tuple[str, ...]) -> int:
    case = make_case(args.replay, args.seed, corpus)
    print(f"case {case.id}: seed {case.seed} ({case.syntax}); {'; '.join(case.mutations)}")
    if args.keep:
        write_case(case, args.keep, next(iter(corpus[0].files.values())))
        print(f"files written to {args.keep / 'input'}")
    with tempfile.TemporaryDirectory(prefix="dicomarray-fuzz-") as work:
        numbers = range(case.id, case.id + 1)
        (record,) = run(numbers, args.seed, corpus, Path(work), limits, stages=stages)
    summary = summarize([record], _run_info(args, stages, corpus, record["wall_s"]))
    print(markdown(summary))
    return 1 if summary["hard_findings"] else 0


def _run_info(args, stages: tuple[str, ...], corpus, duration: float | None) -> dict:
    import pydicom

    return {
        "n": args.n,
        "seed": args.seed,
        "seconds": args.seconds,
        "wall_seconds": Limits(args.seconds).wall,
        "memory_mb": args.memory_mb,
        "stages": list(stages),
        "syntaxes": syntaxes(corpus),
        "seeds": [seed.name for seed in corpus],
        "pydicom": pydicom.__version__,
        "commit": _commit(),
        "duration_s": None if duration is None else round(duration, 1),
    }


def _commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return result.stdout.strip()


if __name__ == "__main__":
    raise SystemExit(main())
