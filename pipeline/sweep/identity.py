"""A cell's identity: everything that changes its result, so that a rerun into the same
folder reuses a finished cell only when it would compute the same thing.

It is the cell's train run config (train and strategy options, model, budget, seed, the
pool, the eval folder and retrieval data; less what only says how and where it runs), the
scores tag and the dedup run its slice was chosen by, a digest of its subset's uids, and the
eval suite folder it is judged on.
DIR/cells/<id>.identity.json holds it from the moment the cell is started: a finished or
killed cell whose identity differs from the new one is run again from scratch."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from shards.layout import Pool

# TrainConfig fields that change how or where a cell runs, not what it computes: its folder,
# resuming (exact), progress, CPU threads (--jobs splits the cores), checkpoint and log cadence.
NOT_IDENTITY = ("out", "resume", "progress", "threads", "checkpoint_every", "keep_checkpoints", "log_every",
                "eval_every")


def subset_digest(pool: Path, name: str) -> str:
    """sha256 of the subset's uids in sorted order (its content, however the file was written);
    "unreadable" for a subset that cannot be read (its cells fail on their own)."""
    try:
        uids = pq.read_table(Pool(pool).subset_parquet(name), columns=["uid"])["uid"].to_pylist()
    except Exception:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        return "unreadable"
    digest = hashlib.sha256()
    for uid in sorted(map(str, uids)):
        digest.update(uid.encode() + b"\n")
    return digest.hexdigest()


def cell_identity(config: dict[str, Any], scores: str | None, dedup: str | None, digest: str,
                  eval_suite: str | None = None) -> dict[str, Any]:
    """The identity of a cell run with `config` (its TrainConfig as a dict) on a slice chosen
    by scores/`scores` and dedup/`dedup` whose uids hash to `digest`, judged on the suite
    folder `eval_suite`: plain JSON data."""
    train = {k: v for k, v in sorted(config.items()) if k not in NOT_IDENTITY}
    return json.loads(json.dumps({"train": train, "scores": scores, "dedup": dedup, "subset_uids": digest,
                                  "eval_suite": eval_suite}))


def identity_changes(saved: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """What differs between a cell's recorded identity and its new one, as `key: old -> new`
    (`train.lr: 0.01 -> 0.02`); ["no identity recorded"] for a cell that has none."""
    if saved is None:
        return ["no identity recorded"]
    changes = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += [f"{key}.{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                        if old.get(k) != new.get(k)]
        elif old != new:
            changes.append(f"{key}: {old!r} -> {new!r}")
    return changes
