"""A sweep's results grouped the way the report reads them: per experiment, one line per
value of what the experiment varies (slice, model, strategy), one point per budget with
its seeds' figures."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

METRIC = "zeroshot_top1"
DIMENSIONS = ("slice", "cfg_model", "strategy_label")  # what a line can stand for, in label order


@dataclass
class Point:
    """One budget of one line: the seeds' runs."""

    budget: float
    values: list[float]  # the metric, one per seed
    flops: list[float]
    samples: list[float]
    epochs: list[float]
    fraction: float | None  # the slice's share of the pool (top slices)
    cells: list[str] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def spread(self) -> float:
        """Seed spread: max - min over the seeds (0 with one seed)."""
        return max(self.values) - min(self.values)

    @property
    def x_flops(self) -> float:
        return statistics.fmean(self.flops)

    @property
    def x_samples(self) -> float:
        return statistics.fmean(self.samples)


@dataclass
class Line:
    label: str
    key: dict[str, Any]  # the values of the experiment's varying dimensions
    points: list[Point]

    def at(self, budget: float) -> Point | None:
        return next((p for p in self.points if p.budget == budget), None)


@dataclass
class Experiment:
    name: str
    varies: list[str]  # the dimensions with more than one value
    budget_kind: str
    lines: list[Line]
    rows: list[dict[str, Any]]

    @property
    def budgets(self) -> list[float]:
        return sorted({p.budget for line in self.lines for p in line.points})


def _label(dims: list[str], row: dict[str, Any]) -> str:
    parts = []
    for dim in dims:
        value = str(row[dim])
        parts.append(value.removeprefix("tiny-") if dim == "cfg_model" else value)
    return ", ".join(parts) if parts else str(row["cfg_model"])


def _sort_key(line_rows: list[dict[str, Any]]) -> tuple:
    row = line_rows[0]
    return (row.get("slice_kind") != "top", row.get("slice_fraction") or 0, str(row.get("slice")),
            str(row["cfg_model"]), str(row["strategy_label"]))


def group(rows: list[dict[str, Any]], meta: dict[str, Any], metric: str = METRIC) -> list[Experiment]:
    """Experiments in the sweep's order, each with its lines (sorted: top slices by share)."""
    ok = [r for r in rows if r["status"] == "ok" and r.get(metric) is not None and not math.isnan(r[metric])]
    by_cell = {r["cell"]: r for r in ok}
    experiments = []
    for name, ids in (meta.get("experiments") or {"all": [r["cell"] for r in ok]}).items():
        mine = [by_cell[c] for c in dict.fromkeys(ids) if c in by_cell]
        if not mine:
            continue
        varies = [d for d in DIMENSIONS if len({str(r[d]) for r in mine}) > 1]
        lines: dict[str, list[dict[str, Any]]] = {}
        for row in mine:
            lines.setdefault(_label(varies, row), []).append(row)
        built = []
        for label, line_rows in sorted(lines.items(), key=lambda item: _sort_key(item[1])):
            points: dict[float, Point] = {}
            for r in sorted(line_rows, key=lambda r: (r["budget_value"], r["cfg_seed"])):
                p = points.setdefault(r["budget_value"], Point(r["budget_value"], [], [], [], [],
                                                               r.get("slice_fraction") if r.get("slice_kind") == "top" else None))
                p.values.append(float(r[metric]))
                p.flops.append(float(r["flops"]))
                p.samples.append(float(r["samples_seen"]))
                p.epochs.append(float(r["epochs"] or 0))
                p.cells.append(r["cell"])
            built.append(Line(label, {d: line_rows[0][d] for d in varies}, sorted(points.values(), key=lambda p: p.budget)))
        experiments.append(Experiment(name, varies, mine[0]["budget_kind"], built, mine))
    return experiments


def fmt_budget(exp: Experiment, budget: float) -> str:
    """'3e+12 FLOPs' or '8000 samples' as a short label."""
    if exp.budget_kind == "samples":
        return f"{int(budget):,} samples"
    for suffix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9)):
        if budget >= scale:
            return f"{budget / scale:.3g}{suffix} FLOPs"
    return f"{budget:.3g} FLOPs"


def pp(value: float) -> str:
    """A difference in accuracy as percentage points."""
    return f"{100 * value:.1f} pp"
