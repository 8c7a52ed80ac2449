"""The dedup stage: find pairs with the chosen methods, group, keep one per group, write
dedup/NAME/groups.parquet and summary.json (temporary folder, renamed when complete).
The arguments and their defaults live in curate/dedup/settings.py."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from curate.dedup.decontam import ImageEmbedder, contaminated_mask, load_eval_embeddings
from curate.dedup.graph import DuplicateGraph, group_ids
from curate.dedup.keep import keep_mask
from curate.dedup.methods import METHOD_ORDER, PairSearch
from curate.dedup.scored_pool import (
    ScoreColumns, ScoredPool, check_embeddings, check_pixel_columns, open_scored_pool, read_score_columns,
)
from curate.dedup.settings import FORMAT_VERSION, DedupSettings, validate
from curate.dedup.vectors import gpu_available
from clikit.errors import UserError
from shards.atomic import replacing_dir
from shards.layout import Pool
from shards.storage import file_stamps, open_root

__all__ = ["DedupSettings", "run_dedup"]


def _fingerprint(scored: ScoredPool, settings: DedupSettings, embeddings: bool) -> list:
    """What the output depends on: each input file's name, size and modification time."""
    files = [scored.scores_path(s) for s in scored.shards]
    if embeddings:
        files += [scored.embeddings_path(s) for s in scored.shards]
    if settings.against:
        against = Path(settings.against)
        files += [against] if against.is_file() else sorted(p for p in against.rglob("*") if p.is_file())
    return file_stamps(files)


def _log(settings: DedupSettings, text: str) -> None:
    if settings.progress:
        print(text, file=sys.stderr, flush=True)


def run_dedup(pool: str | Path, settings: DedupSettings, embed_images: ImageEmbedder | None = None) -> dict[str, Any]:
    """Run one dedup; returns the summary (with "skipped": True when already complete)."""
    validate(settings)
    pool = open_root(pool)
    scored = open_scored_pool(pool, settings.scores)
    if any(m.needs_pixels for m in settings.chosen):
        check_pixel_columns(scored)
    needs_vectors = settings.needs_vectors
    dim = check_embeddings(scored) if needs_vectors else None
    layout = Pool(pool)
    out_dir = layout.dedup_dir(settings.name)
    inputs = _fingerprint(scored, settings, needs_vectors)
    summary_path = layout.dedup_summary(settings.name)
    if summary_path.is_file() and layout.dedup_groups(settings.name).is_file():
        old = json.loads(summary_path.read_text())
        if old.get("args") == settings.recorded() and old.get("inputs") == inputs and old.get("version") == FORMAT_VERSION:
            return {**old, "skipped": True}
        if not settings.overwrite:
            raise UserError(
                f"{out_dir} holds a dedup run with other arguments or older inputs; "
                "pass --overwrite to replace it, or --name NAME to keep both"
            )
    elif out_dir.exists() and not settings.overwrite:
        raise UserError(f"{out_dir} exists but is not a finished dedup run; pass --overwrite to replace it")

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    cols = read_score_columns(scored)
    n = scored.size
    search: dict[str, Any] = {}
    graph, labels, oversized = find_groups(scored, cols, dim, settings, search, timings)
    contaminated = np.zeros(n, dtype=bool)
    if settings.against:
        t0 = time.perf_counter()
        eval_vectors = load_eval_embeddings(settings.against, dim, embed_images)
        contaminated = contaminated_mask(scored, eval_vectors, settings.against_threshold(), gpu_available(),
                                         settings.progress)
        timings["against"] = round(time.perf_counter() - t0, 3)
        search["against_images"] = int(len(eval_vectors))

    gid, gsize = group_ids(labels)
    keep = keep_mask(gid, cols.uid, cols.clip_score, settings.keep, eligible=~contaminated)
    summary = _summary(settings, scored, graph, gid, gsize, keep, contaminated, search, timings, inputs)
    summary["max_group"] = settings.max_group_for(n)
    summary["oversized_groups"] = oversized
    summary["seconds"]["total"] = round(time.perf_counter() - t_start, 3)
    _write_outputs(layout, settings.name, cols.uid, gid, gsize, keep, graph.method_of, contaminated, summary)
    return {**summary, "skipped": False}


def find_groups(scored: ScoredPool, cols: ScoreColumns, dim: int | None, settings: DedupSettings, search: dict,
                timings: dict[str, float]) -> tuple[DuplicateGraph, np.ndarray, list[dict]]:
    """Pairs from every method joined into groups, runaway groups split (graph.py);
    returns the graph, a component label per sample and the oversized-group reports."""
    graph = DuplicateGraph(scored.size)
    job = PairSearch(scored, cols, dim, settings, search)
    for method in settings.chosen:
        t0 = time.perf_counter()
        _log(settings, f"dedup: {method.name} ...")
        a, b = method.find_pairs(job)
        graph.add(a, b, method.name)
        if search.get(method.name, {}).get("dense_tiles"):
            graph.counts_exact = False  # a clique's pairs were replaced by a star: counts are lower bounds
        timings[method.name] = round(time.perf_counter() - t0, 3)
    labels, oversized = graph.split_oversized(graph.components(), settings.max_group_for(scored.size))
    return graph, labels, oversized


def _summary(settings, scored, graph, gid, gsize, keep, contaminated, search, timings, inputs) -> dict[str, Any]:
    in_group = gsize > 1
    per_method = {}
    for method in settings.methods:
        code = METHOD_ORDER.index(method)
        per_method[method] = {
            "pairs": int(graph.pair_counts.get(method, 0)),
            "samples_joined": int((graph.method_of == code).sum()),
            **settings.resolved()[method],
        }
    return {
        "version": FORMAT_VERSION,
        "name": settings.name,
        "scores_tag": settings.scores,
        "args": settings.recorded(),
        "inputs": inputs,
        "samples": int(scored.size),
        "groups": int(np.unique(gid[in_group]).size),
        "duplicate_samples": int(in_group.sum()),
        "kept": int(keep.sum()),
        "removed": int((~keep).sum()),
        "removed_duplicates": int((~keep & ~contaminated).sum()),
        "contaminated": int(contaminated.sum()),
        "per_method": per_method,
        "pair_counts_exact": graph.counts_exact,
        "search": search,
        "seconds": dict(timings),
    }


def _write_outputs(layout: Pool, name: str, uid, gid, gsize, keep, method_of, contaminated, summary) -> None:
    """Write into a temporary sibling folder, then rename it into place (shards/atomic.py)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = pa.array(METHOD_ORDER + (None,), pa.string())
    method = names.take(pa.array(np.where(gsize > 1, method_of, len(METHOD_ORDER))))
    table = pa.table({
        "uid": uid.combine_chunks() if isinstance(uid, pa.ChunkedArray) else uid,
        "group_id": pa.array(gid, pa.int64()),
        "group_size": pa.array(gsize, pa.int64()),
        "keep": pa.array(keep, pa.bool_()),
        "method": method,
        "contaminated": pa.array(contaminated, pa.bool_()),
    })
    # the file names Pool gives inside dedup/NAME; groups.parquet marks the run finished (Pool.dedup_names)
    with replacing_dir(layout.dedup_dir(name), marker=layout.dedup_groups(name).name) as tmp:
        pq.write_table(table, tmp / layout.dedup_groups(name).name)
        (tmp / layout.dedup_summary(name).name).write_text(json.dumps(summary, indent=2))
