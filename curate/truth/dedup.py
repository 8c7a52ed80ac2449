"""Quality of a dedup run on a pool with known duplicates (the demo pool's truth.parquet)."""
from __future__ import annotations

import json
from dataclasses import replace
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from curate.dedup.methods import METHOD_ORDER, measured_threshold
from curate.dedup.run import find_groups
from curate.dedup.scored_pool import check_embeddings, open_scored_pool, read_score_columns
from curate.dedup.settings import DedupSettings
from shards.layout import Pool

NEAR_KIND = "dup-near"
COPY_KINDS = ("dup-exact", "dup-near")


def _pairs(groups: dict[Any, list[str]]) -> set[tuple[str, str]]:
    return {tuple(sorted(p)) for members in groups.values() for p in combinations(members, 2)}


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def pair_quality(groups_parquet: str | Path, truth_parquet: str | Path) -> dict[str, Any]:
    """pair_quality_of_rows for a finished run's groups.parquet (scores read from its pool)."""
    import pyarrow.parquet as pq

    groups = pq.read_table(groups_parquet, columns=["uid", "group_id", "keep", "method"]).to_pylist()
    return pair_quality_of_rows(groups, truth_parquet, _scores_of_run(Path(groups_parquet)))


def pair_quality_of_rows(groups: list[dict[str, Any]], truth_parquet: str | Path,
                         scores: dict[str, float] | None = None) -> dict[str, Any]:
    """Precision and recall of found duplicate pairs against truth's dup_group.

    `groups` are groups.parquet's rows (uid, group_id, keep, method); `scores` is clip_score
    by uid when known. Only samples present in the groups (scored ones) are judged. A truth pair is
    "near" when either member is a dup-near copy, else "exact" (original and byte copies).
    A found pair is "exact" when both members were joined by the exact method, else
    "near"; precision_T = found pairs of type T that are true / found pairs of type T,
    recall_T = true pairs of type T that were found / true pairs of type T.
    Kept member: per truth group with a found duplicate, whether exactly one member is
    kept and whether it is the original (and, when the run's scores can be read, the
    best-scored member).

    The dict is JSON-ready; its "text" entry is the same figures in two lines for a
    report (format_pair_quality), e.g.
        dedup pairs: exact P 1.00 R 1.00 (42 found, 42 true); near P 0.97 R 1.00 (...)
        kept: one per group in 100% of 70 found groups; best clip_score 100%; the original 27%
    """
    import pyarrow.parquet as pq

    truth = pq.read_table(truth_parquet, columns=["uid", "kind", "dup_group"]).to_pylist()
    present = {g["uid"]: g for g in groups}
    kind = {t["uid"]: t["kind"] for t in truth}

    found_groups: dict[int, list[str]] = {}
    for g in groups:
        found_groups.setdefault(g["group_id"], []).append(g["uid"])
    true_groups: dict[int, list[str]] = {}
    for t in truth:
        if t["dup_group"] is not None and t["uid"] in present:
            true_groups.setdefault(t["dup_group"], []).append(t["uid"])

    def true_type(pair: tuple[str, str]) -> str:
        return "near" if NEAR_KIND in (kind.get(pair[0]), kind.get(pair[1])) else "exact"

    def found_type(pair: tuple[str, str]) -> str:
        return "exact" if all(present[u]["method"] == "exact" for u in pair) else "near"

    truth_pairs, found_pairs = _pairs(true_groups), _pairs(found_groups)
    out: dict[str, Any] = {"samples": len(groups), "truth_groups": len(true_groups)}
    for t in ("exact", "near"):
        tp_truth = {p for p in truth_pairs if true_type(p) == t}
        fp_found = {p for p in found_pairs if found_type(p) == t}
        out[t] = {
            "true_pairs": len(tp_truth),
            "found_pairs": len(fp_found),
            "precision": _ratio(len(fp_found & truth_pairs), len(fp_found)),
            "recall": _ratio(len(tp_truth & found_pairs), len(tp_truth)),
        }
    out["all"] = {
        "true_pairs": len(truth_pairs), "found_pairs": len(found_pairs),
        "precision": _ratio(len(found_pairs & truth_pairs), len(found_pairs)),
        "recall": _ratio(len(truth_pairs & found_pairs), len(truth_pairs)),
    }

    judged = one_kept = original = best = 0
    for members in true_groups.values():
        if len({present[u]["group_id"] for u in members}) == len(members):
            continue  # no duplicate of this group was found
        judged += 1
        kept = [u for u in members if present[u]["keep"]]
        if len(kept) == 1:
            one_kept += 1
            original += kind.get(kept[0]) not in COPY_KINDS
            if scores:
                top = max(members, key=lambda u: (scores.get(u, float("-inf")), [-ord(c) for c in u]))
                best += kept[0] == top
    out["kept"] = {
        "groups_judged": judged,
        "one_kept": _ratio(one_kept, judged),
        "original_kept": _ratio(original, judged),
        "best_score_kept": _ratio(best, judged) if scores else None,
    }
    out["text"] = format_pair_quality(out)
    return out


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _pr(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def format_pair_quality(quality: dict[str, Any]) -> str:
    """pair_quality's figures in two lines: pair precision/recall, then the kept members."""
    parts = [
        f"{t} P {_pr(quality[t]['precision'])} R {_pr(quality[t]['recall'])} "
        f"({quality[t]['found_pairs']} found, {quality[t]['true_pairs']} true)"
        for t in ("exact", "near")
    ]
    k = quality["kept"]
    return (
        f"dedup pairs: {'; '.join(parts)}\n"
        f"kept: one per group in {_pct(k['one_kept'])} of {k['groups_judged']} found groups; "
        f"best clip_score {_pct(k['best_score_kept'])}; the original {_pct(k['original_kept'])}"
    )


def _scores_of_run(groups_parquet: Path) -> dict[str, float]:
    """clip_score by uid from the scores tag named in the run's summary.json, if readable.

    The run is Pool.dedup_groups(NAME), POOL/dedup/NAME/groups.parquet: its pool is three levels up.
    """
    import pyarrow.parquet as pq

    try:
        pool, name = Pool(groups_parquet.parents[2]), groups_parquet.parent.name
        tag = json.loads(pool.dedup_summary(name).read_text())["scores_tag"]
        rows = []
        for shard in pool.scored_shards(tag):
            rows += pq.read_table(pool.scores_parquet(tag, shard), columns=["uid", "clip_score"]).to_pylist()
    except (OSError, KeyError, ValueError, IndexError):
        return {}
    return {r["uid"]: (r["clip_score"] if r["clip_score"] is not None else float("-inf")) for r in rows}


# Thresholds tried around the run's, by what the threshold is a bar on (Method.measures).
THRESHOLD_OFFSETS = {
    "cosine": (-0.1, -0.05, -0.02, 0.0, 0.02),
    "correlation": (-0.03, -0.02, -0.01, 0.0, 0.01),  # thumbnail correlations crowd just below 1
}


def threshold_table(pool: str | Path, settings: DedupSettings, truth_parquet: str | Path,
                    offsets: tuple[float, ...] | None = None) -> list[dict[str, Any]]:
    """Pair precision/recall of the same dedup at a few thresholds around the run's (the
    first thresholded method's: a cosine, or phash-pixels' thumbnail correlation), without
    writing anything, so a user can pick the threshold on a pool with known truth.

    `settings` is the run's DedupSettings; only its threshold changes between rows."""
    scored = open_scored_pool(pool, settings.scores)
    cols = read_score_columns(scored)
    thresholded = [m for m in settings.chosen if m.threshold is not None]
    dim = check_embeddings(scored) if any(m.needs_vectors for m in settings.chosen) else None
    base = None
    if thresholded:  # "auto" is the bar the run measured on this pool
        base, _ = measured_threshold(thresholded[0], scored, cols, settings)
        if offsets is None:
            offsets = THRESHOLD_OFFSETS[thresholded[0].measures]
    thresholds = sorted({round(base + o, 4) for o in offsets if 0 < base + o <= 1}) if base is not None else [None]
    rows = []
    for threshold in thresholds:
        variant = replace(settings, threshold=threshold, progress=False)
        graph, labels, oversized = find_groups(scored, cols, dim, variant, {}, {})
        sizes = np.bincount(labels)
        # The method that joined each sample, as groups.parquet records it (exact vs near pairs).
        method = [METHOD_ORDER[c] if sizes[g] > 1 and c >= 0 else None for g, c in zip(labels, graph.method_of)]
        groups = [{"uid": u, "group_id": int(g), "keep": False, "method": m}
                  for u, g, m in zip(cols.uid.to_pylist(), labels, method)]
        quality = pair_quality_of_rows(groups, truth_parquet)
        rows.append({"threshold": threshold, "near": quality["near"], "all": quality["all"],
                     "groups": int((sizes > 1).sum()), "oversized": len(oversized)})
    return rows


def format_threshold_table(rows: list[dict[str, Any]]) -> str:
    """threshold_table as aligned text lines (pairs over every method, and near pairs)."""
    lines = ["threshold  pairs P  pairs R  near P  near R  found  true  groups  oversized"]
    for r in rows:
        t = "-" if r["threshold"] is None else f"{r['threshold']:.2f}"
        lines.append(f"{t:>9}  {_pr(r['all']['precision']):>7}  {_pr(r['all']['recall']):>7}  "
                     f"{_pr(r['near']['precision']):>6}  {_pr(r['near']['recall']):>6}  "
                     f"{r['all']['found_pairs']:>5}  {r['all']['true_pairs']:>4}  {r['groups']:>6}  {r['oversized']:>9}")
    return "\n".join(lines)
