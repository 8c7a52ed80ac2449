"""Reading and repairing a pool's shard folder (POOL/shards) as img2dataset leaves it."""
from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq

from shards.atomic import leftovers
from shards.layout import Pool, shard_stem

IMG2DATASET_TMP = "_tmp"  # img2dataset's own scratch folder inside its output folder


def shard_ids(pool: Pool) -> list[int]:
    """Ids of finished shards: those with a readable stats json, a tar and a parquet."""
    done = []
    for stats in sorted(pool.shards_dir.glob("*_stats.json")):
        shard = stats.name.split("_")[0]
        if pool.shard_tar(shard).exists() and pool.shard_parquet(shard).exists():
            done.append(int(shard))
    return done


def repair_unfinished(pool: Pool) -> list[str]:
    """Remove what a killed run left half-done so img2dataset redoes exactly those shards.

    Returns the names removed. A shard counts as finished only with a parseable stats json
    (written last) next to its tar and parquet.
    """
    removed = []
    shards_dir = pool.shards_dir
    if not shards_dir.exists():
        return removed
    for leftover in leftovers(shards_dir) + [shards_dir / IMG2DATASET_TMP]:
        if leftover.is_dir():
            shutil.rmtree(leftover)
            removed.append(leftover.name)
        elif leftover.exists():
            leftover.unlink()
            removed.append(leftover.name)
    for stats in sorted(shards_dir.glob("*_stats.json")):
        shard = stats.name.split("_")[0]
        try:
            json.loads(stats.read_text())
            complete = pool.shard_tar(shard).exists() and pool.shard_parquet(shard).exists()
        except (json.JSONDecodeError, UnicodeDecodeError):
            complete = False
        if not complete:
            for path in (stats, pool.shard_tar(shard), pool.shard_parquet(shard)):
                if path.exists():
                    path.unlink()
                    removed.append(path.name)
    return removed


def read_shard_tables(pool: Pool, columns: list[str] | None = None) -> pa.Table:
    """All finished shards' metadata rows, with a `shard` column (the shard's 5-digit name)."""
    tables = []
    for shard in shard_ids(pool):
        name = shard_stem(shard)
        table = pq.read_table(pool.shard_parquet(shard), columns=columns)
        tables.append(table.append_column("shard", pa.array([name] * table.num_rows, pa.string())))
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="default")
