"""The subsets a sweep's grid needs, made once with curate's filter (subsets/sweep-*)
before any cell runs, and reused by later runs of the same sweep when their recipe,
parameters and input tags match."""
from __future__ import annotations

import time
from typing import Any, Callable

from curate.filter.run import run_filter
from curate.filter.subsets import read_subset_metadata
from pipeline.sweep.spec import Slice, Sweep
from shards.layout import Pool
from shards.storage import parquet_metadata


def _wanted(sweep: Sweep, sl: Slice) -> dict[str, Any]:
    """What the subset's metadata must say for it to be reused."""
    if sl.kind == "top":
        return {"recipe": "top_fraction", "params": {"fraction": sl.fraction, "count": None}}
    size = {"fraction": sl.size, "count": None} if sl.size <= 1 else {"fraction": None, "count": int(sl.size)}
    return {"recipe": "random_sample", "params": {"within": sl.fraction, "seed": sl.seed, **size}}


def _matches(meta: dict[str, Any], wanted: dict[str, Any], sweep: Sweep) -> bool:
    return (meta.get("recipe") == wanted["recipe"] and meta.get("params") == wanted["params"]
            and (sweep.scores is None or meta.get("scores_tag") == sweep.scores)
            and meta.get("dedup_name") == sweep.dedup)


def make_subsets(sweep: Sweep, say: Callable[[str], None] = print) -> tuple[dict[str, int], float]:
    """{subset name: uid count} for every slice of the grid, making those that are missing
    or stale; and the seconds it took."""
    started = time.perf_counter()
    sizes: dict[str, int] = {}
    for sl in {cell.slice for cell in sweep.cells}:
        if sl.subset in sizes:
            continue
        path = Pool(sweep.pool).subset_parquet(sl.subset)
        if sl.kind != "subset":
            wanted = _wanted(sweep, sl)
            if not (path.is_file() and _matches(read_subset_metadata(sweep.pool, sl.subset), wanted, sweep)):
                result = run_filter(sweep.pool, sl.subset, scores=sweep.scores, dedup=sweep.dedup,
                                    recipe=wanted["recipe"], params=wanted["params"], overwrite=path.is_file())
                say(f"   subsets/{sl.subset}: {result.count} samples ({sl.label})")
        try:
            sizes[sl.subset] = parquet_metadata(path).num_rows
        except Exception:  # a named subset that cannot be read fails its own cells, not the sweep
            sizes[sl.subset] = 0
    return sizes, time.perf_counter() - started

