"""Findings as sentences computed from the results, each with its margin and its noise:
the best arm at each budget, where lines cross, and for each finding of Scaling (Down) CLIP
(Li, Xie, Cubuk 2024) whether it reproduced here and by how much.

Two arms are told apart only when their bands do not overlap. An arm's band at a budget
spans its seeds' bootstrap 95% intervals and the seed values themselves (with no interval,
the seeds' min-max), so a wider seed spread or a wider interval makes a separation harder,
never easier. One seed without an interval has no noise measure: nothing is separated.
A paper claim is "reproduced" only when each of its parts separates in the claimed
direction, "not reproduced" when a part separates against it and none for it, "partly"
when some parts separate for it and others do not, and "within noise" when no part
separates; a crossing is named only when the arms separate at both ends of the budget range."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.report.data import PLAIN_METRIC, Experiment, Line, Point, fmt_budget, point_of, pp
from pipeline.report.fit import Fit, crossing

CNN_WORDS = ("resnet", "convnext", "lite0")
VIT_WORDS = ("vit", "eva")
# The two arms the paper's half-data claim compares, as the sweep names their strategies.
AUGMENTED_ARM, PLAIN_ARM = "clip-aug", "clip"
# "Matches": the half-data arm's band reaches no lower than this below the full arm's band.
MATCH_MARGIN = 0.005
EPS = 1e-9  # rounding in sums of figures, not a tolerance

HOLDS, FAILS, NOISE = "holds", "fails", "within noise"


@dataclass(frozen=True)
class Gap:
    """Arm A's figure minus arm B's at one budget: the difference of the seed means and the
    range the bands allow (A's band low minus B's band high, up to A's high minus B's low)."""

    margin: float
    low: float
    high: float
    measured: bool  # a noise measure exists (two seeds or an interval)

    @property
    def above(self) -> bool:
        """A separated above B."""
        return self.measured and self.low > EPS

    @property
    def below(self) -> bool:
        return self.measured and self.high < -EPS

    def status(self) -> str:
        """For a claim that A leads B."""
        return HOLDS if self.above else FAILS if self.below else NOISE

    def band(self) -> str:
        """'difference -0.6 to +3.0 pp', or nothing when there is no noise measure."""
        return f"difference {100 * self.low:+.1f} to {100 * self.high:+.1f} pp" if self.measured else ""


def band(p: Point) -> tuple[float, float]:
    """The arm's band: its seeds' intervals and values, lowest to highest."""
    return min(p.lows + p.values), max(p.highs + p.values)


def gap(a: Point, b: Point) -> Gap:
    (a_lo, a_hi), (b_lo, b_hi) = band(a), band(b)
    measured = min(len(a.values), len(b.values)) > 1 or a.intervals or b.intervals
    return Gap(a.mean - b.mean, a_lo - b_hi, a_hi - b_lo, measured)


def combine(statuses: list[str]) -> str:
    """A claim's verdict from its parts' statuses."""
    if statuses and all(s == HOLDS for s in statuses):
        return "reproduced"
    if HOLDS in statuses:
        return "partly"
    return "not reproduced" if FAILS in statuses else "within noise"


def _with_band(g: Gap) -> str:
    return f" ({g.band()})" if g.measured else ""


@dataclass
class Best:
    budget: float
    best: Line
    point: Point
    runner: Line | None
    runner_point: Point | None

    @property
    def margin(self) -> float:
        return self.point.mean - self.runner_point.mean if self.runner_point else float("nan")

    @property
    def lead(self) -> Gap | None:
        return gap(self.point, self.runner_point) if self.runner_point else None

    @property
    def clear(self) -> bool:
        """The bands separate (never without a noise measure)."""
        return self.lead is not None and self.lead.above


def best_at(exp: Experiment, budget: float) -> Best | None:
    ranked = sorted(((line, line.at(budget)) for line in exp.lines if line.at(budget)), key=lambda t: -t[1].mean)
    if not ranked:
        return None
    runner = ranked[1] if len(ranked) > 1 else (None, None)
    return Best(budget, ranked[0][0], ranked[0][1], runner[0], runner[1])


def seeds_text(p: Point) -> str:
    return f"seeds {min(p.values):.1%}-{max(p.values):.1%}" if len(p.values) > 1 else "one seed"


def best_sentence(exp: Experiment, b: Best) -> str:
    head = f"At {fmt_budget(exp, b.budget)}, {b.best.label} is best with {b.point.mean:.1%} ({seeds_text(b.point)})"
    if b.runner is None:
        return head + "."
    lead = b.lead
    verdict = ("one seed and no interval, so no noise to judge the lead by" if not lead.measured
               else f"a lead beyond the noise ({lead.band()})" if b.clear else f"within noise ({lead.band()})")
    runner = (f"{b.runner_point.mean:.1%}" if len(b.runner_point.values) < 2  # one seed: no spread to show
              else f"{b.runner_point.mean:.1%}, spread {pp(b.runner_point.spread)}")
    return f"{head}, {pp(b.margin)} ahead of {b.runner.label} ({runner}): {verdict}."


def crossings(exp: Experiment, fits: dict[str, Fit | None]) -> list[str]:
    """Pairs of lines whose order flips between the smallest and the largest budget. Named a
    crossing, with the budget where their fitted curves cross (or, unfitted, between which
    budgets they swap), only when the two separate at both ends; else "within noise"."""
    if len(exp.budgets) < 2:
        return []
    lo, hi = exp.budgets[0], exp.budgets[-1]
    out, noisy = [], []
    for i, l1 in enumerate(exp.lines):
        for l2 in exp.lines[i + 1:]:
            a, b, c, d = l1.at(lo), l2.at(lo), l1.at(hi), l2.at(hi)
            if not all((a, b, c, d)) or (a.mean - b.mean) * (c.mean - d.mean) >= 0:
                continue
            first, second = (l1, l2) if a.mean > b.mean else (l2, l1)
            at_lo, at_hi = gap(first.at(lo), second.at(lo)), gap(first.at(hi), second.at(hi))
            ends = (f"{first.label} leads {second.label} at {fmt_budget(exp, lo)} by {pp(at_lo.margin)}"
                    f"{_with_band(at_lo)} and trails it at {fmt_budget(exp, hi)} by {pp(-at_hi.margin)}"
                    f"{_with_band(at_hi)}")
            if not (at_lo.above and at_hi.below):
                noisy.append((f"{ends}: within noise, so no crossing is named.",
                              f"{first.label} / {second.label}", max(abs(at_lo.margin), abs(at_hi.margin))))
                continue
            f1, f2 = fits.get(l1.label), fits.get(l2.label)
            where = None
            if f1 and f2:
                where = crossing(f1, f2, min(a.x_flops, b.x_flops), max(c.x_flops, d.x_flops))
            at = (f"their fitted curves cross at {where:.3g} FLOPs" if where
                  else f"they swap between {fmt_budget(exp, lo)} and {fmt_budget(exp, hi)}")
            out.append(f"{ends}; {at}.")
    if len(noisy) == 1:
        out.append(noisy[0][0])
    elif noisy:  # ten arms give dozens of swaps in the noise: one sentence, not one each
        out.append(f"{len(noisy)} pairs swap order between {fmt_budget(exp, lo)} and {fmt_budget(exp, hi)} "
                   f"({'; '.join(pair for _, pair, _ in noisy)}; the largest gap at either end "
                   f"{pp(max(swing for _, _, swing in noisy))}): within noise, so no crossing is named.")
    return out


def _family(model: str) -> str | None:
    name = model.lower()
    if any(w in name for w in CNN_WORDS):
        return "CNN"
    if any(w in name for w in VIT_WORDS):
        return "ViT"
    return None


CHANCE_MARGIN = 0.01  # an arm within 1 pp of chance has learned nothing to compare


def _claim(claim: str, verdict: str, evidence: str, seeds: int = 2, at_chance: bool = False) -> dict[str, str]:
    if at_chance:  # differences between arms that learned nothing are noise, whatever their sign
        verdict = "not testable here (an arm it compares stayed within 1 pp of chance)"
    elif seeds < 2:  # a margin over a zero spread is no evidence of a real difference
        verdict += " on one seed, so tentative"
    return {"claim": claim, "verdict": verdict, "evidence": evidence[:1].upper() + evidence[1:]}


def _near_chance(values: list[float], chance: float | None) -> bool:
    return chance is not None and max(values) <= chance + CHANCE_MARGIN


def _seeds(exp: Experiment) -> int:
    return min((len(p.values) for line in exp.lines for p in line.points), default=0)


def _part(text: str, g: Gap, status: str | None = None) -> tuple[str, str]:
    """(evidence, status) of one part of a claim."""
    status = status or g.status()
    return f"{text}{_with_band(g)}: {status}", status


def quality_claim(exp: Experiment, chance: float | None = None) -> dict[str, str] | None:
    """Paper: at a fixed budget a smaller, better slice (top 40%) beats the full pool; the best
    slice grows with the budget. Parts: at the smallest budget the best smaller slice leads
    the full pool; at the largest, a slice larger than that one leads it."""
    tops = {line.points[0].fraction: line for line in exp.lines if line.points and line.points[0].fraction is not None}
    if len(tops) < 2 or 1.0 not in tops:
        return None
    at = {b: {f: line.at(b) for f, line in tops.items() if line.at(b)} for b in exp.budgets}
    best_fracs = [max(pts, key=lambda f: pts[f].mean) for pts in at.values()]
    lo, hi = exp.budgets[0], exp.budgets[-1]
    parts = []
    small = at[lo]
    first = max((f for f in small if f < 1.0), key=lambda f: small[f].mean, default=None)
    if first is not None and 1.0 in small:
        g = gap(small[first], small[1.0])
        parts.append(_part(f"at {fmt_budget(exp, lo)} top {first:.0%} {'leads' if g.margin >= 0 else 'trails'} "
                           f"the full pool by {pp(abs(g.margin))}", g))
    if len(exp.budgets) > 1 and first is not None and first in at[hi]:
        large = at[hi]
        grown = max((f for f in large if f > first), key=lambda f: large[f].mean, default=None)
        if grown is not None:
            g = gap(large[grown], large[first])
            parts.append(_part(f"at {fmt_budget(exp, hi)} the best larger slice, top {grown:.0%}, "
                               f"{'leads' if g.margin >= 0 else 'trails'} top {first:.0%} by {pp(abs(g.margin))}", g))
    if not parts:
        return None
    grows = all(a <= b for a, b in zip(best_fracs, best_fracs[1:])) and best_fracs[0] < best_fracs[-1]
    trend = (f"by the means, the best slice grows with the budget ({' -> '.join(f'{f:.0%}' for f in best_fracs)})"
             if grows else f"best slice by budget (means): {', '.join(f'{f:.0%}' for f in best_fracs)}")
    means = [p.mean for line in tops.values() for p in line.points]
    return _claim("A smaller high-quality slice beats the full pool at a fixed budget (top 40% best; "
                  "larger budgets favour larger slices)", combine([s for _, s in parts]),
                  "; ".join(text for text, _ in parts) + "; " + trend + ".", _seeds(exp), _near_chance(means, chance))


def architecture_claim(exp: Experiment, chance: float | None = None) -> dict[str, str] | None:
    """Paper: CNNs win at small sample counts, ViTs at large. Parts: the best CNN leads the
    best ViT at the smallest budget, and trails it at the largest."""
    families: dict[str, list[Line]] = {}
    for line in exp.lines:
        fam = _family(str(line.key.get("cfg_model", line.label)))
        if fam:
            families.setdefault(fam, []).append(line)
    if set(families) != {"CNN", "ViT"} or len(exp.budgets) < 2:
        return None
    gaps = []
    for budget in exp.budgets:
        best = {fam: max((l.at(budget) for l in lines if l.at(budget)), key=lambda p: p.mean) for fam, lines in families.items()}
        gaps.append((budget, gap(best["CNN"], best["ViT"])))
    (_, g_lo), (_, g_hi) = gaps[0], gaps[-1]
    statuses = [g_lo.status(), Gap(-g_hi.margin, -g_hi.high, -g_hi.low, g_hi.measured).status()]
    evidence = "; ".join(f"at {fmt_budget(exp, b)} the best CNN {'leads' if g.margin >= 0 else 'trails'} the best ViT "
                         f"by {pp(abs(g.margin))}{_with_band(g)}" for b, g in gaps)
    evidence += f" (CNN ahead at the smallest budget: {statuses[0]}; ViT ahead at the largest: {statuses[1]})"
    # Untestable when one family never leaves chance: a lead over an arm that learned nothing is no crossover.
    idle = [fam for fam, lines in families.items()
            if _near_chance([p.mean for line in lines for p in line.points], chance)]
    if idle:
        evidence += f"; the best {' and '.join(idle)} stayed within 1 pp of chance at every budget"
    return _claim("CNNs win at small budgets, ViTs at large ones", combine(statuses), evidence + ".", _seeds(exp),
                  bool(idle))


def strategy_claim(exp: Experiment, chance: float | None = None) -> dict[str, str] | None:
    """Paper: the best training strategy depends on the budget. Parts: the smallest budget's
    leader leads the largest budget's leader there, and trails it at the largest. One
    strategy leading at both ends, beyond the noise each time, is the claim failing."""
    if "strategy_label" not in exp.varies or len(exp.budgets) < 2:
        return None
    bests = [best_at(exp, b) for b in exp.budgets]
    first, last = bests[0], bests[-1]
    other_lo, other_hi = last.best.at(first.budget), first.best.at(last.budget)
    if first.best is not last.best and other_lo and other_hi:
        g_lo, g_hi = gap(first.point, other_lo), gap(last.point, other_hi)
        statuses = [g_lo.status(), g_hi.status()]
        parts = (f"{first.best.label} leads {last.best.label} at {fmt_budget(exp, first.budget)} by "
                 f"{pp(g_lo.margin)}{_with_band(g_lo)} and trails it at {fmt_budget(exp, last.budget)} by "
                 f"{pp(g_hi.margin)}{_with_band(g_hi)}")
    else:
        statuses = [FAILS if first.clear and last.clear else NOISE]
        parts = f"{first.best.label} leads at both ends ({'beyond' if statuses[0] == FAILS else 'within'} the noise)"
    evidence = "; ".join(f"at {fmt_budget(exp, b.budget)} {b.best.label} leads {b.runner.label} by {pp(b.margin)}"
                         + _with_band(b.lead) for b in bests if b.runner_point)
    # A leader within 1 pp of chance at some budget: that budget's ranking is noise.
    idle = any(_near_chance([b.point.mean], chance) for b in bests)
    return _claim("The best strategy (CLIP, FLIP, SLIP, CLIP + augmentation) depends on the budget", combine(statuses),
                  f"{parts}; {evidence}.", _seeds(exp), idle)


def half_data_claim(rows: list[dict[str, Any]], chance: float | None = None,
                    metric: str = PLAIN_METRIC) -> dict[str, str] | None:
    """Paper: CLIP + augmentation on half the data matches CLIP on all of it. Each budget is a
    part: it holds when the half arm's band reaches no lower than MATCH_MARGIN below the full
    arm's (so noisier seeds make a match harder), fails when even the bands' best case is
    further below."""
    ok = [r for r in rows if r["status"] == "ok" and r.get(metric) is not None]
    half = [r for r in ok if r["cfg_strategy"] == AUGMENTED_ARM and r["slice_kind"] == "random" and r["sample_size"] == 0.5]
    parts, statuses, seeds = [], [], 2
    for budget in sorted({r["budget_value"] for r in half}):
        h = [r for r in half if r["budget_value"] == budget]
        full = [r for r in ok if r["cfg_strategy"] == PLAIN_ARM and r["slice_kind"] == "top" and r["budget_value"] == budget
                and r["slice_fraction"] == h[0]["slice_fraction"] and r["cfg_model"] == h[0]["cfg_model"]]
        if not full:
            continue
        hp, fp = point_of(budget, h, metric), point_of(budget, full, metric)
        seeds = min(seeds, len(hp.values), len(fp.values))
        g = gap(hp, fp)
        # Judged per budget: matching an arm that learned nothing is no evidence, whatever the other budgets show.
        idle = _near_chance([hp.mean, fp.mean], chance)
        text = (f"at {budget:.3g} {'FLOPs' if h[0]['budget_kind'] == 'flops' else 'samples'} clip-aug on half of top "
                f"{h[0]['slice_fraction']:.0%} is {'+' if g.margin >= 0 else '-'}{pp(abs(g.margin))} against clip on "
                f"all of it ({hp.mean:.1%} vs {fp.mean:.1%}" + (f", seed spread {pp(max(hp.spread, fp.spread))})"
                                                                 if seeds > 1 else ")"))
        if idle:
            parts.append(text + " - both within 1 pp of chance, not judged")
            continue
        status = (NOISE if not g.measured else HOLDS if g.low >= -MATCH_MARGIN - EPS
                  else FAILS if g.high < -MATCH_MARGIN - EPS else NOISE)
        statuses.append(status)
        parts.append(text + f"{'; ' + g.band() if g.measured else ''}: {status}")
    if not parts:
        return None
    return _claim(f"CLIP + augmentation on half the data matches CLIP on all of it (within {pp(MATCH_MARGIN)})",
                  combine(statuses), "; ".join(parts) + ".", seeds, not statuses)


def paper_claims(experiments: list[Experiment], rows: list[dict[str, Any]],
                 chance: float | None = None, metric: str = PLAIN_METRIC) -> list[dict[str, str]]:
    """Each Scaling (Down) CLIP finding the sweep can test, with its verdict and evidence;
    with `chance` (the metric's figure for guessing), a comparison of arms that stayed within
    1 pp of it is reported as not testable rather than judged."""
    claims = []
    for exp in experiments:
        if exp.varies == ["slice"]:
            claims.append(quality_claim(exp, chance))
        elif exp.varies == ["cfg_model"]:
            claims.append(architecture_claim(exp, chance))
        elif "strategy_label" in exp.varies:
            claims.append(strategy_claim(exp, chance))
    claims.append(half_data_claim(rows, chance, metric))
    return [c for c in claims if c]
