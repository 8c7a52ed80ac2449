"""The subsets a sweep's grid needs, made once with curate's filter before any cell runs
(subsets/sweep-KEY.scores-TAG.dedup-RUN, KEY a top share, a random draw or a recipe with
its parameters: two sweeps on one pool with other scores or dedup
never share one), and reused by later runs when their recipe, parameters and input tags match
and no input file changed since (a stage rerun, e.g. a reclustering, remakes them)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from clikit.errors import UserError
from curate.filter.recipes import load_recipe
from curate.filter.run import inputs_fingerprint, run_filter
from curate.filter.subsets import read_subset_metadata
from pipeline.sweep.spec import Slice, Sweep
from shards.layout import Pool
from shards.storage import parquet_metadata


def _wanted(sweep: Sweep, sl: Slice) -> dict[str, Any]:
    """What the subset's metadata must say for it to be reused."""
    if sl.kind == "top":
        return {"recipe": "top_fraction", "params": {"fraction": sl.fraction, "count": None}}
    if sl.kind == "recipe":
        return {"recipe": sl.recipe, "params": dict(sl.params), "bound": load_recipe(sl.recipe).bind(dict(sl.params))}
    size = {"fraction": sl.size, "count": None} if sl.size <= 1 else {"fraction": None, "count": int(sl.size)}
    return {"recipe": "random_sample", "params": {"within": sl.fraction, "seed": sl.seed, **size}}


def _same_inputs(meta: dict[str, Any], sweep: Sweep) -> bool:
    """The subset was chosen by the sweep's scores tag (when it names one) and dedup run."""
    return (sweep.scores is None or meta.get("scores_tag") == sweep.scores) and meta.get("dedup_name") == sweep.dedup


def _matches(meta: dict[str, Any], wanted: dict[str, Any], sweep: Sweep, inputs: list) -> bool:
    params = wanted.get("bound", wanted["params"])  # a subset records its recipe's every parameter
    return (meta.get("recipe") == Path(wanted["recipe"]).stem and meta.get("params") == params
            and _same_inputs(meta, sweep) and meta.get("inputs") == inputs)


def make_subsets(sweep: Sweep, say: Callable[[str], None] = print) -> tuple[dict[str, int], float]:
    """{subset name: uid count} for every slice of the grid, making those that are missing
    or stale; and the seconds it took."""
    started = time.perf_counter()
    sizes: dict[str, int] = {}
    inputs = inputs_fingerprint(sweep.pool, scores=sweep.scores, dedup=sweep.dedup)
    for sl in {cell.slice for cell in sweep.cells}:
        if sl.subset in sizes:
            continue
        path = Pool(sweep.pool).subset_parquet(sl.subset)
        if sl.kind != "subset":
            wanted = _wanted(sweep, sl)
            meta = read_subset_metadata(sweep.pool, sl.subset) if path.is_file() else None
            if meta is not None and not _same_inputs(meta, sweep):
                raise UserError(f"{path} was chosen by scores/{meta.get('scores_tag')} and dedup/"
                                f"{meta.get('dedup_name')}, not this sweep's scores/{sweep.scores} and dedup/"
                                f"{sweep.dedup} (their names differ only in signs a subset name cannot hold); "
                                "remove it or rename one tag")
            if not (meta is not None and _matches(meta, wanted, sweep, inputs)):
                result = run_filter(sweep.pool, sl.subset, scores=sweep.scores, dedup=sweep.dedup,
                                    recipe=wanted["recipe"], params=wanted["params"], overwrite=path.is_file())
                say(f"   subsets/{sl.subset}: {result.count} samples ({sl.label})")
        try:
            sizes[sl.subset] = parquet_metadata(path).num_rows
        except Exception:  # a named subset that cannot be read fails its own cells, not the sweep
            sizes[sl.subset] = 0
    return sizes, time.perf_counter() - started

