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
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from curate.catalog import check_parquet_files
from clikit.errors import UserError
from clikit.versions import tool_version
from curate.filter.subsets import read_subset_metadata
from shards.atomic import leftovers
from shards.layout import Pool
from shards.manifest import brace_pattern, read_manifest, shard_name, write_json_atomic, write_manifest
from shards.reader import IMAGE_EXTENSIONS, TarIndex, UnsafeTarError, index_tar
from shards.storage import StoragePath, open_root, parquet_schema, read_parquet, remove_tree
from shards.uid_arrays import SortedUids, canonical_pairs
from shards.writer import WrittenShard, write_shard

if TYPE_CHECKING:
    import pyarrow as pa

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


# What a sample's .json carries from the pool parquet (besides scores per tag).
SAMPLE_COLUMNS = ("uid", "url", "caption", "key", "width", "height")
ABSENT, SCORED, NULL = 0, 1, 2  # a subset uid under one scoring tag: no row, a score, a null score


@dataclass
class ExportPlan:
    """The samples to export, in order, as positions into the pool's shard parquet: a few
    integers a sample, never a Python object (a 40M-sample subset plans in ~1 GB)."""

    shards: list[str]  # the pool shards ("00000", ...) in the order planned
    shard: np.ndarray  # per sample: index into `shards` (int32)
    row: np.ndarray  # per sample: its row in that shard's parquet
    member: np.ndarray  # per sample: its index in the subset's sorted uids
    scores: dict[str, tuple[np.ndarray, np.ndarray]]  # tag -> (clip_score, SCORED/NULL/absent) per subset uid
    missing: int  # subset uids the pool did not download

    def __len__(self) -> int:
        return len(self.row)

    def reordered(self, order: np.ndarray) -> "ExportPlan":
        return ExportPlan(self.shards, self.shard[order], self.row[order], self.member[order], self.scores, self.missing)


def _read_columns(path: StoragePath, names: tuple[str, ...]) -> "pa.Table":
    """These columns of a shard parquet; one a shard lacks is all null (as the catalog's
    union_by_name view has it)."""
    import pyarrow as pa

    have = set(parquet_schema(path).names)
    table = read_parquet(path, columns=[c for c in names if c in have])
    for name in names:
        if name not in have:
            table = table.append_column(name, pa.nulls(table.num_rows))
    return table.select(list(names))


def _members(uids, wanted: SortedUids) -> np.ndarray:
    """Each uid's index in `wanted` (-1: not in it), chunk by chunk."""
    parts = [wanted.positions(*canonical_pairs(chunk)) for chunk in uids.chunks]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def plan_export(pool: StoragePath, subset: str) -> tuple[ExportPlan, list[str]]:
    """The subset's samples that the pool holds, in pool order (shard, then key), each uid
    once (the first copy when downloaded twice), and each subset uid's score per tag.

    The subset is read as its sorted uid pairs (shards.uid_arrays) and every pool shard's
    uid column is looked up in them, a shard at a time: memory is the pairs, one shard's
    key columns and a few integers per planned sample.
    """
    import pyarrow.compute as pc

    layout = Pool(pool)
    shard_files = check_parquet_files([layout.shard_parquet(s) for s in layout.finished_shards()], "samples")
    if not shard_files:
        raise UserError(f"{pool} has no shards/*.parquet; is it a pool `curate download` wrote?")
    wanted = SortedUids.from_parquet(layout.subset_parquet(subset))
    seen = np.zeros(len(wanted), dtype=bool)
    shards, shard_idx, rows, members = [], [], [], []
    for path in shard_files:
        table = _read_columns(path, ("uid", "key", "status"))
        member = _members(table.column("uid"), wanted)
        ok = pc.fill_null(pc.equal(table.column("status"), "success"), False).to_numpy(zero_copy_only=False)
        picked = np.flatnonzero((member >= 0) & ok)
        if picked.size == 0:
            continue
        picked = picked[pc.sort_indices(table.column("key").take(picked)).to_numpy()]  # key order
        _, first = np.unique(member[picked], return_index=True)  # a uid twice in one shard: its first key
        picked = picked[np.sort(first)]
        picked = picked[~seen[member[picked]]]  # ... or in an earlier shard
        seen[member[picked]] = True
        shard_idx.append(np.full(picked.size, len(shards), dtype=np.int32))
        shards.append(path.stem)
        rows.append(picked)
        members.append(member[picked])
    scores = {}
    tags = layout.score_tags()
    for tag in tags:
        value, scored = np.full(len(wanted), np.nan), np.full(len(wanted), ABSENT, dtype=np.int8)
        files = check_parquet_files([layout.scores_parquet(tag, s) for s in layout.scored_shards(tag)], "scores")
        for path in files:
            table = _read_columns(path, ("uid", "clip_score"))
            member = _members(table.column("uid"), wanted)
            hit = member >= 0
            column = table.column("clip_score")
            score = pc.fill_null(column.cast("float64"), np.nan).to_numpy(zero_copy_only=False)
            value[member[hit]] = score[hit]
            scored[member[hit]] = np.where(pc.is_null(column).to_numpy(zero_copy_only=False), NULL, SCORED)[hit]
        scores[tag] = (value, scored)
    cat = lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype)  # noqa: E731
    plan = ExportPlan(shards, cat(shard_idx, np.int32), cat(rows, np.int64), cat(members, np.int64), scores,
                      len(wanted) - int(seen.sum()))
    return plan, tags


