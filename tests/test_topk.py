"""The top-k cut is defined once (queries/shared/top_k.sql): `--top`'s fast path, and the
top_fraction, combined and random_sample recipes run as SQL, keep the same rows, including
where rounding and ties at the cut could tell two copies apart."""
from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.catalog import open_catalog
from curate.filter.candidates import build_candidates
from curate.filter.datacomp_uids import pairs_to_uids
from curate.filter.recipes import load_recipe
from curate.filter.run import run_filter
from curate.filter.top_fraction import top_fraction
from poolfactory import make_pool
from shards.layout import Pool

# Ten scored rows: the third best score is shared by four rows, so a cut at k = 3 or 5
# falls inside the tie.
SCORES = [0.9, 0.7, 0.5, 0.5, 0.5, 0.5, 0.3, 0.3, 0.1, 0.1]
NEUTRAL = {"min_chars": 0, "min_words": 0, "min_side": 0, "max_aspect": 1000.0}  # combined's rules keep all


@pytest.fixture
def pool(tmp_path):
    """A pool whose only scored rows are ten that combined's caption rules and the dedup
    run keep anyway, so every recipe cuts from the same ten."""
    fp = make_pool(tmp_path / "pool", shards=1, per_shard=24)
    kept = {s.uid for s in fp.ok if s.keep and s.caption.startswith(("a ", "two "))}
    layout = Pool(fp.path)
    path = layout.scores_parquet("seed", 0)
    table = pq.read_table(path)
    chosen = [u for u in table["uid"].to_pylist() if u in kept][: len(SCORES)]
    assert len(chosen) == len(SCORES)
    score = dict(zip(chosen, SCORES))
    column = pa.array([score.get(u) for u in table["uid"].to_pylist()], pa.float32())
    pq.write_table(table.set_column(table.schema.get_field_index("clip_score"), "clip_score", column), path)
    return fp.path, score


def _expected(score: dict[str, float], fraction: float | None = None, count: int | None = None) -> list[str]:
    """The rule, written out: k = count, else fraction x n rounded half away from zero
    (DuckDB's round; Python's round() goes to even), at least 1; the k best, ties by uid."""
    n = len(score)
    k = min(n, count if count is not None else max(1, math.floor(fraction * n + 0.5)))
    return sorted(sorted(score, key=lambda u: (-score[u], u))[:k])


def _sql(pool, recipe: str, **params) -> list[str]:
    chosen = load_recipe(recipe)
    with open_catalog(pool) as catalog:
        build_candidates(catalog, "clip_score", False, None)
        rows = catalog.con.sql(f"SELECT uid FROM ({chosen.sql})", params=chosen.bind(params)).fetchall()
    return sorted(r[0] for r in rows)


def _fast(pool, **params) -> list[str]:
    with open_catalog(pool) as catalog:
        build_candidates(catalog, "clip_score", False, None)
        cut = top_fraction(catalog.con, {"fraction": None, "count": None, **params})
        assert cut is not None, "the fast path must take this input"
        kept = cut.block.pairs if cut.rows is None else cut.block.pairs[cut.rows]
    return sorted(pairs_to_uids(kept).to_pylist())


@pytest.mark.parametrize("params", [{"fraction": 0.25}, {"fraction": 0.45}, {"count": 5}, {"fraction": 0.05}],
                         ids=["2.5-rounds-up", "4.5-rounds-up", "count-in-a-tie", "at-least-one"])
def test_fast_path_and_every_recipe_keep_the_same_rows(pool, params):
    pool_path, score = pool
    expected = _expected(score, **params)
    assert _fast(pool_path, **params) == expected
    assert _sql(pool_path, "top_fraction", **params) == expected
    assert _sql(pool_path, "combined", **{"fraction": None, **NEUTRAL, **params}) == expected
    top = f"{params['count']}" if "count" in params else f"{params['fraction'] * 100:g}%"
    assert pq.read_table(run_filter(pool_path, "top", top=top).parquet)["uid"].to_pylist() == expected
    if "fraction" in params:  # random_sample's slice is the same cut; all of it kept
        assert _sql(pool_path, "random_sample", within=params["fraction"], fraction=1.0) == expected


def test_every_path_calls_the_one_definition(pool):
    """Redefining the shared quota on the connection moves the fast path and all three
    recipes alike: none of them carries its own copy of the rule."""
    pool_path, _ = pool
    with open_catalog(pool_path) as catalog:
        build_candidates(catalog, "clip_score", False, None)
        catalog.con.execute("CREATE OR REPLACE TEMP MACRO top_k_quota(n, fraction, count) AS least(n, 2)::BIGINT")
        cut = top_fraction(catalog.con, {"fraction": 0.5, "count": None})
        assert cut is not None and cut.selected == 2
        for recipe, params in (("top_fraction", {"fraction": 0.5}), ("combined", {"fraction": 0.5, **NEUTRAL}),
                               ("random_sample", {"within": 1.0, "fraction": 1.0})):
            chosen = load_recipe(recipe)
            rows = catalog.con.sql(f"SELECT uid FROM ({chosen.sql})", params=chosen.bind(params)).fetchall()
            assert len(rows) == 2, recipe
