"""`curate filter` itself: run a recipe over the candidates, or import a DataComp .npy,
and write the subset with its provenance (recipe, SQL, parameters, inputs, counts)."""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clikit.errors import UserError
from clikit.versions import tool_version
from curate.catalog import Catalog, open_catalog
from curate.filter.candidates import build_candidates, check_needs, query_batches, run_query
from curate.filter.datacomp_uids import UidBlock, UidFormatError, pairs_to_uids
from curate.filter.recipes import Recipe, is_builtin, load_recipe, parse_top
from curate.filter.subsets import (
    check_subset_name, load_datacomp_npy, write_subset, write_uid_block,
)
from curate.filter.top_fraction import TopCut, top_fraction
from shards.layout import Pool
from shards.storage import StoragePath, open_root

UID_BATCH_ROWS = 1 << 20  # uids per Arrow batch read from a recipe's result


@dataclass
class FilterResult:
    """A subset written: its name, uid count, both files and the metadata recorded."""

    name: str
    count: int
    parquet: StoragePath
    npy: StoragePath
    metadata: dict[str, Any]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _seed_model(pool: StoragePath, tag: str | None) -> dict[str, Any] | None:
    if tag is None:
        return None
    path = Pool(pool).model_json(tag)
    try:
        return {"tag": tag, **json.loads(path.read_text())}
    except (OSError, ValueError):
        return {"tag": tag}


def _result(pool: StoragePath, name: str, count: int, metadata: dict[str, Any]) -> FilterResult:
    metadata["count"] = count
    layout = Pool(pool)
    return FilterResult(name, count, layout.subset_parquet(name), layout.subset_npy(name), metadata)


def run_filter(
    pool: str | StoragePath,
    name: str,
    top: str | None = None,
    by: str = "clip_score",
    scores: str | None = None,
    dedup: str | None = None,
    use_dedup: bool = False,
    where: str | None = None,
    recipe: str | None = None,
    params: dict[str, Any] | None = None,
    overwrite: bool = False,
    clusters: str | None = None,
) -> FilterResult:
    """Select a subset of `pool` with a recipe and write subsets/NAME.{parquet,npy}.

    `top` ("40%", "0.4", "5000") fills the recipe's $fraction/$count (the recipe defaults
    to top_fraction when `top` is given); `use_dedup` (or naming `dedup`) keeps only the
    dedup run's kept samples; `where` is an SQL condition over the candidates; `clusters`
    picks the cluster run behind the `clusters` view.
    """
    pool = open_root(pool)
    check_subset_name(name)  # an existing subset of that name is judged when the new one is known
    top_spec = parse_top(top) if top is not None else None
    if recipe is None:
        if top_spec is None:
            raise UserError("say what to keep: --top 40%, --recipe NAME (see queries/), or --from-npy FILE")
        recipe = "top_fraction"
    chosen = load_recipe(recipe)
    overrides = dict(params or {})
    if top_spec is not None:
        if not {"fraction", "count"} <= set(chosen.defaults):
            raise UserError(f"recipe {chosen.name} takes no --top (it has no $fraction/$count parameters)")
        overrides.update(top_spec.params())
    bound = chosen.bind(overrides)
    if {"fraction", "count"} <= set(bound) and bound["fraction"] is None and bound["count"] is None:
        raise UserError(f"recipe {chosen.name} needs a share or a count: pass --top 40%")

    with open_catalog(pool, scores=scores, dedup=dedup, clusters=clusters) as catalog:
        candidates_sql = build_candidates(catalog, by, use_dedup or dedup is not None, where)
        check_needs(catalog, chosen)
        fast = _top_fraction_fast(catalog, chosen, bound)
        if fast is not None:
            scored, selected = fast.scored, fast.selected
        else:
            scored = run_query(catalog, "SELECT count(score) FROM candidates").fetchall()[0][0]
        if scored == 0:
            raise UserError(f"no candidate has a {by}; check --where/--dedup or run `curate score`")
        if fast is None:
            block = _selected_uids(catalog, f"SELECT uid FROM (\n{chosen.sql}\n) AS recipe", bound)
            selected = len(block.pairs)
        pool_samples = (
            run_query(catalog, "SELECT count(*) FROM samples WHERE status = 'success'").fetchall()[0][0]
            if "samples" in catalog.views else None
        )
        metadata = {
            "recipe": chosen.name,
            "recipe_path": chosen.path,
            "sql": chosen.recorded_sql(),
            "candidates_sql": candidates_sql,
            "params": bound,
            "top": top_spec.text if top_spec else None,
            "by": by,
            "where": where,
            "scores_tag": catalog.scores_tag,
            "dedup_name": catalog.dedup_name if (use_dedup or dedup is not None) else None,
            "clusters_name": catalog.cluster_name,
            "inputs": catalog.fingerprint(),
            "seed_model": _seed_model(pool, catalog.scores_tag),
            "counts": {"pool_samples": pool_samples, "candidates_scored": int(scored), "selected": int(selected)},
            "pool": str(pool.resolve()),
            "created": _now(),
            "tool_version": tool_version(),
        }
    if fast is not None:
        count = write_uid_block(pool, name, fast.block, fast.rows, metadata, overwrite=overwrite)
    else:
        count = write_uid_block(pool, name, block, None, metadata, overwrite=overwrite)
    return _result(pool, name, count, metadata)


