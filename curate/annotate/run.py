"""The annotate stage: annotations/NNNNN.parquet for each finished pool shard, one row per
row of shards/NNNNN.parquet (failures included; joins are on uid):

    uid               the sample's uid
    caption_language  ISO 639-1 code of the caption's language (curate.annotate.language), null
                      when it cannot be told
    entry_ids         list<int32>: the metadata entries the caption names (MetaCLIP), ids into
                      annotations/entries.parquet; only with a metadata list
    class_ids         list<int32>: the --classes names the caption names; only with --classes

Nothing here depends on the seed model, so one annotation serves every scores tag. Each
shard is written whole under a temporary name and renamed, so a killed run resumes at the
first shard without a file. annotations.json records the settings (detector, lists and
their sha256) and is written first: a rerun with other settings is refused without
--overwrite, which starts over.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from clikit.errors import UserError
from clikit.versions import tool_version
from curate.annotate.entries import EntryLists, entry_lists
from curate.annotate.language import CaptionLanguage, detector_description
from curate.annotate.matching import EntryMatcher
from curate.download.pool import require_finished_shards
from shards.atomic import replacing, write_json_atomic
from shards.layout import Pool
from shards.storage import StoragePath, open_root, read_parquet, remove_tree

ANNOTATIONS_VERSION = 1  # bump when the same settings would write other columns or values
BATCH = 8192  # captions per language-detection call


@dataclass
class AnnotateResult:
    shards_annotated: int
    shards_skipped: int
    rows: int
    seconds: float
    columns: list[str]
    warning: str | None = None


def _settings(lists: EntryLists) -> dict:
    return {"version": ANNOTATIONS_VERSION, "language": detector_description(), **lists.describe()}


def _start(pool: Pool, settings: dict, lists: EntryLists, overwrite: bool) -> None:
    """Check (or write) annotations.json and entries.parquet before any shard is written."""
    import json

    if pool.annotations_json.is_file():
        old = json.loads(pool.annotations_json.read_text())
        if old.get("settings") == settings:
            return
        if not overwrite:
            raise UserError(f"{pool.annotations_dir} holds annotations made with other settings (language "
                            "detector, --metadata or --classes); pass --overwrite to annotate again")
    if pool.annotations_dir.exists():
        pool.annotations_json.unlink(missing_ok=True)  # first, so a kill below leaves no stale settings
        remove_tree(pool.annotations_dir)
    rows = [("metadata", lists.metadata or []), ("classes", lists.classes or [])]
    table = pa.table({
        "list": [name for name, entries in rows for _ in entries],
        "id": pa.array([i for _, entries in rows for i in range(len(entries))], pa.int32()),
        "entry": [e for _, entries in rows for e in entries],
    })
    with replacing(pool.annotation_entries) as tmp:
        pq.write_table(table, tmp)
    write_json_atomic(pool.annotations_json, {"settings": settings, "tool_version": tool_version()})


def _schema(lists: EntryLists) -> pa.Schema:
    fields = [("uid", pa.string()), ("caption_language", pa.string())]
    if lists.metadata is not None:
        fields.append(("entry_ids", pa.list_(pa.int32())))
    if lists.classes is not None:
        fields.append(("class_ids", pa.list_(pa.int32())))
    return pa.schema(fields)


def annotate_shard(captions: list[str | None], language: CaptionLanguage, metadata: EntryMatcher | None,
                   classes: EntryMatcher | None) -> dict[str, list]:
    """The annotation columns (but uid) of one shard's captions."""
    columns: dict[str, list] = {"caption_language": []}
    for start in range(0, len(captions), BATCH):
        columns["caption_language"] += language.codes(captions[start:start + BATCH])
    if metadata is not None:
        columns["entry_ids"] = [metadata.ids(c) for c in captions]
    if classes is not None:
        columns["class_ids"] = [classes.ids(c) for c in captions]
    return columns


def annotate_pool(pool: str | StoragePath, metadata: str | None = None, classes: str | Path | None = None,
                  overwrite: bool = False, progress: bool = True) -> AnnotateResult:
    """Annotate every finished shard of `pool` that has no annotations file yet."""
    from tqdm import tqdm

    root = open_root(pool)
    if not root.is_dir():
        raise UserError(f"pool {pool} is not a directory; pass the folder `curate download` wrote")
    layout = Pool(root)
    shards = require_finished_shards(layout)
    lists, warning = entry_lists(metadata, Path(classes) if classes is not None else None)
    _start(layout, _settings(lists), lists, overwrite)
    schema = _schema(lists)
    pending = [s for s in shards if not layout.annotations_parquet(s).is_file()]
    result = AnnotateResult(0, len(shards) - len(pending), 0, 0.0, schema.names, warning)
    if not pending:
        return result
    started = time.perf_counter()
    language = CaptionLanguage()
    metadata_matcher = EntryMatcher(lists.metadata) if lists.metadata is not None else None
    class_matcher = EntryMatcher(lists.classes) if lists.classes is not None else None
    for shard in tqdm(pending, desc="annotate", unit=" shards", disable=not progress, leave=False):
        rows = read_parquet(layout.shard_parquet(shard), columns=["uid", "caption"])
        captions = rows.column("caption").to_pylist()
        columns = annotate_shard(captions, language, metadata_matcher, class_matcher)
        table = pa.table({"uid": rows.column("uid"), **columns}, schema=schema)
        with replacing(layout.annotations_parquet(shard)) as tmp:
            pq.write_table(table, tmp)
        result.shards_annotated += 1
        result.rows += table.num_rows
    result.seconds = time.perf_counter() - started
    return result
