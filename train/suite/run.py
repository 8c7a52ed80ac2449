"""Score a model on a suite's tasks: each task's metrics with bootstrap 95% intervals, its
headline (DataComp's main metric), and the suite's average headline with its interval.
`train eval RUN --suite DIR | --task DIR` writes the result to RUN/evals/SUITE.json."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from clikit.errors import UserError
from shards.atomic import write_json_atomic
from shards.layout import RunDir
from shards.task_folder import RETRIEVAL, TEST, TRAIN
from train.suite import bootstrap
from train.suite.features import split_batches
from train.suite.metrics import Outcome, classification_outcome, retrieval, split_features, zero_shot
from train.suite.probe import probe_logits
from train.suite.tasks import SuiteTask, load_suite, load_task
from zoo.checkpoint import load_model, resolve_checkpoint
from zoo.towers import train_mode


def suite_json_path(checkpoint: str | Path, suite: str) -> Path:
    """RUN/evals/SUITE.json of the run a checkpoint belongs to (the run folder, its final.pt
    or one of its checkpoints/step_*.pt). Never eval.json or evals.jsonl: the training
    eval's files stay as the run wrote them."""
    return RunDir.of_checkpoint(resolve_checkpoint(checkpoint)).suite_eval(suite)


def evaluate_task(model: torch.nn.Module, preprocess: Callable, tokenizer: Callable, task: SuiteTask, device: str,
                  seed: int = 0) -> Outcome:
    """One task's outcome. Mixed precision (clip_benchmark's default) on CUDA only: on a
    CPU, torch.autocast means bfloat16, so CPU figures are float32."""
    kind = torch.device(device).type
    amp = kind == "cuda"
    if task.kind == RETRIEVAL:
        return retrieval(model, tokenizer, split_batches(task.folder, TEST, preprocess), kind, amp)
    classes = len(task.folder.classnames)
    test_x, test_y = split_features(model, split_batches(task.folder, TEST, preprocess), kind, amp)
    outcome = zero_shot(model, tokenizer, list(task.folder.classnames), list(task.folder.templates), test_x, test_y,
                        kind, amp)
    if task.probe:
        train_x, train_y = split_features(model, split_batches(task.folder, TRAIN, preprocess), kind, amp)
        logits, c = probe_logits(train_x, train_y, test_x, classes, seed)
        probe = classification_outcome(logits, torch.tensor(test_y), classes, prefix="lp_")
        probe.info.update(lp_C=c, lp_train_images=len(train_y))
        outcome.merge(probe)
    return outcome


def chance(task: SuiteTask, metric: str, images: int) -> float:
    """What ranking at random scores on average: 1/classes (top-5: 5/classes); k/images for
    recall at k (a caption's image, or one of an image's captions)."""
    if task.kind == RETRIEVAL:
        return min(1.0, int(metric.rsplit("@", 1)[1]) / images)
    classes = len(task.folder.classnames)
    return min(1.0, (5 if metric.endswith("acc5") else 1) / classes)


def _number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def evaluate_suite(model: torch.nn.Module, preprocess: Callable, tokenizer: Callable, tasks: list[SuiteTask],
                   device: str = "cpu", resamples: int = bootstrap.RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Per task: metrics, main_metric (its headline), ci95 (bootstrap over its images) per
    metric, chance; and the average headline with its interval (each task's draws averaged)."""
    if resamples < 10:
        raise UserError(f"--bootstrap {resamples}: use at least 10 resamples (1000 is the default)")
    was_training = model.training
    model.eval()
    results: dict[str, Any] = {}
    headline_draws = []
    started = time.perf_counter()
    try:
        for task in tasks:
            begun = time.perf_counter()
            outcome = evaluate_task(model, preprocess, tokenizer, task, device, seed)
            draws = outcome.redraw(bootstrap.resample(outcome.images, resamples, seed, task.name))
            metrics = {name: _number(value) for name, value in outcome.metrics.items()}
            metrics["main_metric"] = metrics[task.main_metric]
            ci95 = {name: bootstrap.interval(values) for name, values in draws.items()}
            ci95["main_metric"] = ci95[task.main_metric]
            headline_draws.append(draws[task.main_metric])
            results[task.name] = {
                "path": str(task.folder.path), "type": task.kind, "datacomp": task.datacomp, "images": outcome.images,
                **({} if task.kind == RETRIEVAL else {"classes": len(task.folder.classnames),
                                                       "templates": len(task.folder.templates)}),
                **outcome.info, "main_metric_name": task.main_metric,
                "chance": chance(task, task.main_metric, outcome.images),
                "metrics": metrics, "ci95": ci95, "eval_s": round(time.perf_counter() - begun, 2),
            }
    finally:
        if was_training:
            train_mode(model)  # locked towers back in eval mode, not model.train()
    headlines = [results[t.name]["metrics"]["main_metric"] for t in tasks]
    return {
        "device": device, "amp": torch.device(device).type == "cuda",
        "bootstrap": {"resamples": resamples, "level": bootstrap.LEVEL, "seed": seed, "over": "each task's images"},
        "tasks": results,
        "average": {"main_metric": float(np.mean(headlines)), "tasks": len(tasks),
                    "ci95": bootstrap.interval(np.mean(headline_draws, axis=0))},
        "eval_s": round(time.perf_counter() - started, 2),
    }


def eval_suite_command(checkpoint: str, suite: str | None, task: str | None, out: str | None, device: str,
                       resamples: int, seed: int = 0) -> tuple[dict[str, Any], Path]:
    """`train eval --suite/--task`: the tasks are checked before the model is loaded."""
    if (suite is None) == (task is None):
        raise UserError("give --suite DIR (a folder of task folders) or --task DIR (one task folder), not both")
    tasks = load_suite(suite) if suite is not None else [load_task(task)]  # type: ignore[arg-type]
    name = Path(suite or task).resolve().name  # type: ignore[arg-type]
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    model, preprocess, tokenizer, model_name = load_model(checkpoint, device=dev)
    result = {"suite": name, "checkpoint": str(resolve_checkpoint(checkpoint)), "model": model_name,
              **evaluate_suite(model, preprocess, tokenizer, tasks, dev, resamples, seed)}
    path = Path(out) if out is not None else suite_json_path(checkpoint, name)
    write_json_atomic(path, result)
    return result, path


def summary_lines(result: dict[str, Any], path: Path) -> list[str]:
    """The printed table: each task's headline with its interval and chance, then the average."""
    lines = [f"{result['suite']}: {len(result['tasks'])} task(s), {result['model']} -> {path}",
             f"  {'task':<22}{'images':>7}  {'headline':<24}{'value':>7}  {'95% interval':<16}{'chance':>7}"]
    for name, task in result["tasks"].items():
        value, (low, high) = task["metrics"]["main_metric"], task["ci95"]["main_metric"]
        lines.append(f"  {name:<22}{task['images']:>7}  {task['main_metric_name']:<24}{value:>7.3f}  "
                     f"[{low:.3f}, {high:.3f}]  {task['chance']:>6.3f}")
    average = result["average"]
    low, high = average["ci95"]
    lines.append(f"  {'average of the headlines':<55}{average['main_metric']:>7.3f}  [{low:.3f}, {high:.3f}]")
    return lines
