"""Shard-set manifests: what an export wrote, enough to verify and reproduce it.

`manifest.json` is written last (temporary name, then rename), so its presence is what
marks a shard set complete. `sizes.json` ({"000000.tar": n, ...}) is the file open_clip's
training script reads to count samples.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from shards.atomic import write_json_atomic  # noqa: F401 - re-exported for curate.export
from shards.storage import StoragePath, as_path

MANIFEST_NAME = "manifest.json"
SIZES_NAME = "sizes.json"
FORMAT = "clipcurate-shardset/1"


def shard_name(index: int) -> str:
    """The file name of shard `index` in a shard set: 000000.tar, 000001.tar, ..."""
    return f"{index:06d}.tar"


def brace_pattern(directory: str | StoragePath, shard_count: int) -> str:
    """The `--train-data` pattern open_clip expects: DIR/{000000..00000K}.tar (DIR may be a URL)."""
    last = shard_name(max(shard_count - 1, 0))[:-4]
    return f"{as_path(directory)}/{{000000..{last}}}.tar"


def sha256_file(path: str | StoragePath, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with as_path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: str | StoragePath, manifest: dict[str, Any]) -> None:
    """Write sizes.json, then manifest.json last: the manifest marks the set complete."""
    directory = as_path(directory)
    sizes = {shard["name"]: shard["count"] for shard in manifest["shards"]}
    write_json_atomic(directory / SIZES_NAME, sizes)
    write_json_atomic(directory / MANIFEST_NAME, {"format": FORMAT, **manifest})


def read_manifest(directory: str | StoragePath) -> dict[str, Any] | None:
    """The manifest of a finished shard set, or None when there is none (unfinished)."""
    path = as_path(directory) / MANIFEST_NAME
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)
