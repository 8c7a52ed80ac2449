"""`curate filter`: --top, recipes, DataComp .npy subsets, imports and errors, on a real pool."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from clihelp import run_curate
from clikit.errors import UserError
from curate.filter.datacomp_uids import pairs_to_uids
from curate.filter.recipes import load_recipe, parse_top
from curate.filter.run import import_npy, run_filter
from curate.filter.subsets import read_subset_metadata, uids_to_pairs
from poolfactory import make_pool
from shards.uid import uid_to_uint64_pair


@pytest.fixture
def pool(tmp_path):
    return make_pool(tmp_path / "pool", shards=3, per_shard=12)


def _uids(path):
    return pq.read_table(path).column("uid").to_pylist()


def _expected_top(pool, share=None, count=None, keep_only=None):
    scored = [s for s in pool.ok if s.clip_score is not None and (keep_only is None or keep_only(s))]
    ranked = sorted(scored, key=lambda s: (-s.clip_score, s.uid))
    k = count if count is not None else max(1, round(share * len(ranked)))
    return sorted(s.uid for s in ranked[:k])


@pytest.mark.parametrize("text,fraction,count", [("40%", 0.4, None), ("0.4", 0.4, None), ("100%", 1.0, None),
                                                   ("1.0", 1.0, None), ("7", None, 7), ("12.5%", 0.125, None)])
def test_parse_top_accepts(text, fraction, count):
    spec = parse_top(text)
    assert spec.count == count and (spec.fraction == pytest.approx(fraction) if fraction else spec.fraction is None)


@pytest.mark.parametrize("text", ["0%", "140%", "abc", "0", "1.5", "-3", "", "nan"])
def test_parse_top_rejects(text):
    with pytest.raises(UserError, match="--top"):
        parse_top(text)


def test_top_share_is_exact_with_ties_broken_by_uid(pool):
    scores = [s.clip_score for s in pool.ok if s.clip_score is not None]
    assert len(scores) > len(set(scores)), "the pool must have tied scores for this test to mean anything"
    result = run_filter(pool.path, "top40", top="40%")
    assert _uids(result.parquet) == _expected_top(pool, share=0.4)
    again = run_filter(pool.path, "again", top="0.4")
    assert _uids(again.parquet) == _uids(result.parquet)
    for k in range(1, len(scores) + 1):  # every cut, including the ones inside a tie
        got = _uids(run_filter(pool.path, "k", top=str(k), overwrite=True).parquet)
        assert got == _expected_top(pool, count=k), k


def test_subset_files_match_datacomp_format_and_metadata(pool):
    result = run_filter(pool.path, "top40", top="40%")
    uids = _uids(result.parquet)
    pairs = np.load(result.npy)
    assert pairs.dtype == np.dtype("u8,u8") and pairs.ndim == 1
    assert [tuple(int(x) for x in p) for p in pairs] == [uid_to_uint64_pair(u) for u in uids]
    assert np.all(np.sort(pairs) == pairs)
    meta = read_subset_metadata(pool.path, "top40")
    assert meta["recipe"] == "top_fraction" and "ORDER BY score DESC" in meta["sql"]
    assert meta["params"] == {"fraction": 0.4, "count": None}
    assert meta["scores_tag"] == "seed" and meta["seed_model"]["model"] == "tiny-seed"
    assert meta["counts"]["selected"] == len(uids) == meta["count"]
    assert meta["counts"]["candidates_scored"] == sum(s.clip_score is not None for s in pool.ok)
    assert json.loads(pq.read_schema(result.parquet).metadata[b"clipcurate"])["name"] == "top40"


def test_uid_pair_conversion_roundtrips():
    uids = [f"{i:032x}" for i in (0, 1, 2**64, 2**128 - 1)] + ["0123456789abcdefFEDCBA9876543210".lower()]
    pairs = uids_to_pairs(uids)
    assert [tuple(int(x) for x in p) for p in pairs] == [uid_to_uint64_pair(u) for u in uids]
    assert pairs_to_uids(pairs).to_pylist() == uids
    with pytest.raises(UserError):
        uids_to_pairs(["xyz"])


def test_recipes(pool):
    truth = pool.by_uid()
    captions = set(truth[u].caption for u in _uids(run_filter(pool.path, "cap", recipe="caption_rules").parquet))
    assert captions and not captions & {"IMG_2041.jpg", "DSC00123", "sunset"}
    images = [truth[u] for u in _uids(run_filter(pool.path, "img", recipe="image_rules").parquet)]
    assert images and all(max(s.width, s.height) <= 3 * min(s.width, s.height) for s in images)
    assert len(images) < len(pool.ok)
    kept = _uids(run_filter(pool.path, "dd", recipe="dedup_keep").parquet)
    assert kept == sorted(s.uid for s in pool.ok if s.keep) and len(kept) < len(pool.ok)
    high = _uids(run_filter(pool.path, "thr", recipe="score_threshold", params={"min_score": 0.25}).parquet)
    assert high == sorted(s.uid for s in pool.ok if s.clip_score is not None and s.clip_score >= 0.25 - 1e-6)
    combined = set(_uids(run_filter(pool.path, "all", recipe="combined", top="50%").parquet))
    clean = set(_uids(pool.path / "subsets/cap.parquet")) & {s.uid for s in images} & set(kept)
    assert combined == set(_expected_top(pool, share=0.5, keep_only=lambda s: s.uid in clean))


def test_a_recipe_streams_in_batches_and_the_subset_is_written_a_row_group_at_a_time(pool, monkeypatch):
    """A recipe's uids are read from DuckDB in Arrow batches and the subset is written a row
    group at a time (a 100M-uid subset is never held as text): with batches of 5 uids and
    row groups of 4, the subset holds the same uids, and its .npy the same bytes, as with one
    batch and one row group."""
    from curate.filter import run as filter_run
    from curate.filter import subsets

    whole = run_filter(pool.path, "whole", recipe="caption_rules")
    monkeypatch.setattr(filter_run, "UID_BATCH_ROWS", 5)
    monkeypatch.setattr(subsets, "ROW_GROUP_ROWS", 4)
    parts = run_filter(pool.path, "parts", recipe="caption_rules")
    count = whole.count
    assert count > 10 and parts.count == count
    assert pq.read_metadata(whole.parquet).num_row_groups == 1
    assert pq.read_metadata(parts.parquet).num_row_groups == -(-count // 4)
    assert _uids(parts.parquet) == _uids(whole.parquet)
    assert parts.npy.read_bytes() == whole.npy.read_bytes()


def test_where_dedup_and_custom_recipe(pool, tmp_path):
    result = run_filter(pool.path, "w", top="100%", where="caption LIKE '%a%' AND width >= 30", dedup="default")
    expected = sorted(s.uid for s in pool.ok if s.clip_score is not None and "a" in s.caption and s.width >= 30 and s.keep)
    assert _uids(result.parquet) == expected
    recipe = tmp_path / "wide.sql"
    recipe.write_text("-- wide images\n-- @param ratio = 1.0  width / height at least\n"
                      "SELECT uid FROM candidates WHERE width >= $ratio * height\n")
    wide = _uids(run_filter(pool.path, "wide", recipe=str(recipe), params={"ratio": 1.2}).parquet)
    assert wide == sorted(s.uid for s in pool.ok if s.width >= 1.2 * s.height)
    with pytest.raises(UserError, match="ratio"):
        run_filter(pool.path, "x", recipe=str(recipe), params={"ration": 2})
    assert load_recipe("top_fraction").defaults == {"fraction": None, "count": None}


def test_from_npy_roundtrip_and_bad_files(pool, tmp_path):
    made = run_filter(pool.path, "top40", top="40%")
    foreign = np.concatenate([np.load(made.npy), np.array([(1, 2)], np.dtype("u8,u8"))])[::-1]  # unsorted, + one not in pool
    np.save(tmp_path / "dc.npy", foreign)
    imported = import_npy(pool.path, tmp_path / "dc.npy", "dc")
    assert imported.count == len(foreign)
    assert imported.metadata["counts"]["in_pool"] == made.count
    assert set(_uids(imported.parquet)) == set(_uids(made.parquet)) | {f"{1:016x}{2:016x}"}
    assert np.all(np.sort(np.load(imported.npy)) == np.load(imported.npy))
    np.save(tmp_path / "bad.npy", np.zeros(3, dtype=np.float32))
    with pytest.raises(UserError, match="u8,u8"):
        import_npy(pool.path, tmp_path / "bad.npy", "bad")
    assert not (pool.path / "subsets/bad.parquet").exists()


def test_existing_subset_is_not_overwritten(pool):
    first = run_filter(pool.path, "s", top="40%")
    before = first.parquet.read_bytes()
    with pytest.raises(UserError, match="already exists"):
        run_filter(pool.path, "s", top="10%")
    assert first.parquet.read_bytes() == before
    with pytest.raises(UserError, match="plain name"):
        run_filter(pool.path, "../escape", top="10%")


def test_an_identical_rerun_leaves_the_subset_as_is_and_a_different_one_is_refused(pool, tmp_path):
    """A rerun of the same selection (a kill after the subset was written, then the command
    again) succeeds without rewriting; the same name with other parameters is refused."""
    first = run_filter(pool.path, "same", top="40%")
    files = (first.parquet, first.npy)
    stamps = [(p.stat().st_mtime_ns, p.read_bytes()) for p in files]
    again = run_filter(pool.path, "same", top="40%")
    assert again.count == first.count and [(p.stat().st_mtime_ns, p.read_bytes()) for p in files] == stamps
    with pytest.raises(UserError, match=r"'same' already exists in .* \(made with another params\); pick another"):
        run_filter(pool.path, "same", top="10%")
    np.save(tmp_path / "dc.npy", np.load(first.npy))
    imported = import_npy(pool.path, tmp_path / "dc.npy", "dc")
    stamp = imported.parquet.stat().st_mtime_ns
    assert import_npy(pool.path, tmp_path / "dc.npy", "dc").count == imported.count
    assert imported.parquet.stat().st_mtime_ns == stamp
    assert [(p.stat().st_mtime_ns, p.read_bytes()) for p in files] == stamps


def test_cli_errors_name_the_choices(tmp_path):
    pool = make_pool(tmp_path / "pool", tags=("small", "big"))
    cases = {
        ("--top", "0%"): "outside",
        ("--top", "140%"): "outside",
        ("--top", "abc"): "not a share",
        ("--top", "40%", "--scores", "small", "--by", "nope"): "clip_score",
        ("--top", "40%", "--scores", "medium"): "available: big, small",
        ("--top", "40%"): "several scoring tags (big, small)",
        ("--recipe", "nope"): "top_fraction",
    }
    for args, needle in cases.items():
        done = run_curate("filter", pool.path, "--name", "x", *args)
        assert done.returncode == 2, (args, done.stderr)
        assert needle in done.stderr and len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
    assert not (pool.path / "subsets" / "x.parquet").exists()
    ok = run_curate("filter", pool.path, "--name", "x", "--top", "40%", "--scores", "big")
    assert ok.returncode == 0 and "kept" in ok.stdout


def _recipe_sql_uids(pool_path, by="clip_score", **params):
    """What queries/top_fraction.sql itself returns, run as SQL (the definition)."""
    from curate.catalog import open_catalog
    from curate.filter.candidates import build_candidates

    with open_catalog(pool_path) as catalog:
        build_candidates(catalog, by, False, None)
        sql = load_recipe("top_fraction").sql
        rows = catalog.con.sql(f"SELECT uid FROM ({sql})", params={"fraction": None, "count": None, **params}).fetchall()
    return sorted(r[0] for r in rows)


@pytest.mark.parametrize("kind", ["float_ties", "int", "nan"])
def test_fast_top_matches_the_recipe_sql(tmp_path, kind):
    """The one-pass top_fraction (curate.topcut) returns exactly what the recipe's SQL does:
    heavy ties at the cut, nulls, integer columns; with NaN scores it leaves the work to
    the SQL (DuckDB's parquet filters and ORDER BY disagree on NaN), same result."""
    import pyarrow as pa

    from curate.filter.top_fraction import top_fraction
    from curate.catalog import open_catalog
    from curate.filter.candidates import build_candidates

    rng = np.random.default_rng(7)
    n = 400
    uids = [f"{int(x):032x}" for x in rng.integers(0, 2**62, n)] + [f"{i:032x}" for i in range(20)]
    if kind == "int":
        score = pa.array(rng.integers(0, 9, len(uids)), pa.int64())
    else:
        nan_share = 0.05 if kind == "nan" else 0.0
        values = rng.choice([0.1, 0.2, 0.25, np.nan], len(uids), p=[0.4, 0.3, 0.3 - nan_share, nan_share])
        values = values.astype(np.float32)
        score = pa.array(values, pa.float32(), mask=rng.random(len(uids)) < 0.05)
    scores_dir = tmp_path / "pool" / "scores" / "t"
    scores_dir.mkdir(parents=True)
    table = pa.table({"uid": uids, "clip_score": score})
    pq.write_table(table.slice(0, 200), scores_dir / "00000.parquet")
    pq.write_table(table.slice(200), scores_dir / "00001.parquet")
    pool_path = tmp_path / "pool"
    scored = sum(v is not None for v in score.to_pylist())
    for k in list(range(1, 40)) + [scored // 2, scored - 1, scored, scored + 5]:
        with open_catalog(pool_path) as catalog:
            build_candidates(catalog, "clip_score", False, None)
            cut = top_fraction(catalog.con, {"fraction": None, "count": k})
        expected = _recipe_sql_uids(pool_path, count=k)
        if kind == "nan":
            assert cut is None
        else:
            assert cut is not None, "the fast path must handle this input"
            rows = cut.rows if cut.rows is not None else np.arange(len(cut.block.pairs))
            assert sorted(pairs_to_uids(cut.block.pairs[rows]).to_pylist()) == expected, k
        got = _uids(run_filter(pool_path, "k", top=str(k), overwrite=True).parquet)
        assert got == sorted(set(expected)), k
    for share in ("40%", "0.33", "100%"):
        got = _uids(run_filter(pool_path, "s", top=share, overwrite=True).parquet)
        assert got == _recipe_sql_uids(pool_path, fraction=parse_top(share).fraction), share


def test_uids_that_are_not_canonical_fall_back_to_the_sql_path(tmp_path):
    """Upper-case hex uids are stored in lower case; a malformed uid is a clear error."""
    import pyarrow as pa

    scores_dir = tmp_path / "pool" / "scores" / "t"
    scores_dir.mkdir(parents=True)
    uids = ["ABCDEF0123456789abcdef0123456789", f"{5:032x}", f"{6:032x}"]
    pq.write_table(pa.table({"uid": uids, "clip_score": pa.array([0.3, 0.3, 0.1], pa.float32())}), scores_dir / "0.parquet")
    got = _uids(run_filter(tmp_path / "pool", "a", top="2").parquet)
    assert got == [f"{5:032x}", uids[0].lower()]
    # no tie at the cut: the fast path keeps the text it read, but not an upper-case spelling
    pq.write_table(pa.table({"uid": uids, "clip_score": pa.array([0.5, 0.3, 0.1], pa.float32())}), scores_dir / "0.parquet")
    got = _uids(run_filter(tmp_path / "pool", "c", top="2").parquet)
    assert got == [f"{5:032x}", uids[0].lower()]
    pq.write_table(pa.table({"uid": ["nothex", f"{5:032x}"], "clip_score": pa.array([0.3, 0.1], pa.float32())}),
                   scores_dir / "0.parquet")
    with pytest.raises(UserError, match="32 hex"):
        run_filter(tmp_path / "pool", "b", top="100%")
