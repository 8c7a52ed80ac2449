"""One rule says which pool shards are finished (Pool.shard_finished: a stats json that
parses, next to the tar and the parquet), and every reader of the pool follows it."""
from __future__ import annotations

import pytest

from curate.catalog import open_catalog
from curate.download.pool import read_shard_tables, repair_unfinished
from curate.pool_report import inspect_pool
from poolfactory import make_pool
from shards.layout import Pool


@pytest.mark.parametrize("damage", ["no stats json", "stats json cut short", "no tar"])
def test_an_unfinished_shard_is_left_out_by_every_reader_and_removed_by_repair(tmp_path, damage):
    fp = make_pool(tmp_path / "pool", shards=3, per_shard=5)
    pool = Pool(fp.path)
    if damage == "no stats json":
        pool.shard_stats(1).unlink()
    elif damage == "stats json cut short":  # a kill while img2dataset wrote it
        pool.shard_stats(1).write_text('{"count": ')
    else:
        pool.shard_tar(1).unlink()
    finished = [s for s in fp.samples if s.shard != "00001"]

    assert pool.finished_shards() == ["00000", "00002"]
    assert read_shard_tables(pool).num_rows == len(finished)
    assert inspect_pool(pool.root)["samples"] == len(finished)
    with open_catalog(pool.root) as catalog:
        assert catalog.con.sql("SELECT DISTINCT shard FROM samples ORDER BY 1").fetchall() == [("00000",), ("00002",)]

    if damage != "no stats json":  # without one, img2dataset itself refetches the shard
        repair_unfinished(pool)
        assert not any(p.exists() for p in (pool.shard_stats(1), pool.shard_tar(1), pool.shard_parquet(1)))
        assert pool.finished_shards() == ["00000", "00002"]
