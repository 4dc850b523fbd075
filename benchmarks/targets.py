"""The figures issue 7 asks dicomarray to reach, checked against one run's medians."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.datasets import LAYOUTS

#: Summary rows by (task, dataset key, contender); the dataset key is "-" for none.
Summary = dict[tuple[str, str, str], dict[str, Any]]


@dataclass(frozen=True)
class Measure:
    """One median of the summary: a metric of a contender on a task and dataset."""

    task: str
    dataset: str
    contender: str
    metric: str  # "seconds", "peak_above_mb" or "rss_peak_mb"

    def value(self, summary: Summary) -> float | None:
        row = summary.get((self.task, self.dataset, self.contender))
        return None if row is None else row.get(self.metric)


@dataclass(frozen=True)
class Target:
    """``measure <= limit``, or ``measure / reference <= limit`` when a reference is set."""

    label: str
    measure: Measure
    limit: float
    reference: Measure | None = None
    strict: bool = False  # "under": < rather than <=

    def check(self, summary: Summary) -> dict[str, Any]:
        value = self.measure.value(summary)
        base = self.reference.value(summary) if self.reference else 1.0
        row: dict[str, Any] = {
            "target": self.label,
            "limit": self.limit,
            "value": None,
            "status": "not measured",
        }
        if value is None or not base:
            return row
        ratio = value / base
        met = ratio < self.limit if self.strict else ratio <= self.limit
        row.update(value=ratio, status="met" if met else "MISSED")
        if self.reference:
            row["detail"] = (
                f"{_fmt(value, self.measure.metric)} / {_fmt(base, self.reference.metric)}"
            )
        return row


def _fmt(value: float, metric: str) -> str:
    return f"{value:.3g} s" if metric == "seconds" else f"{value:.0f} MB"


def issue_targets() -> list[Target]:
    """The figures of issue 7, on the small (300-slice) and large (900-slice) series."""
    targets = []
    for layout in LAYOUTS:
        small = f"{layout}-small"
        sitk_load = Measure("stored", small, "simpleitk", "seconds")
        targets += [
            Target(
                f"stored values, {layout}: dicomarray time / SimpleITK full load",
                Measure("stored", small, "dicomarray", "seconds"),
                1.0,
                sitk_load,
            ),
            Target(
                f"HU volume, {layout}: dicomarray time / floor",
                Measure("hu", small, "dicomarray", "seconds"),
                3.0,
                Measure("hu", small, "floor", "seconds"),
            ),
            Target(
                f"HU volume, {layout}: dicomarray peak memory / floor's",
                Measure("hu", small, "dicomarray", "peak_above_mb"),
                1.6,
                Measure("hu", small, "floor", "peak_above_mb"),
            ),
            Target(
                f"one HU slice, {layout}: dicomarray time / SimpleITK full load",
                Measure("slice", small, "dicomarray", "seconds"),
                0.5,
                sitk_load,
            ),
        ]
    return targets + [
        Target(
            "header index of the large series: dicomarray time / pydicom loop",
            Measure("index", "u12-large", "dicomarray", "seconds"),
            0.67,
            Measure("index", "u12-large", "pydicom", "seconds"),
        ),
        Target(
            "zarr export of the large series: dicomarray peak memory (whole process), MB",
            Measure("zarr", "u12-large", "dicomarray", "rss_peak_mb"),
            400.0,
            strict=True,
        ),
        Target(
            "import dicomarray, s",
            Measure("import", "-", "dicomarray", "seconds"),
            1.0,
            strict=True,
        ),
    ]


def check_all(summary: Summary) -> list[dict[str, Any]]:
    """Every target's measured value and status: met, MISSED or not measured."""
    return [target.check(summary) for target in issue_targets()]
