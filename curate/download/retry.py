"""`curate download --retry-failed`: fetch only failed samples again and merge them into their shards.

A retried sample keeps its shard and key. Each touched shard is rewritten to temporary
names (tar, parquet, stats) and renamed, so an interrupted merge can simply run again:
members being replaced are dropped before the new ones are added, never duplicated
(shards/reorder.py's merge_tar).
"""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from curate.download.fetch import DownloadSettings, run_img2dataset
from curate.download.pool import read_shard_tables
from shards.atomic import replacing
from shards.layout import Pool
from shards.reader import iter_tar_samples
from shards.reorder import merge_tar
from shards.storage import read_parquet, remove_tree


def _merge_shard(pool: Pool, shard: str, retried: dict[str, dict], retry_tar_members: dict[str, list]) -> None:
    """Rewrite shard `shard` with the retried rows (by key) replacing the old ones."""
    table = read_parquet(pool.shard_parquet(shard))
    rows = table.to_pylist()
    for i, row in enumerate(rows):
        if row["key"] in retried:
            rows[i] = {name: retried[row["key"]].get(name, row.get(name)) for name in table.column_names}
    stats_path = pool.shard_stats(shard)
    stats = json.loads(stats_path.read_text())
    stats["successes"] = sum(r["status"] == "success" for r in rows)
    stats["failed_to_download"] = sum(r["status"] == "failed_to_download" for r in rows)
    stats["failed_to_resize"] = sum(r["status"] == "failed_to_resize" for r in rows)
    # All three written first, then renamed tar, parquet, stats (the exits run in reverse):
    # the stats json, which marks a shard finished, comes last.
    with (replacing(stats_path) as new_stats, replacing(pool.shard_parquet(shard)) as new_parquet,
          replacing(pool.shard_tar(shard)) as new_tar):
        merge_tar(pool.shard_tar(shard), new_tar, {key: retry_tar_members.get(key, []) for key in retried})
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), new_parquet)
        new_stats.write_text(json.dumps(stats, indent=4))


def retry_failed_samples(pool: Pool, extra_columns: list[str], settings: DownloadSettings) -> int:
    """Download the pool's failed rows again; returns how many now succeed."""
    table = read_shard_tables(pool)
    if table.num_rows == 0:
        return 0
    failed = table.filter(pa.compute.not_equal(table["status"], "success"))
    if failed.num_rows == 0:
        return 0
    retry_root = pool.retry_dir
    remove_tree(retry_root)
    keep = ["uid", "url", "caption", *[c for c in extra_columns if c in failed.column_names]]
    retry_input = failed.select(keep).append_column("orig_key", failed["key"]).append_column("orig_shard", failed["shard"])
    with replacing(pool.input_parquet(retry=True)) as tmp:
        pq.write_table(retry_input, tmp)
    retry_pool = pool.retry_pool
    run_img2dataset(pool.input_parquet(retry=True), retry_pool.shards_dir, [*keep[3:], "orig_key", "orig_shard"], settings)
    results = read_shard_tables(retry_pool)
    by_shard: dict[str, dict[str, dict]] = {}
    members: dict[str, list] = {}
    recovered = 0
    for row in results.to_pylist():
        orig_key, orig_shard, retry_key = row.pop("orig_key"), row.pop("orig_shard"), row["key"]
        row.pop("shard", None)
        row["key"] = orig_key
        by_shard.setdefault(orig_shard, {})[orig_key] = {"retry_key": retry_key, **row}
    for shard_file in sorted(retry_pool.shards_dir.glob("*.tar")):
        for key, sample in iter_tar_samples(shard_file):
            members.setdefault(key, []).extend(sample.items())
    for shard, rows in sorted(by_shard.items()):
        tar_members = {}
        for orig_key, row in rows.items():
            parts = members.get(row.pop("retry_key"), [])
            fixed = []
            for suffix, data in parts:
                if suffix == "json":  # the sample's json carries its key: give it the original one back
                    meta = json.loads(data)
                    meta.pop("orig_key", None), meta.pop("orig_shard", None)
                    meta["key"] = orig_key
                    data = json.dumps(meta, indent=4).encode()
                fixed.append((suffix, data))
            if row["status"] == "success":
                recovered += 1
                tar_members[orig_key] = fixed
        _merge_shard(pool, shard, rows, tar_members)
    remove_tree(retry_root)
    return recovered
