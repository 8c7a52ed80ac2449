"""One cell: a `train run` (train.loop.run_training) with its eval, resumed from its last
checkpoint when a killed sweep left it half done, its error recorded when it fails.
Runs in the sweep's process, in a pool worker or in a Ray task: everything it needs comes in
its arguments and everything it returns is plain data."""
from __future__ import annotations

import json
import os
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
from train.suite.run import eval_suite_command


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


def suite_figures(run_dir: Path, suite: Path) -> tuple[dict[str, Any], float]:
    """(each task's headline and the suite's average, each with its 95% interval and chance;
    seconds spent) of the run's final model on `suite`, from RUN/evals/SUITE.json when that
    already holds this final model on this suite's tasks (a resumed sweep), else evaluated
    now (train.suite: clip_benchmark's metrics, bootstrap intervals) and written there."""
    started = time.perf_counter()
    run = RunDir(run_dir)
    path = run.suite_eval(suite.name)
    fresh = path.is_file() and path.stat().st_mtime_ns >= run.final_pt.stat().st_mtime_ns
    result = json.loads(path.read_text()) if fresh else None
    tasks = sorted(str(p.resolve()) for p in suite.iterdir() if p.is_dir() and not p.name.startswith("."))
    if (result is None or Path(result["checkpoint"]).resolve() != run.final_pt.resolve()
            or sorted(str(Path(t["path"]).resolve()) for t in result["tasks"].values()) != tasks):
        result, _ = eval_suite_command(str(run.final_pt), str(suite), None, None, "auto", 1000)
    figures = {name: {"value": task["metrics"]["main_metric"], "ci95": task["ci95"]["main_metric"],
                      "chance": task["chance"], "metric": task["main_metric_name"]}
               for name, task in result["tasks"].items()}
    average = result["average"]
    figures["average"] = {"value": average["main_metric"], "ci95": average["ci95"], "metric": "main_metric",
                          "chance": sum(t["chance"] for t in result["tasks"].values()) / len(result["tasks"])}
    return figures, time.perf_counter() - started


def run_cell(cell, run_dir: str, pool: str, eval_dir: str | None, retrieval: str | None, steps: int,
             threads: int | None = None, cost: tuple[int, int] | None = None,
             eval_suite: str | None = None) -> dict[str, Any]:
    """Train and evaluate `cell` in RUN_DIR; {status, error, summary, suite (with `eval_suite`:
    pipeline.sweep.cell.suite_figures), config, timings (wall_s, run_s: inside run_training
    and the suite's eval, eval_s: evaluating, the suite included, train_s: training steps)}. Never raises for the
    cell's own failure: a sweep goes on past a failed cell."""
    started = time.perf_counter()
    out = Path(run_dir)
    run = RunDir(out)
    # Where it ran: the CPUs and GPU the executor pinned it to (`--jobs N`).
    result: dict[str, Any] = {"status": "ok", "error": None, "resumed": False,
                              "placement": {"cpus": sorted(os.sched_getaffinity(0)),
                                            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}}
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
        if eval_suite:
            result["suite"], seconds = suite_figures(out, Path(eval_suite))
            result["eval_s"] = (result.get("eval_s") or 0.0) + seconds
            if "run_s" in result:  # the suite is the run's own work too: not the sweep's overhead
                result["run_s"] += seconds
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
