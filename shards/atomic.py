"""Write a file so that readers see the old one or the complete new one, never a half.

Every stage marks work finished by a file's presence (a shard's parquet, a manifest, a
checkpoint), so every stage writes through here: into a hidden temporary name beside the
target, fsync, then one rename. A killed writer leaves only the temporary name, which the
next run overwrites.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


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


def write_text_atomic(path: str | Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, payload: Any, **dump_options: Any) -> None:
    """JSON (indent 2 unless told otherwise), ending in a newline."""
    dump_options.setdefault("indent", 2)
    write_text_atomic(path, json.dumps(payload, **dump_options) + "\n")
