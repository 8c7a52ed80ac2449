"""Reading and repairing a pool's shard folder (POOL/shards) as img2dataset leaves it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SHARDS_DIR = "shards"


def shard_ids(shards_dir: Path) -> list[int]:
    """Ids of finished shards: those with a readable stats json, a tar and a parquet."""
    done = []
    for stats in sorted(shards_dir.glob("*_stats.json")):
        shard = stats.name.split("_")[0]
        if (shards_dir / f"{shard}.tar").exists() and (shards_dir / f"{shard}.parquet").exists():
            done.append(int(shard))
    return done


def repair_unfinished(shards_dir: Path) -> list[str]:
    """Remove what a killed run left half-done so img2dataset redoes exactly those shards.

    Returns the names removed. A shard counts as finished only with a parseable stats json
    (written last) next to its tar and parquet.
    """
    removed = []
    if not shards_dir.exists():
        return removed
    for leftover in list(shards_dir.glob(".*.partial")) + [shards_dir / "_tmp"]:
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
            complete = (shards_dir / f"{shard}.tar").exists() and (shards_dir / f"{shard}.parquet").exists()
        except (json.JSONDecodeError, UnicodeDecodeError):
            complete = False
        if not complete:
            for name in (stats.name, f"{shard}.tar", f"{shard}.parquet"):
                if (shards_dir / name).exists():
                    (shards_dir / name).unlink()
                    removed.append(name)
    return removed


def read_shard_tables(shards_dir: Path, columns: list[str] | None = None) -> pa.Table:
    """All finished shards' metadata rows, with a `shard` column (the shard's 5-digit name)."""
    tables = []
    for shard in shard_ids(shards_dir):
        name = f"{shard:05d}"
        table = pq.read_table(shards_dir / f"{name}.parquet", columns=columns)
        tables.append(table.append_column("shard", pa.array([name] * table.num_rows, pa.string())))
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="default")
