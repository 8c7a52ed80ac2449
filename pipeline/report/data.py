"""A sweep's results grouped the way the report reads them: per experiment, one line per
value of what the experiment varies (slice, model, strategy), one point per budget with
its seeds' figures and, where the metric has one, each seed's bootstrap 95% interval.

The metric is a results.parquet column: by default the eval suite's average headline
(`suite_average`), else zero-shot top-1 for a sweep without a suite; `--metric` names
another column or a suite task (its headline, `suite_<task>`). A metric's interval is the
columns `<metric>_lo` and `<metric>_hi`, its chance `<metric>_chance`."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from clikit.errors import UserError
from pipeline.sweep.results import SUITE_PREFIX

SUITE_METRIC = "suite_average"  # the default, when the sweep evaluated with a suite
PLAIN_METRIC = "zeroshot_top1"  # the old single eval folder's figure
# Chance columns not named <metric>_chance (the old eval's).
CHANCE_COLUMNS = {"zeroshot_top1": "zeroshot_chance_top1"}
DIMENSIONS = ("slice", "cfg_model", "strategy_label")  # what a line can stand for, in label order


@dataclass
class Point:
    """One budget of one line: the seeds' runs."""

    budget: float
    values: list[float]  # the metric, one per seed
    lows: list[float]  # each seed's bootstrap 95% interval (the value itself when the metric has none)
    highs: list[float]
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
    def intervals(self) -> bool:
        """Whether the figures carry bootstrap intervals."""
        return any(lo != v or hi != v for lo, v, hi in zip(self.lows, self.values, self.highs))

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
    metric: str = PLAIN_METRIC  # the results column the lines plot

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


def default_metric(rows: list[dict[str, Any]]) -> str:
    """The suite's average where the cells have one, else zero-shot top-1."""
    return SUITE_METRIC if any(_number(r.get(SUITE_METRIC)) is not None for r in rows) else PLAIN_METRIC


def resolve_metric(rows: list[dict[str, Any]], name: str | None) -> str:
    """The column `--metric NAME` means: NAME itself, or a suite task's headline suite_NAME."""
    if name is None:
        return default_metric(rows)
    columns = {key for row in rows for key in row}
    for column in (name, SUITE_PREFIX + name):
        if column in columns and any(_number(r.get(column)) is not None for r in rows):
            return column
    tasks = sorted(c.removeprefix(SUITE_PREFIX) for c in columns
                   if c.startswith(SUITE_PREFIX) and not c.endswith(("_lo", "_hi", "_chance")))
    plain = [c for c in ("zeroshot_top1", "zeroshot_top5", "image_to_text_R@1", "text_to_image_R@1") if c in columns]
    raise UserError(f"--metric {name}: no cell has that figure; use one of {', '.join(tasks + plain) or 'none'}")


# How the report names a metric (else by its column).
METRIC_LABELS = {SUITE_METRIC: "suite average", PLAIN_METRIC: "zero-shot top-1"}


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def chance_column(metric: str) -> str:
    return CHANCE_COLUMNS.get(metric, f"{metric}_chance")


def _number(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def group(rows: list[dict[str, Any]], meta: dict[str, Any], metric: str = PLAIN_METRIC) -> list[Experiment]:
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
            by_budget: dict[float, list[dict[str, Any]]] = {}
            for r in sorted(line_rows, key=lambda r: (r["budget_value"], r["cfg_seed"])):
                by_budget.setdefault(r["budget_value"], []).append(r)
            points = {b: point_of(b, budget_rows, metric) for b, budget_rows in by_budget.items()}
            built.append(Line(label, {d: line_rows[0][d] for d in varies}, sorted(points.values(), key=lambda p: p.budget)))
        experiments.append(Experiment(name, varies, mine[0]["budget_kind"], built, mine, metric))
    return experiments


def point_of(budget: float, rows: list[dict[str, Any]], metric: str) -> Point:
    """One budget of one arm: its seeds' rows (every one holding the metric)."""
    values = [float(r[metric]) for r in rows]
    lows = [v if _number(r.get(f"{metric}_lo")) is None else float(r[f"{metric}_lo"]) for v, r in zip(values, rows)]
    highs = [v if _number(r.get(f"{metric}_hi")) is None else float(r[f"{metric}_hi"]) for v, r in zip(values, rows)]
    first = rows[0]
    return Point(budget, values, lows, highs, [float(r["flops"]) for r in rows], [float(r["samples_seen"]) for r in rows],
                 [float(r["epochs"] or 0) for r in rows],
                 first.get("slice_fraction") if first.get("slice_kind") == "top" else None,
                 [r["cell"] for r in rows])


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
