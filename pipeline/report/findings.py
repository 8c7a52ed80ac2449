"""Findings as sentences computed from the results, each with its margin and seed spread:
the best arm at each budget, where fitted lines cross, and for each finding of Scaling (Down)
CLIP (Li, Xie, Cubuk 2024) whether it reproduced here and by how much."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.report.data import Experiment, Line, Point, fmt_budget, pp
from pipeline.report.fit import Fit, crossing

CNN_WORDS = ("resnet", "convnext", "lite0")
VIT_WORDS = ("vit", "eva")
# The two arms the paper's half-data claim compares, as the sweep names their strategies.
AUGMENTED_ARM, PLAIN_ARM = "clip-aug", "clip"


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
    def clear(self) -> bool:
        """The lead is larger than either arm's seed spread (never with one seed: no spread to judge by)."""
        return (self.runner_point is not None and len(self.point.values) > 1
                and self.margin > max(self.point.spread, self.runner_point.spread))


def best_at(exp: Experiment, budget: float) -> Best | None:
    ranked = sorted(((line, line.at(budget)) for line in exp.lines if line.at(budget)), key=lambda t: -t[1].mean)
    if not ranked:
        return None
    runner = ranked[1] if len(ranked) > 1 else (None, None)
    return Best(budget, ranked[0][0], ranked[0][1], runner[0], runner[1])


def seeds_text(p: Point) -> str:
    return f"seeds {min(p.values):.1%}-{max(p.values):.1%}" if len(p.values) > 1 else "one seed"


def best_sentence(exp: Experiment, b: Best) -> str:
    head = f"At {fmt_budget(exp, b.budget)}, {b.best.label} is best with {b.point.mean:.1%} top-1 ({seeds_text(b.point)})"
    if b.runner is None:
        return head + "."
    verdict = ("one seed, so no spread to judge the lead by" if len(b.point.values) < 2
               else "a lead larger than the seed spread" if b.clear else "within the seed spread, so not a clear win")
    runner = (f"{b.runner_point.mean:.1%}" if len(b.runner_point.values) < 2  # one seed: no spread to show
              else f"{b.runner_point.mean:.1%}, spread {pp(b.runner_point.spread)}")
    return f"{head}, {pp(b.margin)} ahead of {b.runner.label} ({runner}): {verdict}."


def crossings(exp: Experiment, fits: dict[str, Fit | None]) -> list[str]:
    """Pairs of lines whose order flips between the smallest and the largest budget, with the
    budget where their fitted curves cross (or, unfitted, between which budgets they swap)."""
    if len(exp.budgets) < 2:
        return []
    lo, hi = exp.budgets[0], exp.budgets[-1]
    out = []
    for i, l1 in enumerate(exp.lines):
        for l2 in exp.lines[i + 1:]:
            a, b, c, d = l1.at(lo), l2.at(lo), l1.at(hi), l2.at(hi)
            if not all((a, b, c, d)) or (a.mean - b.mean) * (c.mean - d.mean) >= 0:
                continue
            first, second = (l1, l2) if a.mean > b.mean else (l2, l1)
            f1, f2 = fits.get(l1.label), fits.get(l2.label)
            where = None
            if f1 and f2:
                where = crossing(f1, f2, min(a.x_flops, b.x_flops), max(c.x_flops, d.x_flops))
            at = (f"their fitted curves cross at {where:.3g} FLOPs" if where
                  else f"they swap between {fmt_budget(exp, lo)} and {fmt_budget(exp, hi)}")
            out.append(f"{first.label} leads {second.label} at {fmt_budget(exp, lo)} by "
                       f"{pp(abs(a.mean - b.mean))} and trails it at {fmt_budget(exp, hi)} by "
                       f"{pp(abs(c.mean - d.mean))}; {at}.")
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


def _spread(spread: float, seeds: int, word: str = "seed spread") -> str:
    """' (seed spread X pp)', or nothing with one seed (no spread exists)."""
    return f" ({word} {pp(spread)})" if seeds > 1 else ""


