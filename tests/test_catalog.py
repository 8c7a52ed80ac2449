"""The catalog's views over a real pool on disk, and `curate sql`."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from clihelp import run_curate
from curate.catalog import open_catalog
from clikit.errors import UserError
from poolfactory import make_pool


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return make_pool(tmp_path_factory.mktemp("cat") / "pool", tags=("seed",), dedup_names=("default",))


@pytest.fixture(scope="module")
def two_tag_pool(tmp_path_factory):
    return make_pool(tmp_path_factory.mktemp("cat2") / "pool", tags=("small", "big"), dedup_names=("a", "b"))


def test_views_hold_every_row_with_the_contract_columns(pool):
    with open_catalog(pool.path) as cat:
        assert set(cat.views) == {"samples", "scores", "scores_all", "scored", "dedup", "dedup_all"}
        assert cat.con.sql("SELECT count(*) FROM samples").fetchall()[0][0] == len(pool.samples)
        assert cat.con.sql("SELECT count(*) FROM scores").fetchall()[0][0] == len(pool.ok)
        failed = cat.con.sql("SELECT count(*) FROM samples WHERE status <> 'success'").fetchall()[0][0]
        assert failed == len(pool.samples) - len(pool.ok) > 0
        for column in ("uid", "url", "caption", "width", "height", "shard", "key", "status"):
            assert column in cat.columns("samples")
        assert {"uid", "clip_score", "caption", "url"} <= set(cat.columns("scored"))
        # joins are on uid: the scored view carries each sample's own caption
        rows = cat.con.sql("SELECT uid, caption, shard FROM scored").fetchall()
        truth = pool.by_uid()
        assert all(truth[u].caption == c and truth[u].shard == s for u, c, s in rows)
        kept = cat.con.sql("SELECT count(*) FROM dedup WHERE keep").fetchall()[0][0]
        assert kept == sum(s.keep for s in pool.ok)


def test_several_tags_need_a_choice(two_tag_pool):
    with open_catalog(two_tag_pool.path) as cat:
        assert "scores" not in cat.views and "dedup" not in cat.views
        by_tag = dict(cat.con.sql("SELECT tag, count(*) FROM scores_all GROUP BY tag").fetchall())
        assert by_tag == {"small": len(two_tag_pool.ok), "big": len(two_tag_pool.ok)}
        assert dict(cat.con.sql("SELECT name, count(*) FROM dedup_all GROUP BY name").fetchall()).keys() == {"a", "b"}
        with pytest.raises(UserError, match="small"):
            cat.require_scores()
    with open_catalog(two_tag_pool.path, scores="big", dedup="a") as cat:
        assert cat.scores_tag == "big" and "scores" in cat.views
    with pytest.raises(UserError, match="available: big, small"):
        open_catalog(two_tag_pool.path, scores="medium")


def test_sql_command_formats(pool, tmp_path):
    query = "SELECT shard, count(*) AS n FROM samples GROUP BY shard ORDER BY shard"
    shown = run_curate("sql", pool.path, query)
    assert shown.returncode == 0 and "00001" in shown.stdout
    csv = run_curate("sql", pool.path, query, "--format", "csv")
    assert csv.stdout.splitlines()[0].replace('"', "") == "shard,n"
    as_json = json.loads(run_curate("sql", pool.path, query, "--format", "json").stdout)
    assert sum(r["n"] for r in as_json) == len(pool.samples)
    out = tmp_path / "r.parquet"
    assert run_curate("sql", pool.path, query, "--format", "parquet", "--out", out).returncode == 0
    assert pq.read_table(out).num_rows == 2


def test_sql_errors_are_one_line(pool, two_tag_pool):
    bad = run_curate("sql", pool.path, "SELECT nope FROM samples")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "nope" in bad.stderr
    ambiguous = run_curate("sql", two_tag_pool.path, "SELECT count(*) FROM scores")
    assert ambiguous.returncode == 2 and "--scores" in ambiguous.stderr and "big" in ambiguous.stderr
    assert "Traceback" not in bad.stderr + ambiguous.stderr
