"""How well a subset keeps captions that match their image, against the demo's truth.parquet:
the share of the candidates the recipe kept and the precision of what it kept, next to the
candidates' own share of matching captions (the base rate a recipe must beat to be better
than keeping at random).

A caption matches its image unless the demo planted it as noise (`kind` mismatched,
generic or partial: another image's caption, alt text saying nothing, one attribute wrong);
clean rows, duplicates and rows that survived a download fault match.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from clikit.errors import UserError
from curate.catalog import open_catalog
from curate.filter.candidates import query_table
from curate.filter.subsets import read_subset_metadata
from shards.layout import Pool

NOISY_CAPTION_KINDS = ("mismatched", "generic", "partial")


def _matching(alias: str) -> str:
    """SQL: 1 when the truth row's caption matches its image, else 0 (NULL when the uid is not in truth)."""
    noisy = ", ".join(f"'{k}'" for k in NOISY_CAPTION_KINDS)
    return f"CAST({alias}.kind NOT IN ({noisy}) AS INTEGER)"


def subset_quality(pool: str | Path, name: str, truth: str | Path) -> dict[str, Any]:
    """Kept share and caption precision of subsets/NAME against `truth`, over the candidates
    the subset was chosen from (its recorded candidates SQL, scores tag and dedup run)."""
    meta = read_subset_metadata(pool, name)
    if not meta.get("candidates_sql"):
        raise UserError(f"subset {name!r} was not made by a recipe (imported?); there are no candidates to compare")
    truth = Path(truth)
    if not truth.is_file():
        raise UserError(f"--truth {truth} does not exist; give the demo pool's truth.parquet")
    with open_catalog(pool, scores=meta["scores_tag"], dedup=meta.get("dedup_name"),
                      clusters=meta.get("clusters_name")) as catalog:
        params = {"truth": str(truth), "subset": str(Pool(pool).subset_parquet(name))}
        row = query_table(catalog, f"""
            WITH truth AS (SELECT uid, kind FROM read_parquet($truth)),
            candidates AS ({meta['candidates_sql']}),
            judged AS (
                SELECT c.uid, {_matching('t')} AS matching, k.uid IS NOT NULL AS kept
                FROM candidates c
                LEFT JOIN truth t USING (uid)
                LEFT JOIN read_parquet($subset) k USING (uid)
            )
            SELECT count(*) AS candidates, count(*) FILTER (kept) AS kept, count(matching) AS judged,
                   count(matching) FILTER (kept) AS judged_kept, avg(matching) AS base,
                   avg(matching) FILTER (kept) AS precision
            FROM judged""", params).to_pylist()[0]
    candidates, kept, base, precision = row["candidates"], row["kept"], row["base"], row["precision"]
    return {
        "subset": name, "recipe": meta.get("recipe"), "candidates": int(candidates), "kept": int(kept),
        "kept_share": kept / candidates if candidates else None,
        "judged": int(row["judged"]), "judged_kept": int(row["judged_kept"]),
        "base_rate": float(base) if base is not None else None,
        "precision": float(precision) if precision is not None else None,
    }


def format_subset_quality(q: dict[str, Any]) -> str:
    """One line: kept share, precision and the base rate it is compared with."""
    def share(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    kept = "n/a" if q["kept_share"] is None else f"{100 * q['kept_share']:.1f}%"
    lift = ("" if q["precision"] is None or q["base_rate"] is None
            else f" ({q['precision'] - q['base_rate']:+.3f})")
    return (f"truth: kept {q['kept']} of {q['candidates']} candidates ({kept}); precision {share(q['precision'])}"
            f" (captions that match their image) against {share(q['base_rate'])} in the candidates{lift}")
