"""`train sweep`: check the file, make the subsets and measure step FLOPs once, then run the
cells that are not finished (serially, side by side or on Ray), recording each as it ends.

    DIR/results.parquet     one row per cell (pipeline.sweep.results)
    DIR/cells/<id>.json     each finished or failed cell's record: a rerun skips the ok ones
                            whose identity is unchanged (pipeline.sweep.identity)
    DIR/cells/<id>.identity.json  what the cell computes, written when it starts: a rerun
                            whose cell differs runs it again from scratch, never mixes
    DIR/runs/<id>/          each cell's train run (config.yaml, checkpoints, eval.json, ...)
    DIR/sweep.json          the sweep's plan and its shared-work timings
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipeline.sweep.cell import cell_config
from pipeline.sweep.cost import measure_all, planned_steps, step_key
from pipeline.sweep.executors import cpu_count, run_cells
from pipeline.sweep.identity import cell_identity, identity_changes, subset_digest
from pipeline.sweep.results import cell_row, write_results
from pipeline.sweep.spec import Sweep
from pipeline.sweep.subsets import make_subsets
from shards.atomic import write_json_atomic


@dataclass
class SweepOptions:
    jobs: int = 1
    executor: str = "local"
    address: str | None = None
    say: Callable[[str], None] = print


@dataclass
class Progress:
    """Cells done/left and time left, predicted from the planned FLOPs of the cells left."""

    total: int
    jobs: int
    started: float = field(default_factory=time.perf_counter)
    done: int = 0
    failed: int = 0
    seconds: float = 0.0  # wall time of the cells run in this session
    flops: float = 0.0  # their planned FLOPs

    def line(self, cell_id: str, result: dict[str, Any], flops: float, flops_left: float, left: int) -> str:
        self.done += 1
        self.failed += result["status"] != "ok"
        self.seconds += result["wall_s"]
        self.flops += flops
        per_cell = self.seconds / self.done
        # Time left: cells scale with their FLOPs around the mean cell; divided over the parallel jobs.
        eta = (flops_left / self.flops * self.seconds if self.flops else per_cell * left) / max(1, self.jobs)
        figure = (f"top-1 {result['summary'].get('zeroshot_top1', float('nan')):.1%}" if result["status"] == "ok"
                  else f"FAILED {result['error']}")
        return (f"[{self.done}/{self.total} done, {left} left{f', {self.failed} failed' if self.failed else ''}] "
                f"{cell_id}: {figure} in {result['wall_s']:.0f}s | elapsed {_clock(time.perf_counter() - self.started)}"
                f", ~{_clock(eta)} left")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def run_sweep(sweep: Sweep, out: str | Path, options: SweepOptions | None = None) -> dict[str, Any]:
    """Run every unfinished cell of `sweep` into OUT; returns {cells, ok, failed, skipped, timings}."""
    options = options or SweepOptions()
    say = options.say
    out = Path(out).resolve()
    started = time.perf_counter()
    say(f"== sweep {sweep.name}: {len(sweep.cells)} cells in {len(sweep.experiments)} experiment(s) -> {out}")
    costs, flops_s = measure_all(sweep.cells)  # also refuses budgets that buy no step
    sizes, subsets_s = make_subsets(sweep, say)
    say(f"   shared work: step FLOPs of {len(costs)} model/strategy/options set(s) {flops_s:.1f}s, "
        f"{len(sizes)} subset(s) {subsets_s:.1f}s")
    member = {c.id: [e for e, ids in sweep.experiments.items() if c.id in ids] for c in sweep.cells}
    threads = _threads(sweep, options)
    plan, rows = {}, {}
    for cell in sweep.cells:
        cost = costs[step_key(cell.train, cell.model, cell.strategy)]
        steps = planned_steps(cell, cost)
        run_dir = out / "runs" / cell.id
        config = cell_config(cell, run_dir, sweep.pool.resolve(), sweep.eval_dir.resolve() if sweep.eval_dir else None,
                             sweep.retrieval, steps, threads, cost).to_dict()
        plan[cell.id] = (cost, steps, config)
    digests = {name: subset_digest(sweep.pool, name) for name in sizes}
    suite = str(sweep.eval_suite.resolve()) if sweep.eval_suite else None
    identities = {c.id: cell_identity(plan[c.id][2], sweep.scores, sweep.dedup, digests[c.slice.subset], suite)
                  for c in sweep.cells}
    pending = []
    for cell in sweep.cells:
        _forget_if_changed(out, cell.id, identities[cell.id], say)
        record = out / "cells" / f"{cell.id}.json"
        if record.is_file() and json.loads(record.read_text())["status"] == "ok":
            rows[cell.id] = _row(cell, json.loads(record.read_text()), member, sizes, plan)
        else:
            pending.append(cell)
    skipped = len(rows)
    say(f"   {skipped} cell(s) already finished, {len(pending)} to run"
        + (f" ({options.jobs} side by side)" if options.jobs > 1 else "")
        + (f" on Ray ({options.address or 'local'})" if options.executor == "ray" else ""))
    meta = {"name": sweep.name, "file": str(sweep.file), "pool": str(sweep.pool.resolve()), "scores": sweep.scores,
            "dedup": sweep.dedup, "eval": str(sweep.eval_dir) if sweep.eval_dir else None,
            "eval_suite": str(sweep.eval_suite) if sweep.eval_suite else None,
            "experiments": sweep.experiments}
    write_json_atomic(out / "sweep.json", {**meta, "cells": [c.id for c in sweep.cells], "cpus": cpu_count(),
                                           "shared_s": {"step_flops": flops_s, "subsets": subsets_s}})
    for cell in pending:  # before it starts: a cell killed part-way is known by what it was computing
        write_json_atomic(out / "cells" / f"{cell.id}.identity.json", identities[cell.id])
    progress = Progress(len(pending), options.jobs if options.executor == "local" else max(1, options.jobs))
    jobs = [(cell, {"run_dir": plan[cell.id][2]["out"], "pool": str(sweep.pool.resolve()),
                    "eval_dir": plan[cell.id][2]["eval_dir"], "retrieval": sweep.retrieval,
                    "steps": plan[cell.id][1], "threads": threads, "cost": plan[cell.id][0],
                    "eval_suite": str(sweep.eval_suite) if sweep.eval_suite else None}) for cell in pending]
    flops_left = sum(_planned_flops(c, plan) for c in pending)
    for number, (cell, result) in enumerate(run_cells(jobs, workers=options.jobs, executor=options.executor,
                                                      address=options.address, resources=sweep.resources)):
        write_json_atomic(out / "cells" / f"{cell.id}.json", result)
        rows[cell.id] = _row(cell, result, member, sizes, plan)
        write_results(out, list(rows.values()), meta)  # after every cell: a killed sweep keeps what it had
        flops_left -= _planned_flops(cell, plan)
        say("   " + progress.line(cell.id, result, _planned_flops(cell, plan), flops_left, len(pending) - number - 1))
    path = write_results(out, list(rows.values()), meta)
    ran = [r for cid, r in rows.items() if cid in {c.id for c in pending}]
    summary = {"cells": len(sweep.cells), "ok": sum(r["status"] == "ok" for r in rows.values()),
               "failed": sum(r["status"] != "ok" for r in rows.values()), "skipped": skipped, "ran": len(ran),
               "wall_s": time.perf_counter() - started, "shared_s": flops_s + subsets_s, "results": str(path),
               "overhead": _overhead(ran, time.perf_counter() - started, flops_s + subsets_s, options)}
    say(f"== {summary['ok']} ok, {summary['failed']} failed, {skipped} reused; {path} "
        f"({_clock(summary['wall_s'])}); {summary['overhead']['text']}")
    return summary


def _forget_if_changed(out: Path, cell_id: str, identity: dict[str, Any], say: Callable[[str], None]) -> None:
    """Remove the cell's record and run folder when they were made for another identity (other
    options, tags, subset content or eval): its figures must not stand beside the new config."""
    record, saved, run_dir = (out / "cells" / f"{cell_id}.json", out / "cells" / f"{cell_id}.identity.json",
                              out / "runs" / cell_id)
    if not (record.exists() or saved.exists() or run_dir.exists()):
        return  # never started
    changes = identity_changes(json.loads(saved.read_text()) if saved.is_file() else None, identity)
    if not changes:
        return
    more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
    say(f"   {cell_id} changed since it ran ({'; '.join(changes[:3])}{more}): running it again")
    record.unlink(missing_ok=True)
    saved.unlink(missing_ok=True)
    shutil.rmtree(run_dir, ignore_errors=True)


def _threads(sweep: Sweep, options: SweepOptions) -> int | None:
    """CPU threads per cell: the cores split over the cells side by side (Ray: what a cell asks for)."""
    if options.executor == "ray":
        return max(1, int(sweep.resources.get("cpus", 1)))
    if options.jobs <= 1:
        return None  # train's own default: the cores its loader workers leave
    workers = int(sweep.cells[0].train.get("workers", 2)) if sweep.cells else 2
    return max(1, cpu_count() // options.jobs - workers)


def _planned_flops(cell, plan: dict) -> float:
    cost, steps, _ = plan[cell.id]
    return float(cost[0]) * steps


def _row(cell, result: dict[str, Any], member: dict, sizes: dict, plan: dict) -> dict[str, Any]:
    cost, steps, config = plan[cell.id]
    return cell_row(cell, result, member[cell.id], sizes.get(cell.slice.subset, 0), config, cost[0], steps)


def _overhead(rows: list[dict[str, Any]], wall: float, shared: float, options: SweepOptions) -> dict[str, Any]:
    """Overhead per cell against its training time: the sweep's own (wall time not spent inside
    run_training, shared work spread over the cells) and train run's setup (run_training's
    time outside the steps and the eval: data, model, checkpoints). The eval is reported
    beside them: it is the cell's own work (the eval set through the model it trained)."""
    done = [r for r in rows if r["status"] == "ok" and r["train_s"]]
    if not done:
        return {"text": "no cell ran to measure overhead"}
    train = sum(r["train_s"] for r in done)
    evaluating = sum(r["eval_s"] or 0.0 for r in done)
    setup = sum((r["run_s"] or r["wall_s"]) - r["train_s"] - (r["eval_s"] or 0.0) for r in done)
    cells_wall = sum(r["wall_s"] for r in done)
    sweep_own = shared + sum(r["wall_s"] - (r["run_s"] or r["wall_s"]) for r in done)
    if options.jobs <= 1 and options.executor == "local":
        sweep_own += max(0.0, wall - shared - cells_wall)  # scheduling and writing results, serial runs only
    figures = {"cells": len(done), "train_s": train, "sweep_pct": 100 * sweep_own / train,
               "run_setup_pct": 100 * setup / train, "eval_pct": 100 * evaluating / train,
               "total_pct": 100 * (sweep_own + setup) / train}
    figures["text"] = (f"overhead per cell vs its training time: {figures['total_pct']:.1f}% (sweep "
                       f"{figures['sweep_pct']:.1f}%, train run setup {figures['run_setup_pct']:.1f}%); eval "
                       f"{figures['eval_pct']:.1f}% ({len(done)} cells, {train:.0f}s of training steps)")
    return figures
