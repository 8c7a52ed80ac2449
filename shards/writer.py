"""Write one webdataset shard atomically, hashing the bytes as they are written.

webdataset's TarWriter does the tar encoding; this module adds what a shard set needs on
top: a temporary name renamed only when the shard is complete and fsynced, a fixed mtime
so that the same samples give the same bytes (and the same sha256), and the hash and size
computed in the same pass instead of reading the shard back.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import webdataset as wds

from shards.atomic import replacing
from shards.storage import StoragePath, as_path

FIXED_MTIME = 0  # reproducible bytes: two exports of the same subset hash the same


class _HashingFile:
    """A write-only file wrapper that feeds every byte to sha256 and counts them."""

    def __init__(self, handle):
        self._handle = handle
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._handle.write(data)

    def flush(self) -> None:
        self._handle.flush()


@dataclass(frozen=True)
class WrittenShard:
    name: str
    count: int
    size: int
    sha256: str


def write_shard(
    path: str | StoragePath,
    samples: Iterable[Mapping[str, bytes | str]],
    before_rename: Callable[[WrittenShard], None] | None = None,
) -> WrittenShard:
    """Write samples ({"__key__": key, "jpg": bytes, "txt": bytes, ...}) to `path` atomically.

    The shard is written to its temporary name (shards/atomic.py), fsynced and then
    renamed, so a reader never sees a partial shard under the final name.
    `before_rename(written)` runs just before the rename: a caller that records finished
    shards saves its record there, so a shard under its final name always has one.
    """
    path = as_path(path)
    count = 0
    with replacing(path) as tmp:
        with open(tmp, "wb") as raw:
            hashing = _HashingFile(raw)
            writer = wds.TarWriter(hashing, encoder=False, mtime=FIXED_MTIME, user="", group="")
            for sample in samples:
                writer.write(dict(sample))
                count += 1
            writer.close()
        written = WrittenShard(path.name, count, hashing.size, hashing.sha256.hexdigest())
        if before_rename is not None:
            before_rename(written)
    return written
