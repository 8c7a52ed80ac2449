"""Reading and repairing a pool's shard folder (POOL/shards) as img2dataset leaves it."""
from __future__ import annotations

import pyarrow as pa

from clikit.errors import UserError
from shards.atomic import leftovers
from shards.layout import SHARD_STATS_RE, Pool
from shards.storage import read_parquet, remove_tree

IMG2DATASET_TMP = "_tmp"  # img2dataset's own scratch folder inside its output folder


def repair_unfinished(pool: Pool) -> list[str]:
    """Remove what a killed run left half-done so img2dataset redoes exactly those shards.

    Returns the names removed. A shard is finished by Pool.shard_finished's rule (a parseable
    stats json, written last, next to its tar and parquet); the others lose all three.
    """
    removed = []
    shards_dir = pool.shards_dir
    if not shards_dir.exists():
        return removed
    for leftover in leftovers(shards_dir) + [shards_dir / IMG2DATASET_TMP]:
        if leftover.is_dir():
            remove_tree(leftover)
            removed.append(leftover.name)
        elif leftover.exists():
            leftover.unlink()
            removed.append(leftover.name)
    for stats in sorted(shards_dir.glob("*_stats.json")):
        match = SHARD_STATS_RE.match(stats.name)
        if match is None:
            continue
        shard = match.group(1)
        if not pool.shard_finished(shard):
            for path in (stats, pool.shard_tar(shard), pool.shard_parquet(shard)):
                if path.exists():
                    path.unlink()
                    removed.append(path.name)
    return removed


def require_finished_shards(pool: Pool) -> list[str]:
    """The pool's finished shards (Pool.finished_shards); a UserError saying to download when there are none."""
    finished = pool.finished_shards()
    if not finished:
        raise UserError(f"{pool.root} has no finished shards; run or resume `curate download` into it")
    return finished


def read_shard_tables(pool: Pool, columns: list[str] | None = None) -> pa.Table:
    """All finished shards' metadata rows, with a `shard` column (the shard's 5-digit name)."""
    tables = []
    for shard in pool.finished_shards():
        table = read_parquet(pool.shard_parquet(shard), columns=columns)
        tables.append(table.append_column("shard", pa.array([shard] * table.num_rows, pa.string())))
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="default")
