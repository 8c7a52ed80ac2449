"""DataComp's baselines at demo scale (Gadre et al. 2023, Table 3): for a sweep whose arms
are filtering recipes, one table per budget (method, share of the pool kept, the suite
average with its band, the eval folder's zero-shot top-1 as the ImageNet-like headline,
each suite task) and whether DataComp's orderings held here, judged with the report's
bands (pipeline.report.findings.gap): "held" when the arms separate the claimed way at every
budget both ran at, "did not hold" when they separate the other way at one, "within noise"
otherwise.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pipeline.report.data import Experiment, Line, fmt_budget, metric_label
from pipeline.report.findings import Gap, band, gap

NO_FILTER = "no filter"
CLIP_SCORE = "clip_top"
IMAGE_AND_CLIP = "image_based ∩ clip score"
# The orderings DataComp found at its small scales, as (sentence, arm A, arm B): A ahead of B
# (for "at least", too: a tie within noise shows nothing either way).
ORDERINGS = (
    ("CLIP score filtering beats no filtering", CLIP_SCORE, NO_FILTER),
    ("image-based ∩ CLIP score is at least CLIP score", IMAGE_AND_CLIP, CLIP_SCORE),
    ("basic filtering beats no filtering", "basic", NO_FILTER),
)
HEADLINE = "zeroshot_top1"  # the sweep's eval folder: the pool's own classes, its ImageNet


def method_name(row: dict[str, Any]) -> str:
    """The arm as DataComp's table names it: the whole (deduplicated) pool is "no filter"; a
    recipe arm is its recipe (image_based cut by a CLIP-score share is the intersection)."""
    if row.get("slice_kind") == "top" and row.get("slice_fraction") == 1.0:
        return NO_FILTER
    if row.get("slice_kind") == "recipe":
        recipe = row.get("slice_recipe") or row["slice"]
        params = json.loads(row.get("slice_params") or "{}")
        if recipe == "image_based" and params.get("fraction", 1.0) < 1.0:
            return IMAGE_AND_CLIP
        return recipe
    return str(row["slice"])


def has_recipe_arms(exp: Experiment) -> bool:
    return "slice" in exp.varies and any(r.get("slice_kind") == "recipe" for r in exp.rows)


@dataclass
class Ordering:
    claim: str
    verdict: str  # "held" | "did not hold" | "within noise" | "not run"
    evidence: str


def _lines_by_method(exp: Experiment) -> dict[str, Line]:
    by_cell = {r["cell"]: r for r in exp.rows}
    methods = {}
    for line in exp.lines:
        first = by_cell[line.points[0].cells[0]]
        methods.setdefault(method_name(first), line)
    return methods


def orderings(exp: Experiment) -> list[Ordering]:
    """Each of DataComp's orderings judged at every budget both arms ran at."""
    methods = _lines_by_method(exp)
    out = []
    for claim, a_name, b_name in ORDERINGS:
        a, b = methods.get(a_name), methods.get(b_name)
        budgets = [x for x in exp.budgets if a and b and a.at(x) and b.at(x)]
        if not budgets:
            out.append(Ordering(claim, "not run", f"the sweep has no {a_name!r} and {b_name!r} arms at one budget"))
            continue
        gaps: list[tuple[float, Gap]] = [(x, gap(a.at(x), b.at(x))) for x in budgets]
        # Held: A separated ahead at every budget; did not hold: B separated ahead at one.
        verdict = ("did not hold" if any(g.below for _, g in gaps) else
                   "held" if all(g.above for _, g in gaps) else "within noise")
        evidence = "; ".join(f"{fmt_budget(exp, x)}: {a_name} {100 * a.at(x).mean:.1f}% vs {b_name} "
                             f"{100 * b.at(x).mean:.1f}% ({100 * g.margin:+.1f} pp, {g.band() or 'one seed, no band'})"
                             for x, g in gaps)
        out.append(Ordering(claim, verdict, evidence))
    return out


def tables(exp: Experiment, rows: list[dict[str, Any]]) -> list[tuple[str, list[list[str]]]]:
    """(budget label, table) per budget: one row per method, best first by the metric."""
    by_cell = {r["cell"]: r for r in rows}
    tasks = sorted({k.removeprefix("suite_") for r in exp.rows for k in r if k.startswith("suite_")
                    and not k.endswith(("_lo", "_hi", "_chance")) and k != "suite_average" and r[k] is not None})
    out = []
    for budget in exp.budgets:
        arms = []
        for line in exp.lines:
            point = line.at(budget)
            if point is None:
                continue
            cells = [by_cell[c] for c in point.cells]
            arms.append((method_name(cells[0]), point, cells))
        whole = next((cells[0]["slice_size"] for name, _, cells in arms if name == NO_FILTER), None)
        table = [["method", "kept", f"{metric_label(exp.metric)} (mean)", "band", "eval top-1", *tasks]]
        for name, point, cells in sorted(arms, key=lambda arm: -arm[1].mean):
            low, high = band(point)
            kept = cells[0].get("slice_size")
            table.append([name, f"{kept / whole:.0%}" if whole and kept is not None else "-", f"{point.mean:.1%}",
                          f"[{low:.1%}, {high:.1%}]", _mean(cells, HEADLINE),
                          *(_mean(cells, f"suite_{task}") for task in tasks)])
        out.append((fmt_budget(exp, budget), table))
    return out


def _mean(cells: list[dict[str, Any]], column: str) -> str:
    values = [c[column] for c in cells if c.get(column) is not None]
    return f"{sum(values) / len(values):.1%}" if values else "-"
