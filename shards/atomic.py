"""Write a file so that readers see the old one or the complete new one, never a half.

Every stage marks work finished by a file's presence (a shard's parquet, a manifest, a
checkpoint), so every stage writes through here: into a hidden temporary name beside the
target, fsync, then one rename. A killed writer leaves only the temporary name, which the
next run overwrites.

The one temporary-name rule: `NAME` is written as `.NAME.partial` (`temporary_name`); a
folder, which cannot be overwritten in one step, as `.NAME.partial-PID`
(`temporary_dir`). `leftovers(folder)` finds what a killed writer left under either rule.

On an object store (a remote path, shards/storage.py) there is no rename, but an object
PUT is already all or nothing: the file is written under its temporary name in a local
staging folder, then uploaded to the final key in one put, so readers again see the old
object or the whole new one, and a killed writer leaves nothing in the store. A folder
(`replacing_dir`) is the one thing a store cannot swap at once: its old files are removed,
then the new ones uploaded with the caller's `marker` (the file whose presence marks the
folder finished) last, so a reader sees the complete new folder or no finished one.
"""
from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, TypeVar

from shards.storage import StoragePath, as_path, is_remote, remove_tree, upload

PathLike = TypeVar("PathLike", str, Path)

PARTIAL_SUFFIX = ".partial"


def temporary_name(path: PathLike) -> PathLike:
    """`DIR/NAME` -> `DIR/.NAME.partial`, beside the target so the rename stays on one disk.

    A string stays a string with '/' separators: img2dataset's writer hands fsspec paths
    (possibly remote URLs), which must not go through pathlib.
    """
    if isinstance(path, str):
        head, tail = posixpath.split(path)
        return posixpath.join(head, f".{tail}{PARTIAL_SUFFIX}")
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")


def temporary_dir(path: Path) -> Path:
    """`DIR/NAME` -> `DIR/.NAME.partial-PID`: a folder's temporary name (one per writer)."""
    return path.with_name(f"{temporary_name(path).name}-{os.getpid()}")


def leftovers(folder: StoragePath) -> list[StoragePath]:
    """What killed writers left in `folder`: temporary files and folders of either rule."""
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f".*{PARTIAL_SUFFIX}")) + sorted(folder.glob(f".*{PARTIAL_SUFFIX}-*"))


@contextlib.contextmanager
def _staged(name: str) -> Iterator[Path]:
    """A local staging folder for a file or folder bound for an object store, removed after."""
    staging = Path(tempfile.mkdtemp(prefix="clipcurate-stage-"))
    try:
        yield staging / name
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def replacing(path: str | StoragePath) -> Iterator[Path]:
    """Yield a temporary local path to write; on success it is fsynced and renamed over
    `path` (on an object store: uploaded to `path` in one put)."""
    path = as_path(path)
    if is_remote(path):
        with _staged(temporary_name(path.name)) as tmp:
            yield tmp
            upload(tmp, path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def replacing_dir(path: StoragePath, marker: str | None = None) -> Iterator[Path]:
    """Yield a new, empty temporary folder; on success it takes the place of `path`.

    Stale temporary folders of `path` (a killed run's) are removed first. An existing
    `path` is moved aside (`.NAME.old-PID`) before the rename and deleted after it, so
    `path` is either the old folder or the complete new one. On an object store the folder
    is staged locally, the old files removed, and the new ones uploaded, `marker` (the
    file name that marks the folder finished) last.
    """
    if is_remote(path):
        with _staged(temporary_dir(Path(path.name)).name) as tmp:
            tmp.mkdir()
            yield tmp
            remove_tree(path)
            for local in sorted(tmp.iterdir(), key=lambda p: (p.name == marker, p.name)):
                upload(local, path / local.name)
        return
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f"{temporary_name(path).name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = temporary_dir(path)
    tmp.mkdir()
    yield tmp
    old = None
    if path.exists():
        old = parent / f".{path.name}.old-{os.getpid()}"
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: str | StoragePath, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | StoragePath, payload: Any, **dump_options: Any) -> None:
    """JSON (indent 2 unless told otherwise), ending in a newline."""
    dump_options.setdefault("indent", 2)
    write_text_atomic(path, json.dumps(payload, **dump_options) + "\n")