class _PlannedRows:
    """The planned samples' pool columns, read a shard at a time (the last few kept)."""

    def __init__(self, pool: Pool, plan: ExportPlan, keep_open: int = 4):
        self.pool, self.plan, self.keep_open = pool, plan, keep_open
        self.tables: OrderedDict[int, Any] = OrderedDict()

    def _table(self, k: int):
        if k in self.tables:
            self.tables.move_to_end(k)
        else:
            self.tables[k] = _read_columns(self.pool.shard_parquet(self.plan.shards[k]), SAMPLE_COLUMNS)
            if len(self.tables) > self.keep_open:
                self.tables.popitem(last=False)
        return self.tables[k]

    def records(self, start: int, stop: int) -> list[dict[str, Any]]:
        """Samples start..stop of the plan as dicts (uid, url, caption, shard, key, width,
        height, and scores per tag when the pool has scores)."""
        plan = self.plan
        shard, row = plan.shard[start:stop], plan.row[start:stop]
        out: list[dict[str, Any]] = [{} for _ in range(stop - start)]
        for k in np.unique(shard).tolist():
            where = np.flatnonzero(shard == k)
            for at, record in zip(where.tolist(), self._table(k).take(row[where]).to_pylist()):
                out[at] = {**record, "shard": plan.shards[k]}
        if plan.scores:
            member = plan.member[start:stop]
            for at, m in enumerate(member.tolist()):
                out[at]["scores"] = {tag: (None if scored[m] == NULL else float(value[m]))
                                     for tag, (value, scored) in plan.scores.items() if scored[m] != ABSENT}
        return out


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
    planned, tags = plan_export(pool, subset)
    missing = planned.missing
    if not len(planned):
        raise UserError(f"subset {subset!r} has no sample that this pool downloaded; nothing to export")
    if shuffle:
        planned = planned.reordered(np.random.default_rng(seed).permutation(len(planned)))
    rows = _PlannedRows(Pool(pool), planned)
    plan = {
        "subset": subset,
        "subset_count": metadata.get("count"),
        "subset_created": metadata.get("created"),
        "samples": len(planned),
        "first_uid": rows.records(0, 1)[0]["uid"],
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
        for index, start in enumerate(range(0, len(planned), samples_per_shard)):
            stop = min(start + samples_per_shard, len(planned))
            name = shard_name(index)
            part = parts / f"{name}.json"
            if (out / name).is_file() and part.is_file():  # finished by an earlier run
                shards.append(json.loads(part.read_text()))
                skipped += 1
            else:
                chunk = rows.records(start, stop)
                # the part record is saved before the rename: a shard under its final name
                # always has one, so a rerun can trust it
                written = write_shard(out / name, _samples_for(chunk, readers),
                                      before_rename=lambda w, part=part: write_json_atomic(part, _part_record(w)))
                shards.append(_part_record(written))
            if progress:
                progress(stop - start)
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
