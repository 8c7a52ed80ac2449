"""Shards in key order, whatever order the downloads finished in.

img2dataset writes each sample when its download completes, so two downloads of the same
input give the same samples in a different order inside each shard, and everything that
reads shards in order (scoring rows, the training stream) differs between the two. A
finished shard is rewritten here in key order (img2dataset's keys are zero-padded, so
text order is numeric order) before it gets its final name: the same input then gives
the same shards, and the same training run.
"""
from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from shards.reader import split_member_name


def _staging(path: Path) -> Path:
    """A hidden *.partial name next to `path`: the download's cleanup removes it if a kill
    leaves it behind."""
    return path.with_name(f".{path.name.lstrip('.')}.sorting.partial")


def _sorted(values: list[str]) -> bool:
    return all(a <= b for a, b in zip(values, values[1:]))


def tar_in_key_order(path: Path) -> bool:
    """Rewrite the tar at `path` with samples in key order; False when it already was.

    A sample's members keep their relative order (the sort is stable)."""
    with tarfile.open(path) as source:
        members = source.getmembers()
        keys = [split_member_name(m.name)[0] for m in members]
        if _sorted(keys):
            return False
        staging = _staging(path)
        with tarfile.open(staging, "w", format=source.format) as target:
            for index in sorted(range(len(members)), key=lambda i: keys[i]):
                member = members[index]
                target.addfile(member, source.extractfile(member) if member.isfile() else None)
    os.replace(staging, path)
    return True


def parquet_in_key_order(path: Path) -> bool:
    """Rewrite the parquet at `path` with rows sorted by `key`; False when they already were."""
    table = pq.read_table(path)
    keys = table.column("key")
    if len(keys) < 2 or pc.all(pc.less_equal(keys[:-1], keys[1:])).as_py() is not False:
        return False
    staging = _staging(path)
    pq.write_table(table.sort_by("key"), staging)
    os.replace(staging, path)
    return True


def shard_in_key_order(tar: Path, parquet: Path) -> None:
    """Both files of one shard in key order (each rewritten only if it was not)."""
    tar_in_key_order(tar)
    parquet_in_key_order(parquet)
