"""`curate download --retry-failed`: fetch only failed samples again and merge them into their shards.

A retried sample keeps its shard and key. Each touched shard is rewritten to temporary
names (tar, parquet, stats) and renamed, so an interrupted merge can simply run again:
members being replaced are dropped before the new ones are added, never duplicated.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.download.pool import SHARDS_DIR, read_shard_tables
from shards.reader import split_member_name


def _merge_shard(shard_dir: Path, shard: str, retried: dict[str, dict], retry_tar_members: dict[str, list]) -> None:
    """Rewrite shard `shard` with the retried rows (by key) replacing the old ones."""
    old_tar = shard_dir / f"{shard}.tar"
    new_tar = shard_dir / f".{shard}.tar.partial"
    replaced = set(retried)
    with tarfile.open(old_tar) as src, tarfile.open(new_tar, "w") as dst:
        entries: list[tuple[str, tarfile.TarInfo | tuple[str, bytes]]] = [
            (key, member) for member in src.getmembers() if (key := split_member_name(member.name)[0]) not in replaced
        ]
        entries += [(key, part) for key in replaced for part in retry_tar_members.get(key, [])]
        # One pass in key order (the sort is stable: a sample's members keep their order),
        # so retried samples land where they belong, as a fresh download's would.
        for key, entry in sorted(entries, key=lambda item: item[0]):
            if isinstance(entry, tarfile.TarInfo):
                dst.addfile(entry, src.extractfile(entry))
                continue
            suffix, data = entry
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    table = pq.read_table(shard_dir / f"{shard}.parquet")
    rows = table.to_pylist()
    for i, row in enumerate(rows):
        if row["key"] in retried:
            rows[i] = {name: retried[row["key"]].get(name, row.get(name)) for name in table.column_names}
    new_parquet = shard_dir / f".{shard}.parquet.partial"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), new_parquet)
    stats_path = shard_dir / f"{shard}_stats.json"
    stats = json.loads(stats_path.read_text())
    stats["successes"] = sum(r["status"] == "success" for r in rows)
    stats["failed_to_download"] = sum(r["status"] == "failed_to_download" for r in rows)
    stats["failed_to_resize"] = sum(r["status"] == "failed_to_resize" for r in rows)
    new_stats = shard_dir / f".{shard}_stats.json.partial"
    new_stats.write_text(json.dumps(stats, indent=4))
    os.replace(new_tar, old_tar)
    os.replace(new_parquet, shard_dir / f"{shard}.parquet")
    os.replace(new_stats, stats_path)


def retry_failed_samples(pool: Path, extra_columns: list[str], settings) -> int:
    """Download the pool's failed rows again; returns how many now succeed."""
    from curate.download.run import RETRY_DIR, _run_img2dataset

    shard_dir = pool / SHARDS_DIR
    table = read_shard_tables(shard_dir)
    if table.num_rows == 0:
        return 0
    failed = table.filter(pa.compute.not_equal(table["status"], "success"))
    if failed.num_rows == 0:
        return 0
    retry_root = pool / RETRY_DIR
    shutil.rmtree(retry_root, ignore_errors=True)
    retry_root.mkdir()
    keep = ["uid", "url", "caption", *[c for c in extra_columns if c in failed.column_names]]
    retry_input = failed.select(keep).append_column("orig_key", failed["key"]).append_column("orig_shard", failed["shard"])
    pq.write_table(retry_input, retry_root / "input.parquet")
    retry_shards = retry_root / "shards"
    _run_img2dataset(retry_root / "input.parquet", retry_shards, [*keep[3:], "orig_key", "orig_shard"], settings)
    results = read_shard_tables(retry_shards)
    by_shard: dict[str, dict[str, dict]] = {}
    members: dict[str, list] = {}
    recovered = 0
    for row in results.to_pylist():
        orig_key, orig_shard, retry_key = row.pop("orig_key"), row.pop("orig_shard"), row["key"]
        row.pop("shard", None)
        row["key"] = orig_key
        by_shard.setdefault(orig_shard, {})[orig_key] = {"retry_key": retry_key, **row}
    for shard_file in sorted(retry_shards.glob("*.tar")):
        with tarfile.open(shard_file) as tar:
            for member in tar.getmembers():
                key, suffix = split_member_name(member.name)
                members.setdefault(key, []).append((suffix, tar.extractfile(member).read()))
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
        _merge_shard(shard_dir, shard, rows, tar_members)
    shutil.rmtree(retry_root, ignore_errors=True)
    return recovered