def _near_chance(values: list[float], chance: float | None) -> bool:
    return chance is not None and max(values) <= chance + CHANCE_MARGIN


def _seeds(exp: Experiment) -> int:
    return min((len(p.values) for line in exp.lines for p in line.points), default=0)


def quality_claim(exp: Experiment, chance: float | None = None) -> dict[str, str] | None:
    """Paper: at a fixed budget a smaller, better slice (top 40%) beats the full pool; the best
    slice grows with the budget."""
    tops = {line.points[0].fraction: line for line in exp.lines if line.points and line.points[0].fraction is not None}
    if len(tops) < 2 or 1.0 not in tops:
        return None
    parts, wins, clear = [], 0, 0
    best_fracs = []
    for budget in exp.budgets:
        pts = {f: line.at(budget) for f, line in tops.items() if line.at(budget)}
        frac = max(pts, key=lambda f: pts[f].mean)
        best_fracs.append(frac)
        if frac < 1.0 and 1.0 in pts:
            margin = pts[frac].mean - pts[1.0].mean
            spread = max(pts[frac].spread, pts[1.0].spread)
            wins += 1
            clear += margin > spread  # with one seed the spread is 0: _claim marks the verdict tentative
            parts.append(f"at {fmt_budget(exp, budget)} top {frac:.0%} beats the full pool by {pp(margin)}"
                         + _spread(spread, _seeds(exp)))
        else:
            parts.append(f"at {fmt_budget(exp, budget)} the full pool is best ({pts[1.0].mean:.1%})")
    grows = all(a <= b for a, b in zip(best_fracs, best_fracs[1:])) and best_fracs[0] < best_fracs[-1]
    verdict = "reproduced" if clear else ("partly (within seed spread)" if wins else "not reproduced")
    tail = (f"; the best slice grows with the budget ({' -> '.join(f'{f:.0%}' for f in best_fracs)})" if grows
            else f"; best slice by budget: {', '.join(f'{f:.0%}' for f in best_fracs)}")
    means = [p.mean for line in tops.values() for p in line.points]
    return _claim("A smaller high-quality slice beats the full pool at a fixed budget (top 40% best; "
                  "larger budgets favour larger slices)", verdict, "; ".join(parts) + tail + ".", _seeds(exp),
                  _near_chance(means, chance))


def architecture_claim(exp: Experiment, chance: float | None = None) -> dict[str, str] | None:
    """Paper: CNNs win at small sample counts, ViTs at large."""
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
        spread = max(best["CNN"].spread, best["ViT"].spread)
        gaps.append((budget, best["CNN"].mean - best["ViT"].mean, spread))
    (lo, g_lo, s_lo), (hi, g_hi, s_hi) = gaps[0], gaps[-1]
    if g_lo > s_lo and -g_hi > s_hi:
        verdict = "reproduced"
    elif g_lo > g_hi:
        verdict = "partly (the CNN lead shrinks as the budget grows)"
    else:
        verdict = "not reproduced"
    evidence = "; ".join(f"at {fmt_budget(exp, b)} the best CNN {'leads' if g >= 0 else 'trails'} the best ViT by "
                         f"{pp(abs(g))}" + _spread(s, _seeds(exp)) for b, g, s in gaps)
    # Untestable when one family never leaves chance: a lead over an arm that learned nothing is no crossover.
    idle = [fam for fam, lines in families.items()
            if _near_chance([p.mean for line in lines for p in line.points], chance)]
    if idle:
        evidence += f"; the best {' and '.join(idle)} stayed within 1 pp of chance at every budget"
    return _claim("CNNs win at small budgets, ViTs at large ones", verdict, evidence + ".", _seeds(exp), bool(idle))


