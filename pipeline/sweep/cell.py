"""One cell: a `train run` (train.loop.run_training) with its eval, resumed from its last
checkpoint when a killed sweep left it half done, its error recorded when it fails.
Runs in the sweep's process, in a pool worker or in a Ray task: everything it needs comes in
its arguments and everything it returns is plain data."""
from __future__ import annotations

import json
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

from clikit.bounded import load_yaml
from shards.layout import RunDir
from shards.storage import StoragePath, as_path
from train.config import TrainConfig
from train.loop import run_training


def cell_config(cell, run_dir: Path, pool: StoragePath, eval_dir: Path | None, retrieval: str | None,
                steps: int, threads: int | None, cost: tuple[int, int] | None = None):
    """The TrainConfig of `cell` (resume on; a checkpoint about every quarter of the run);
    `cost`: its step FLOPs as the sweep measured them once for all cells like it."""
    fields: dict[str, Any] = {"progress": False, **cell.train}
    fields.setdefault("checkpoint_every", max(1, steps // 4))  # a killed cell loses at most a quarter
    if threads and "threads" not in cell.train:
        fields["threads"] = threads
    if cost is not None:
        fields.update(flops_per_step=int(cost[0]), flops_per_step_unmasked=int(cost[1]))
    budget = {"budget": f"{cell.budget:.6g}"} if cell.budget_kind == "flops" else {"samples": str(int(cell.budget))}
    return TrainConfig(data=str(pool), out=str(run_dir), model=cell.model, strategy=cell.strategy,
                       subset=cell.slice.subset,
                       seed=cell.seed, eval_dir=str(eval_dir) if eval_dir else None, retrieval_data=retrieval,
                       resume=True, **budget, **fields)


def step_seconds(metrics: Path) -> float:
    """Seconds spent in training steps: each metrics.jsonl window's samples over its rate."""
    total, previous = 0.0, None
    if not metrics.is_file():
        return 0.0
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        window = record["samples"] - (previous if previous is not None else 0)
        previous = record["samples"]
        if record.get("samples/s"):
            total += window / record["samples/s"]
    return total


def run_cell(cell, run_dir: str, pool: str, eval_dir: str | None, retrieval: str | None, steps: int,
             threads: int | None = None, cost: tuple[int, int] | None = None) -> dict[str, Any]:
    """Train and evaluate `cell` in RUN_DIR; {status, error, summary, config, timings (wall_s,
    run_s: inside run_training, eval_s: evaluating, train_s: training steps)}. Never raises
    for the cell's own failure: a sweep goes on past a failed cell."""
    started = time.perf_counter()
    out = Path(run_dir)
    run = RunDir(out)
    result: dict[str, Any] = {"status": "ok", "error": None, "resumed": False}
    try:
        if run.finished:
            summary = json.loads(run.summary_json.read_text())  # finished; only its record was lost
            result["config"] = _saved_config(run)
        else:
            if out.exists() and not run.checkpoints():
                shutil.rmtree(out)  # killed before its first checkpoint: start clean, not appended to
            result["resumed"] = out.exists()
            cfg = cell_config(cell, out, as_path(pool), Path(eval_dir) if eval_dir else None, retrieval, steps, threads,
                              cost)
            result["config"] = cfg.to_dict()
            run_started = time.perf_counter()
            summary = run_training(cfg)
            result["run_s"] = time.perf_counter() - run_started
            result["eval_s"] = summary.pop("eval_s", 0.0)
        result["summary"] = summary
    except BaseException as exc:  # noqa: BLE001 - a cell's failure is data; KeyboardInterrupt stops the sweep
        if isinstance(exc, KeyboardInterrupt):
            raise
        result.update(status="failed", error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                      traceback=traceback.format_exc(limit=8), summary={})
    result["wall_s"] = time.perf_counter() - started
    result["train_s"] = step_seconds(run.metrics_jsonl)
    return result


def _saved_config(run: RunDir) -> dict[str, Any]:
    path = run.config_yaml
    return load_yaml(path) if path.is_file() else {}
