"""Pool shards in key order, whatever order the downloads finished in, and retried
samples merged back into their shards in that order.

img2dataset writes each sample when its download completes, so two downloads of the same
input give the same samples in a different order inside each shard, and everything that
reads shards in order (scoring rows, the training stream) differs between the two. A
finished shard is rewritten here in key order (img2dataset's keys are zero-padded, so
text order is numeric order) before it gets its final name: the same input then gives
the same shards, and the same training run.
"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Mapping

import pyarrow.compute as pc
import pyarrow.parquet as pq

from shards.atomic import replacing
from shards.storage import StoragePath, as_path
from shards.reader import split_member_name


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
        with replacing(path) as staging, tarfile.open(staging, "w", format=source.format) as target:
            for index in sorted(range(len(members)), key=lambda i: keys[i]):
                member = members[index]
                target.addfile(member, source.extractfile(member) if member.isfile() else None)
    return True


def parquet_in_key_order(path: Path) -> bool:
    """Rewrite the parquet at `path` with rows sorted by `key`; False when they already were."""
    table = pq.read_table(path)
    keys = table.column("key")
    if len(keys) < 2 or pc.all(pc.less_equal(keys[:-1], keys[1:])).as_py() is not False:
        return False
    with replacing(path) as staging:
        pq.write_table(table.sort_by("key"), staging)
    return True


def shard_in_key_order(tar: Path, parquet: Path) -> None:
    """Both files of one shard in key order (each rewritten only if it was not)."""
    tar_in_key_order(tar)
    parquet_in_key_order(parquet)


def merge_tar(source: StoragePath, target: Path, replacements: Mapping[str, list[tuple[str, bytes]]]) -> None:
    """Write `source` to `target` with the samples of `replacements` (key -> [(suffix,
    bytes)], possibly empty) put in place of the members of those keys, in key order.

    Replaced members are dropped before the new ones are added, never duplicated, so a
    merge that was interrupted can simply run again.
    """
    replaced = set(replacements)
    with as_path(source).open("rb") as handle, tarfile.open(fileobj=handle) as src, tarfile.open(target, "w") as dst:
        entries: list[tuple[str, tarfile.TarInfo | tuple[str, bytes]]] = [
            (key, member) for member in src.getmembers() if (key := split_member_name(member.name)[0]) not in replaced
        ]
        entries += [(key, part) for key in replaced for part in replacements[key]]
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