def strategy_claim(exp: Experiment, chance: float | None = None) -> dict[str, str] | None:
    """Paper: the best training strategy depends on the budget."""
    if "strategy_label" not in exp.varies or len(exp.budgets) < 2:
        return None
    bests = [best_at(exp, b) for b in exp.budgets]
    names = [b.best.label for b in bests]
    changes = len(set(names)) > 1
    clear = all(b.runner_point and b.margin > max(b.point.spread, b.runner_point.spread) for b in bests)
    verdict = ("reproduced" if changes and clear else "partly (the leader changes within the seed spread)" if changes
               else "not reproduced (one strategy leads at every budget)")
    evidence = "; ".join(f"at {fmt_budget(exp, b.budget)} {b.best.label} leads by {pp(b.margin)}"
                         + _spread(max(b.point.spread, b.runner_point.spread), _seeds(exp), "spread")
                         for b in bests if b.runner_point)
    # A leader within 1 pp of chance at some budget: that budget's ranking is noise.
    idle = any(_near_chance([b.point.mean], chance) for b in bests)
    return _claim("The best strategy (CLIP, FLIP, SLIP, CLIP + augmentation) depends on the budget", verdict,
                  evidence + ".", _seeds(exp), idle)


def half_data_claim(rows: list[dict[str, Any]], chance: float | None = None) -> dict[str, str] | None:
    """Paper: CLIP + augmentation on half the data matches CLIP on all of it."""
    from statistics import fmean

    ok = [r for r in rows if r["status"] == "ok" and r.get("zeroshot_top1") is not None]
    half = [r for r in ok if r["cfg_strategy"] == AUGMENTED_ARM and r["slice_kind"] == "random" and r["sample_size"] == 0.5]
    parts, verdicts, seeds = [], [], 2
    for budget in sorted({r["budget_value"] for r in half}):
        h = [r for r in half if r["budget_value"] == budget]
        full = [r for r in ok if r["cfg_strategy"] == PLAIN_ARM and r["slice_kind"] == "top" and r["budget_value"] == budget
                and r["slice_fraction"] == h[0]["slice_fraction"] and r["cfg_model"] == h[0]["cfg_model"]]
        if not full:
            continue
        hv, fv = [r["zeroshot_top1"] for r in h], [r["zeroshot_top1"] for r in full]
        seeds = min(seeds, len(hv), len(fv))
        diff, spread = fmean(hv) - fmean(fv), max(max(hv) - min(hv), max(fv) - min(fv))
        # Judged per budget: matching an arm that learned nothing is no evidence, whatever the other budgets show.
        idle = _near_chance([fmean(hv), fmean(fv)], chance)
        if not idle:
            verdicts.append("match" if abs(diff) <= spread else "beat" if diff > 0 else "miss")
        parts.append(f"at {budget:.3g} {'FLOPs' if h[0]['budget_kind'] == 'flops' else 'samples'} clip-aug on half of top {h[0]['slice_fraction']:.0%} is "
                     f"{'+' if diff >= 0 else '-'}{pp(abs(diff))} against clip on all of it "
                     f"({fmean(hv):.1%} vs {fmean(fv):.1%}" + (f", seed spread {pp(spread)})" if seeds > 1 else ")")
                     + (" - both within 1 pp of chance, not judged" if idle else ""))
    if not parts:
        return None
    verdict = ("reproduced" if all(v in ("match", "beat") for v in verdicts)
               else "partly" if any(v in ("match", "beat") for v in verdicts) else "not reproduced")
    return _claim("CLIP + augmentation on half the data matches CLIP on all of it", verdict, "; ".join(parts) + ".", seeds,
                  not verdicts)


def paper_claims(experiments: list[Experiment], rows: list[dict[str, Any]],
                 chance: float | None = None) -> list[dict[str, str]]:
    """Each Scaling (Down) CLIP finding the sweep can test, with its verdict and evidence;
    with `chance` (zero-shot top-1 of guessing), a comparison of arms that stayed within
    1 pp of it is reported as not testable rather than as (not) reproduced."""
    claims = []
    for exp in experiments:
        if exp.varies == ["slice"]:
            claims.append(quality_claim(exp, chance))
        elif exp.varies == ["cfg_model"]:
            claims.append(architecture_claim(exp, chance))
        elif "strategy_label" in exp.varies:
            claims.append(strategy_claim(exp, chance))
    claims.append(half_data_claim(rows, chance))
    return [c for c in claims if c]
