"""`curate export`: copy a subset of a pool into a self-contained webdataset shard set.

Layout written (docs/design.md, shard sets):

    OUT/000000.tar ...   <uid>.jpg|png|webp, <uid>.txt (caption), <uid>.json (uid, url,
                         caption, source shard/key, width/height, scores per tag)
    OUT/sizes.json       {"000000.tar": n, ...}, what open_clip's training script reads
    OUT/manifest.json    written last: its presence marks the set complete

Atomic and resumable: the plan (subset, samples per shard, order, seed) is saved first
as OUT/.export-plan.json; each shard is written under a temporary name and renamed when
complete, with its size and sha256 saved in OUT/.export-parts/. A rerun with the same
arguments skips the finished shards; a different plan on an unfinished OUT is refused.
POOL and OUT may be URLs (s3://bucket/set, shards/storage.py): every file is then uploaded
in one put when complete, and the manifest, uploaded last, again marks the set complete.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from curate.catalog import open_catalog
from clikit.errors import UserError
from clikit.versions import tool_version
from curate.filter.subsets import read_subset_metadata
from shards.atomic import leftovers
from shards.layout import Pool
from shards.manifest import brace_pattern, read_manifest, shard_name, write_json_atomic, write_manifest
from shards.reader import IMAGE_EXTENSIONS, TarIndex, UnsafeTarError, index_tar
from shards.storage import StoragePath, open_root, remove_tree
from shards.writer import WrittenShard, write_shard

PLAN_NAME = ".export-plan.json"
PARTS_DIR = ".export-parts"


@dataclass
class ExportResult:
    out: StoragePath
    count: int
    shards: int
    bytes: int
    skipped_shards: int
    missing: int
    manifest: dict[str, Any]


class _ShardReaders:
    """Open pool shards on demand, index each once, keep a few handles open."""

    def __init__(self, pool: Pool, keep_open: int = 8):
        self.pool = pool
        self.keep_open = keep_open
        self.indexes: dict[str, TarIndex] = {}
        self.handles: OrderedDict[str, Any] = OrderedDict()

    def read(self, shard: str, key: str) -> dict[str, bytes]:
        try:
            return self._read(shard, key)
        except UnsafeTarError as exc:
            raise UserError(f"pool shard refused: {exc}; re-download it (delete its _stats.json, "
                            "rerun `curate download`) and rerun the export") from None

    def _read(self, shard: str, key: str) -> dict[str, bytes]:
        if shard not in self.indexes:
            self.indexes[shard] = index_tar(self.pool.shard_tar(shard))
        index = self.indexes[shard]
        if shard in self.handles:
            self.handles.move_to_end(shard)
        else:
            self.handles[shard] = index.path.open("rb")
            if len(self.handles) > self.keep_open:
                self.handles.popitem(last=False)[1].close()
        members = index.members.get(key)
        if members is None:
            raise UserError(f"{index.path} has no member {key}.*: the pool's parquet and tar disagree; rerun `curate download`")
        return {ext: index.read(self.handles[shard], key, ext) for ext in members}

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()
        self.handles.clear()


def _plan_rows(pool: StoragePath, subset: str) -> tuple[list[dict[str, Any]], int, list[str]]:
    """The subset's samples that the pool holds, in pool order, with url/caption/scores."""
    parquet_path = Pool(pool).subset_parquet(subset)
    with open_catalog(pool) as catalog:
        if "samples" not in catalog.views:
            raise UserError(f"{pool} has no shards/*.parquet; is it a pool `curate download` wrote?")
        con = catalog.con
        con.execute("CREATE TEMP TABLE wanted AS SELECT DISTINCT uid FROM read_parquet($path)", {"path": str(parquet_path)})
        wanted = con.sql("SELECT count(*) FROM wanted").fetchall()[0][0]
        tags = catalog.score_tags
        score_cols = ""
        if tags:
            score_cols = ", (SELECT map(list(tag), list(clip_score)) FROM scores_all sc WHERE sc.uid = s.uid) AS scores"
        rows = con.sql(
            "SELECT s.uid, s.url, s.caption, s.shard, s.key, s.width, s.height" + score_cols + " "
            "FROM samples s SEMI JOIN wanted w ON s.uid = w.uid "
            "WHERE s.status = 'success' ORDER BY s.shard, s.key"
        ).fetchall()
    names = ["uid", "url", "caption", "shard", "key", "width", "height"] + (["scores"] if tags else [])
    records = []
    seen: set[str] = set()
    for row in rows:
        record = dict(zip(names, row))
        if record["uid"] in seen:  # a uid downloaded twice: export it once
            continue
        seen.add(record["uid"])
        if tags:
            record["scores"] = {t: (None if v is None else float(v)) for t, v in (record["scores"] or {}).items()}
        records.append(record)
    return records, wanted - len(records), tags


def _samples_for(rows: list[dict[str, Any]], readers: _ShardReaders) -> Iterator[dict[str, bytes]]:
    for row in rows:
        members = readers.read(row["shard"], row["key"])
        image_ext = next((e for e in IMAGE_EXTENSIONS if e in members), None)
        if image_ext is None:
            raise UserError(f"pool shard {row['shard']} has no image for key {row['key']}")
        meta = {
            "uid": row["uid"], "url": row["url"], "caption": row["caption"],
            "source_shard": row["shard"], "source_key": row["key"],
            "width": row["width"], "height": row["height"], "scores": row.get("scores", {}),
        }
        yield {
            "__key__": row["uid"],
            image_ext: members[image_ext],
            "txt": (row["caption"] or "").encode("utf-8"),
            "json": json.dumps(meta, sort_keys=True).encode("utf-8"),
        }


