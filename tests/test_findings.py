"""Known answers for the report's verdicts, on results tables built directly (no training):
pure noise, where every arm is drawn from one distribution and nothing may be claimed, and
planted effects (a clear gap, a clear crossing) that must be found. Each cell carries the
suite's average with a bootstrap interval as a sweep writes it (suite_average, _lo, _hi)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.report import datacomp
from pipeline.report.data import group, resolve_metric
from pipeline.report.findings import best_at, best_sentence, crossings, half_data_claim, paper_claims

BUDGETS = (1e12, 3e12, 1e13)
SEEDS = (0, 1, 2)
HALF_WIDTH = 0.009  # the demo suite's average: about +-0.9 pp on the quickstart's runs
CHANCE = 0.05
CLAIMED = ("reproduced", "partly", "not reproduced")

# The arms of each experiment (the half-data claim compares "half" with "clip", same model), as (experiment, slice label, kind, fraction, model, strategy, sample size).
ARMS = {
    "slice-20": ("quality", "top 20%", "top", 0.2, "tiny-resnet-64", "clip", None),
    "slice-40": ("quality", "top 40%", "top", 0.4, "tiny-resnet-64", "clip", None),
    "slice-100": ("quality", "top 100%", "top", 1.0, "tiny-resnet-64", "clip", None),
    "cnn": ("architecture", "top 40%", "top", 0.4, "tiny-convnext-32", "clip", None),
    "vit": ("architecture", "top 40%", "top", 0.4, "tiny-vit-32", "clip", None),
    "clip": ("strategy", "top 40%", "top", 0.4, "tiny-resnet-32", "clip", None),
    "flip": ("strategy", "top 40%", "top", 0.4, "tiny-resnet-32", "flip", None),
    "half": ("half", "random 50% of top 40%", "random", 0.4, "tiny-resnet-32", "clip-aug", 0.5),
}


def table(value, half_width=HALF_WIDTH, seeds=SEEDS):
    """(rows, meta): every arm at every budget and seed, its figure value(arm, budget, seed)."""
    rows, experiments = [], {}
    for arm, (exp, label, kind, fraction, model, strategy, size) in ARMS.items():
        for budget in BUDGETS:
            for seed in seeds:
                v = value(arm, budget, seed)
                cell = f"{arm}-{budget:g}-{seed}"
                rows.append({"cell": cell, "experiment": exp, "status": "ok", "error": None, "run_dir": f"/r/{cell}",
                             "slice": label, "slice_kind": kind, "slice_fraction": fraction, "sample_size": size,
                             "strategy_label": strategy, "budget_kind": "flops", "budget_value": budget,
                             "cfg_model": model, "cfg_seed": seed, "cfg_strategy": strategy, "flops": budget,
                             "samples_seen": budget / 1e8, "epochs": 1.0, "zeroshot_top1": None, "wall_s": 1.0,
                             "suite_average": v, "suite_average_lo": v - half_width, "suite_average_hi": v + half_width,
                             "suite_average_chance": CHANCE})
                experiments.setdefault(exp, []).append(cell)
    return rows, {"name": "known", "experiments": experiments}


def findings(rows, meta):
    """(claims by experiment word, best sentences, crossing sentences) on the default metric."""
    metric = resolve_metric(rows, None)
    assert metric == "suite_average"  # the suite's average is the default where cells have it
    experiments = group(rows, meta, metric)
    claims = paper_claims(experiments, rows, CHANCE, metric)
    best = [best_sentence(exp, b) for exp in experiments for b in (best_at(exp, x) for x in exp.budgets) if b]
    crossed = [s for exp in experiments for s in crossings(exp, {})]
    return {c["claim"].split()[0]: c for c in claims}, best, crossed


def test_pure_noise_claims_nothing():
    """Every arm drawn from one distribution (mean 30%, seed sd 1 pp, each seed's interval
    +-0.9 pp), in 25 independent sweeps: no verdict, no clear lead and no crossing."""
    swaps = 0
    for draw in range(25):
        rng = np.random.default_rng(draw)
        noise = {(arm, b, s): 0.30 + rng.normal(0, 0.01) for arm in ARMS for b in BUDGETS for s in SEEDS}
        claims, best, crossed = findings(*table(lambda arm, b, s: noise[(arm, b, s)]))
        assert len(claims) == 4
        for claim in claims.values():
            assert claim["verdict"] == "within noise", (draw, claim)
        assert best and not any("beyond the noise" in s for s in best), (draw, best)
        assert all(s.endswith("within noise, so no crossing is named.") for s in crossed), (draw, crossed)
        swaps += bool(crossed)
    assert swaps > 10  # the means swapped order in most sweeps: the rule had crossings to refuse


def test_planted_gap_and_crossing_are_found():
    """Planted: top 40% leads the full pool by 6 pp at the smallest budget and trails it by
    6 pp at the largest (top 20% lags both); the CNN leads the ViT by 6 pp, then trails it;
    FLIP leads CLIP, then trails it; clip-aug on half sits 0.1 pp under CLIP on all.
    Seed sd 0.3 pp, intervals +-0.9 pp: the three claims reproduced, the crossings named."""
    rng = np.random.default_rng(0)
    lo, hi = BUDGETS[0], BUDGETS[-1]
    swing = {lo: 0.03, BUDGETS[1]: 0.01, hi: -0.03}  # the first arm of each pair: +3 pp, then -3 pp
    base = {"slice-20": -0.1, "slice-40": 0.0, "slice-100": 0.0, "cnn": 0.0, "vit": 0.0, "clip": 0.0, "flip": 0.0}

    def value(arm, b, s):
        if arm == "half":  # matches clip on all of top 40% (the strategy experiment's clip arm)
            return 0.30 - swing[b] - 0.001 + rng.normal(0, 0.0003)
        sign = 1 if arm in ("slice-40", "cnn", "flip") else -1
        return 0.30 + base[arm] + (sign * swing[b] if arm != "slice-20" else 0) + rng.normal(0, 0.003)

    rows, meta = table(value)
    claims, best, crossed = findings(rows, meta)
    assert claims["A"]["verdict"] == "reproduced", claims["A"]  # the quality claim
    assert "the best slice grows with the budget (40% -> 40% -> 100%)" in claims["A"]["evidence"]
    assert claims["CNNs"]["verdict"] == "reproduced", claims["CNNs"]
    assert claims["The"]["verdict"] == "reproduced", claims["The"]  # strategy
    # A match within 0.5 pp cannot be shown through intervals of +-0.9 pp, however close the
    # means: the planted match is found with tighter intervals (the next tests).
    half = half_data_claim(rows, CHANCE, "suite_average")
    assert half["verdict"] == "within noise" and "-0.1 pp against clip on all of it" in half["evidence"], half
    named = [s for s in crossed if "no crossing" not in s]
    assert len(named) == 3 and any(s.startswith("top 40% leads top 100%") for s in named)
    assert any(s.startswith("convnext-32 leads vit-32") for s in named) and any(s.startswith("flip leads clip") for s in named)
    assert all("they swap between" in s for s in named)  # no fits handed in: the budgets it swaps between
    assert any("beyond the noise" in s for s in best)


def test_a_gap_at_one_budget_is_not_the_whole_claim():
    """Planted: top 40% leads the full pool by 6 pp at every budget. The slice part holds,
    but the best slice never grows, so the quality claim is "partly", not "reproduced" (the
    old rule called it reproduced as soon as one budget showed a smaller slice ahead). No
    crossing; the lead is beyond the noise at every budget."""
    rng = np.random.default_rng(1)
    rows, meta = table(lambda arm, b, s: 0.30 + (0.06 if arm == "slice-40" else 0.0) + rng.normal(0, 0.003))
    claims, best, crossed = findings(rows, meta)
    assert claims["A"]["verdict"] == "partly", claims["A"]
    assert "top 40% leads the full pool by" in claims["A"]["evidence"]
    assert not [s for s in crossed if "slice" in s or "top" in s]
    quality = [s for s in best if "top 40% is best" in s]
    assert len(quality) == len(BUDGETS) and all("beyond the noise" in s for s in quality)


def test_noisier_seeds_never_make_the_half_data_match_easier():
    """Half-data known answer: clip-aug on half sits 0.1 pp under CLIP on all of it, or 1.5 pp
    under. Tight seeds (sd 0.05 pp, intervals +-0.1 pp): 0.1 pp under matches, 1.5 pp under
    misses. The same means with noisy seeds (sd 2 pp): no budget is judged a match (the old
    rule, |gap| <= seed spread, called both of them matches)."""
    def rows_for(gap, sd, half_width):
        rng = np.random.default_rng(7)
        offsets = {(arm, b, s): rng.normal(0, sd) for arm in ("half", "clip") for b in BUDGETS for s in SEEDS}

        def value(arm, b, s):
            if arm in ("half", "clip"):
                return 0.30 - (gap if arm == "half" else 0.0) + offsets[(arm, b, s)]
            return 0.30

        return table(value, half_width)[0]

    assert half_data_claim(rows_for(0.001, 0.0005, 0.001), CHANCE, "suite_average")["verdict"] == "reproduced"
    assert half_data_claim(rows_for(0.015, 0.0005, 0.001), CHANCE, "suite_average")["verdict"] == "not reproduced"
    for gap in (0.001, 0.015):
        noisy = half_data_claim(rows_for(gap, 0.02, 0.001), CHANCE, "suite_average")
        assert noisy["verdict"] in ("within noise", "not reproduced") and ": holds" not in noisy["evidence"], noisy
        assert "seed spread" in noisy["evidence"] and "difference" in noisy["evidence"]  # the margin and its band


@pytest.mark.parametrize("name, column", [(None, "suite_average"), ("zeroshot_top1", "zeroshot_top1"),
                                          ("shapes", "suite_shapes"), ("suite_shapes", "suite_shapes")])
def test_the_metric_is_the_suite_average_by_default_and_any_column_or_task_by_name(name, column):
    rows, _ = table(lambda arm, b, s: 0.3)
    rows = [{**r, "zeroshot_top1": 0.1, "suite_shapes": 0.2} for r in rows]
    assert resolve_metric(rows, name) == column


def test_an_unknown_metric_is_one_line_naming_the_choices():
    from clikit.errors import UserError

    rows, _ = table(lambda arm, b, s: 0.3)
    rows = [{**r, "suite_shapes": 0.2, "suite_shapes_lo": 0.1, "suite_shapes_hi": 0.3} for r in rows]
    with pytest.raises(UserError, match=r"--metric nope: no cell has that figure; use one of average, shapes"):
        resolve_metric(rows, "nope")
    plain = [{k: v for k, v in r.items() if not k.startswith("suite_")} | {"zeroshot_top1": 0.1} for r in rows]
    assert resolve_metric(plain, None) == "zeroshot_top1"  # a sweep without a suite: the old figure


RECIPE_ARMS = {  # method: (slice label, kind, fraction, recipe, params, slice size)
    "no filter": ("top 100%", "top", 1.0, None, None, 1000),
    "clip_top": ("clip_top", "recipe", None, "clip_top", {}, 300),
    "basic": ("basic", "recipe", None, "basic", {}, 900),
    "image_based ∩ clip score": ("image_based(fraction=0.3)", "recipe", None, "image_based", {"fraction": 0.3}, 90),
}


def recipe_table(value, half_width=HALF_WIDTH):
    rows, cells = [], []
    for method, (label, kind, fraction, recipe, params, size) in RECIPE_ARMS.items():
        for budget in BUDGETS[:2]:
            for seed in SEEDS:
                v = value(method, budget, seed)
                cell = f"{label}-{budget:g}-{seed}"
                rows.append({"cell": cell, "experiment": "baselines", "status": "ok", "error": None,
                             "slice": label, "slice_kind": kind, "slice_fraction": fraction, "slice_recipe": recipe,
                             "slice_params": None if params is None else json.dumps(params), "slice_size": size,
                             "sample_size": None, "strategy_label": "clip", "budget_kind": "flops",
                             "budget_value": budget, "cfg_model": "tiny-resnet-32", "cfg_seed": seed, "flops": budget,
                             "samples_seen": budget / 1e8, "epochs": 1.0, "zeroshot_top1": v / 2, "wall_s": 1.0,
                             "suite_average": v, "suite_average_lo": v - half_width,
                             "suite_average_hi": v + half_width, "suite_digits": v + 0.1})
                cells.append(cell)
    return rows, {"name": "baselines", "experiments": {"baselines": cells}}


def datacomp_verdicts(rows, meta):
    [exp] = group(rows, meta, resolve_metric(rows, None))
    assert datacomp.has_recipe_arms(exp)
    return {o.claim.split()[0]: o.verdict for o in datacomp.orderings(exp)}, datacomp.tables(exp, rows)


def test_datacomp_orderings_find_a_planted_order_and_claim_nothing_on_noise():
    """Planted: CLIP score 10 pp over no filter (held), image-based ∩ CLIP score 8 pp under
    CLIP score (did not hold), basic level with no filter (within noise); on pure noise
    every ordering is within noise. The table's kept shares are of the no-filter arm."""
    rng = np.random.default_rng(0)
    planted = {"no filter": 0.20, "clip_top": 0.30, "basic": 0.20, "image_based ∩ clip score": 0.22}
    verdicts, tables = datacomp_verdicts(*recipe_table(lambda m, b, s: planted[m] + rng.normal(0, 0.003)))
    assert verdicts == {"CLIP": "held", "image-based": "did not hold", "basic": "within noise"}
    budget, table = tables[0]
    assert table[0][:5] == ["method", "kept", "suite average (mean)", "band", "eval top-1"] and table[0][5:] == ["digits"]
    rows = {r[0]: r for r in table[1:]}
    assert table[1][0] == "clip_top" and rows["no filter"][1] == "100%" and rows["clip_top"][1] == "30%"
    assert rows["image_based ∩ clip score"][1] == "9%"
    for seed in range(20):
        noise = np.random.default_rng(seed)
        verdicts, _ = datacomp_verdicts(*recipe_table(lambda m, b, s: 0.2 + noise.normal(0, 0.01)))
        assert set(verdicts.values()) == {"within noise"}, (seed, verdicts)
