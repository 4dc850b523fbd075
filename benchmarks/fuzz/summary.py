"""Counting a run's records and writing them as JSON and markdown.

A *finding* is anything the README's security notes promise cannot happen: an exception
other than :class:`~dicomarray.errors.DicomArrayError` out of a public call, ``scan``
raising at all, a case over its time budget, a child killed by a signal, an attempt to
allocate past the memory budget (a ``MemoryError`` anywhere in the exception chain, even
wrapped in a DicomArrayError), a file outside the input tree indexed, an input changed.
A seed unchanged (a control) that does not pass every stage is one too: a run whose
valid files do not open tests nothing past ``open``. A DicomArrayError whose message
names no file of the case is counted apart (a quality
finding, not a safety one).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from .stages import ALL_STAGES

#: Kinds of findings that make a run fail.
HARD = (
    "control failed", "exception", "scan raised", "timeout", "crash", "memory", "outside read",
    "input changed",
)  # fmt: skip


def findings(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The findings of one case record, each with its kind, stage, type and where."""
    found = []
    if record["status"] != "done":
        found.append(
            {"kind": record["status"], "stage": record.get("stage"), "type": record["reason"]}
        )
    for stage, outcome in record.get("stages", {}).items():
        kind = _kind(stage, outcome)
        if record.get("control") and outcome["outcome"] in ("dicom_error", "error"):
            kind = "control failed"  # a valid seed must pass: else the run tests nothing
        if kind:
            found.append({"kind": kind, "stage": stage, **_brief(outcome)})
    if record.get("outside"):
        outside = {"type": "file outside the input tree indexed", "message": record["outside"][0]}
        found.append({"kind": "outside read", "stage": "scan", **outside})
    if record.get("input_changed"):
        found.append({"kind": "input changed", "stage": None, "type": None})
    return found


def _kind(stage: str, outcome: dict[str, Any]) -> str | None:
    if outcome["outcome"] in ("ok", "not_run"):
        return None
    if outcome.get("memory"):
        return "memory"
    if outcome["outcome"] == "error":
        return "exception"
    if stage == "scan":
        return "scan raised"
    if not outcome.get("names_file"):
        return "error names no file"
    return None


def _brief(outcome: dict[str, Any]) -> dict[str, Any]:
    return {k: outcome.get(k) for k in ("type", "where", "message")}


def summarize(records: list[dict[str, Any]], run: dict[str, Any]) -> dict[str, Any]:
    """Totals per syntax, per mutation, per stage and per status, and the grouped findings."""
    per_stage: dict[str, Counter] = {stage: Counter() for stage in run["stages"]}
    groups: dict[tuple, dict[str, Any]] = {}
    cases_with: Counter = Counter()
    for record in records:
        for stage, outcome in record.get("stages", {}).items():
            per_stage[stage][outcome["outcome"]] += 1
        kinds = set()
        for finding in findings(record):
            kinds.add(finding["kind"])
            key = (finding["kind"], finding["stage"], finding["type"], finding.get("where"))
            group = groups.setdefault(key, {**finding, "count": 0, "cases": []})
            group["count"] += 1
            if len(group["cases"]) < 5:
                group["cases"].append(record["id"])
        cases_with.update(kinds)
    exception_types: dict[str, Counter] = defaultdict(Counter)
    for record in records:
        for outcome in record.get("stages", {}).values():
            if outcome["outcome"] in ("dicom_error", "error"):
                exception_types[outcome["outcome"]][outcome["type"]] += 1
    return {
        "run": run,
        "files": len(records),
        "per_syntax": dict(Counter(r["syntax"] for r in records)),
        "per_mutation": dict(Counter(r["mutations"][0].split(":")[0] for r in records)),
        "per_status": dict(Counter(r["status"] for r in records)),
        "per_stage": {stage: dict(counts) for stage, counts in per_stage.items()},
        "exception_types": {kind: dict(c) for kind, c in exception_types.items()},
        "cases_with_finding": dict(cases_with),
        "max_rss_mb": max((r["max_rss_mb"] for r in records), default=0),
        "max_cpu_s": max((r["cpu_s"] for r in records), default=0),
        "findings": sorted(groups.values(), key=lambda g: (g["kind"], -g["count"])),
        "hard_findings": sum(cases_with[kind] for kind in HARD),
    }


def write(summary: dict[str, Any], out: Path) -> None:
    """``summary.json`` and ``summary.md`` in ``out`` (beside the run's ``cases.jsonl``)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    (out / "summary.md").write_text(markdown(summary))


def read_cases(out: Path) -> list[dict[str, Any]]:
    """The case records of a run (finished or still going) from its ``cases.jsonl``."""
    with open(out / "cases.jsonl") as cases:
        return [json.loads(line) for line in cases if line.endswith("\n")]


def markdown(summary: dict[str, Any]) -> str:
    """The summary as markdown tables, findings first."""
    run = summary["run"]
    counts = sorted(summary["cases_with_finding"].items())
    kinds = ", ".join(f"{k}: {v}" for k, v in counts if k in HARD)
    others = ", ".join(f"{k}: {v}" for k, v in counts if k not in HARD)
    lines = [
        f"# Fuzz run: {summary['files']} files, seed {run['seed']}",
        "",
        f"dicomarray {run['commit']}, pydicom {run['pydicom']}; budget per file "
        f"{run['seconds']} s CPU ({run['wall_seconds']} s wall), {run['memory_mb']} MB; "
        f"took {run['duration_s']} s.",
        "",
        f"**Cases with a hard finding: {summary['hard_findings']}** ({kinds or 'none'}); "
        f"other findings: {others or 'none'}.",
        "",
        "## Findings",
        "",
        "| kind | stage | type | where | count | cases | message |",
        "|---|---|---|---|---|---|---|",
    ]
    for group in summary["findings"]:
        message = str(group.get("message") or "").replace("|", "/").replace("\n", " ")[:120]
        lines.append(
            f"| {group['kind']} | {group['stage']} | {group['type']} | {group.get('where')} "
            f"| {group['count']} | {', '.join(map(str, group['cases']))} | {message} |"
        )
    lines += ["", "## Files per syntax", "", "| syntax | files |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary["per_syntax"].items()]
    lines += ["", "## Files per mutation", "", "| mutation | files |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(summary["per_mutation"].items())]
    outcomes = ("ok", "dicom_error", "error", "not_run")
    lines += ["", "## Outcomes per stage", "", "| stage | " + " | ".join(outcomes) + " |"]
    lines.append("|---" * (len(outcomes) + 1) + "|")
    for stage in ALL_STAGES:
        if stage in summary["per_stage"]:
            counts = summary["per_stage"][stage]
            cells = " | ".join(str(counts.get(o, 0)) for o in outcomes)
            lines.append(f"| {stage} | {cells} |")
    lines += ["", "## Exception types", "", "| outcome | type | count |", "|---|---|---|"]
    for kind, types in summary["exception_types"].items():
        lines += [f"| {kind} | {t} | {n} |" for t, n in sorted(types.items(), key=lambda x: -x[1])]
    lines += [
        "",
        f"Status: {summary['per_status']}; largest peak RSS {summary['max_rss_mb']} MB, "
        f"longest CPU {summary['max_cpu_s']} s.",
        "",
    ]
    return "\n".join(lines)