def inputs_fingerprint(pool: str | StoragePath, scores: str | None = None, dedup: str | None = None,
                       clusters: str | None = None) -> list:
    """The `inputs` a subset made now from these runs would record (Catalog.fingerprint): a
    subset whose own differs was made before one of its inputs was rewritten."""
    with open_catalog(open_root(pool), scores=scores, dedup=dedup, clusters=clusters) as catalog:
        return catalog.fingerprint()


def _selected_uids(catalog: Catalog, sql: str, params: dict[str, Any]) -> UidBlock:
    """The recipe's uids, streamed from DuckDB and decoded batch by batch: 16 bytes a uid,
    never the whole result as strings (78M uids: 1.3 GB, not 2.5 GB of text and more)."""
    try:
        return UidBlock.from_batches(query_batches(catalog, sql, params, UID_BATCH_ROWS))
    except UidFormatError as exc:
        raise UserError(str(exc)) from None


def _top_fraction_fast(catalog: Catalog, chosen: Recipe, bound: dict[str, Any]) -> TopCut | None:
    """The built-in top_fraction recipe's result computed in one score pass and one uid
    pass (curate.filter.top_fraction); None for any other recipe, or when the fast way declines."""
    if not is_builtin(chosen, "top_fraction"):
        return None
    import duckdb

    try:
        return top_fraction(catalog.con, bound)
    except duckdb.Error:
        return None  # the SQL path reports the problem in its own words


def import_npy(pool: str | StoragePath, npy: str | Path, name: str, overwrite: bool = False) -> FilterResult:
    """Import a DataComp/DFN subset .npy as subsets/NAME (all its uids, sorted, unique)."""
    import pyarrow as pa

    pool = open_root(pool)
    if not pool.is_dir():
        raise UserError(f"pool {pool} is not a directory")
    check_subset_name(name)
    pairs = load_datacomp_npy(npy)
    uids = pairs_to_uids(pairs)
    in_pool = None
    with open_catalog(pool) as catalog:
        if "samples" in catalog.views and len(uids):
            catalog.con.register("imported", pa.table({"uid": uids}))
            in_pool = catalog.con.sql(
                "SELECT count(*) FROM imported WHERE uid IN (SELECT uid FROM samples WHERE status = 'success')"
            ).fetchall()[0][0]
    metadata = {
        "recipe": None,
        "imported_from": str(Path(npy).resolve()),
        "sql": None,
        "params": {},
        "counts": {"imported": int(len(pairs)), "in_pool": in_pool},
        "pool": str(pool.resolve()),
        "created": _now(),
        "tool_version": tool_version(),
    }
    count = write_subset(pool, name, uids, metadata, overwrite=overwrite)
    return _result(pool, name, count, metadata)
