"""Write a file so that readers see the old one or the complete new one, never a half.

Every stage marks work finished by a file's presence (a shard's parquet, a manifest, a
checkpoint), so every stage writes through here: into a hidden temporary name beside the
target, fsync, then one rename. A killed writer leaves only the temporary name, which the
next run overwrites.

The one temporary-name rule: `NAME` is written as `.NAME.partial` (`temporary_name`); a
folder, which cannot be overwritten in one step, as `.NAME.partial-PID`
(`temporary_dir`). `leftovers(folder)` finds what a killed writer left under either rule.
"""
from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
from pathlib import Path
from typing import Any, Iterator, TypeVar

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


def leftovers(folder: Path) -> list[Path]:
    """What killed writers left in `folder`: temporary files and folders of either rule."""
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f".*{PARTIAL_SUFFIX}")) + sorted(folder.glob(f".*{PARTIAL_SUFFIX}-*"))


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed over `path`."""
    path = Path(path)
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
def replacing_dir(path: Path) -> Iterator[Path]:
    """Yield a new, empty temporary folder; on success it takes the place of `path`.

    Stale temporary folders of `path` (a killed run's) are removed first. An existing
    `path` is moved aside (`.NAME.old-PID`) before the rename and deleted after it, so
    `path` is either the old folder or the complete new one.
    """
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


def write_text_atomic(path: str | Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, payload: Any, **dump_options: Any) -> None:
    """JSON (indent 2 unless told otherwise), ending in a newline."""
    dump_options.setdefault("indent", 2)
    write_text_atomic(path, json.dumps(payload, **dump_options) + "\n")
