"""How well a scores tag separates good captions from bad ones, against the demo's truth.parquet."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from shards.layout import Pool

GOOD_KINDS = ("clean",)
BAD_KINDS = ("mismatched", "generic")


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties count half):
    the Mann-Whitney U of the positives over the number of pairs."""
    from scipy.stats import mannwhitneyu

    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    u = mannwhitneyu(positive, negative, method="asymptotic").statistic
    return float(u / (len(positive) * len(negative)))


def score_quality(pool: str | Path, tag: str, truth: str | Path) -> dict[str, Any]:
    """ROC AUC of clip_score for clean pairs vs mismatched/generic captions, with the counts used.

    Returns {"auc", "good", "bad", "mean_score_by_kind"}; samples whose clip_score is null
    (undecodable images) are left out.
    """
    kinds = dict(zip(*pq.read_table(truth, columns=["uid", "kind"]).to_pydict().values()))
    scores: dict[str, float] = {}
    for path in sorted(Pool(pool).scores_dir(tag).glob("*.parquet")):
        table = pq.read_table(path, columns=["uid", "clip_score"]).to_pydict()
        scores.update((u, s) for u, s in zip(table["uid"], table["clip_score"]) if s is not None)
    good = np.array([s for u, s in scores.items() if kinds.get(u) in GOOD_KINDS])
    bad = np.array([s for u, s in scores.items() if kinds.get(u) in BAD_KINDS])
    by_kind = {}
    for kind in sorted({k for k in kinds.values()}):
        values = [s for u, s in scores.items() if kinds.get(u) == kind]
        if values:
            by_kind[kind] = round(float(np.mean(values)), 4)
    return {"auc": roc_auc(good, bad), "good": len(good), "bad": len(bad), "mean_score_by_kind": by_kind}