def _part_record(written: WrittenShard) -> dict[str, Any]:
    """What OUT/.export-parts/ and the manifest say of a written shard."""
    return {"name": written.name, "count": written.count, "bytes": written.size, "sha256": written.sha256}


def _check_out(out: StoragePath, plan: dict[str, Any]) -> bool:
    """True if OUT already holds this finished export; errors if it holds something else."""
    manifest = read_manifest(out)
    if manifest is not None:
        if manifest.get("plan") == plan:
            return True
        raise UserError(f"{out} already holds a finished shard set of another subset/options; pick another OUT")
    plan_path = out / PLAN_NAME
    if plan_path.is_file():
        if json.loads(plan_path.read_text()) != plan:
            raise UserError(
                f"{out} holds an unfinished export with other options ({plan_path}); "
                "rerun with the same options to finish it, or remove the folder"
            )
    # (a run killed while writing its plan left only the plan's temporary name: not "not empty")
    elif out.exists() and set(out.iterdir()) - set(leftovers(out)):
        raise UserError(f"{out} exists and is not empty; export into a new folder")
    return False


def _drop_resume_files(out: StoragePath) -> None:
    """Remove the plan and part records once the manifest marks the set finished."""
    (out / PLAN_NAME).unlink(missing_ok=True)
    remove_tree(out / PARTS_DIR)


def export_subset(
    pool: str | StoragePath,
    subset: str,
    out: str | StoragePath,
    samples_per_shard: int = 10000,
    shuffle: bool = False,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> ExportResult:
    """Write the subset's samples as a shard set under `out` (see module docstring)."""
    pool, out = open_root(pool), open_root(out, "shard set")
    if samples_per_shard < 1:
        raise UserError(f"--samples-per-shard must be at least 1, got {samples_per_shard}")
    metadata = read_subset_metadata(pool, subset)
    rows, missing, tags = _plan_rows(pool, subset)
    if not rows:
        raise UserError(f"subset {subset!r} has no sample that this pool downloaded; nothing to export")
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(rows))
        rows = [rows[i] for i in order]
    plan = {
        "subset": subset,
        "subset_count": metadata.get("count"),
        "subset_created": metadata.get("created"),
        "samples": len(rows),
        "first_uid": rows[0]["uid"],
        "samples_per_shard": samples_per_shard,
        "shuffle": shuffle,
        "seed": seed if shuffle else None,
    }
    out.mkdir(parents=True, exist_ok=True)
    if _check_out(out, plan):
        _drop_resume_files(out)  # a run killed just after writing its manifest left them
        manifest = read_manifest(out)
        return ExportResult(out, manifest["count"], len(manifest["shards"]), sum(s["bytes"] for s in manifest["shards"]),
                            len(manifest["shards"]), manifest.get("missing", 0), manifest)
    write_json_atomic(out / PLAN_NAME, plan)
    parts = out / PARTS_DIR
    parts.mkdir(parents=True, exist_ok=True)

    readers = _ShardReaders(Pool(pool))
    shards, skipped = [], 0
    try:
        for index, start in enumerate(range(0, len(rows), samples_per_shard)):
            chunk = rows[start : start + samples_per_shard]
            name = shard_name(index)
            part = parts / f"{name}.json"
            if (out / name).is_file() and part.is_file():  # finished by an earlier run
                shards.append(json.loads(part.read_text()))
                skipped += 1
            else:
                # the part record is saved before the rename: a shard under its final name
                # always has one, so a rerun can trust it
                written = write_shard(out / name, _samples_for(chunk, readers),
                                      before_rename=lambda w, part=part: write_json_atomic(part, _part_record(w)))
                shards.append(_part_record(written))
            if progress:
                progress(len(chunk))
    finally:
        readers.close()

    seed_models = {}
    for tag in tags:
        try:
            seed_models[tag] = json.loads(Pool(pool).model_json(tag).read_text())
        except (OSError, ValueError):
            seed_models[tag] = None
    manifest = {
        "count": sum(s["count"] for s in shards),
        "shards": shards,
        "train_data": brace_pattern(out.resolve(), len(shards)),
        "missing": missing,
        "plan": plan,
        "subset": {
            "name": subset,
            "recipe": metadata.get("recipe"),
            "sql": metadata.get("sql"),
            "candidates_sql": metadata.get("candidates_sql"),
            "params": metadata.get("params"),
            "counts": metadata.get("counts"),
            "imported_from": metadata.get("imported_from"),
        },
        "seed_model": {"tag": metadata.get("scores_tag"), "models": seed_models},
        "source_pool": str(pool.resolve()),
        "tool": {"name": "clipcurate", "version": tool_version()},
    }
    write_manifest(out, manifest)
    _drop_resume_files(out)
    return ExportResult(out, manifest["count"], len(shards), sum(s["bytes"] for s in shards), skipped, missing, manifest)
