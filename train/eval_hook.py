"""Evaluation during and after training: OUT/evals.jsonl (one line per evaluation) and
OUT/eval.json (the final one). Rank 0 evaluates and the other ranks wait at a barrier; a sharded
model (--fsdp), whose forward is a collective, is evaluated by every rank and rank 0 writes."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from clikit.errors import UserError
from shards.atomic import write_json_atomic
from shards.layout import RunDir
from train.evaluate import evaluate
from train.sharding import gathered
from zoo.distributed import DistInfo, barrier


def check_eval_dir(eval_dir: str | None) -> None:
    """Fail before training, not after it, when --eval names no directory."""
    if eval_dir is not None and not Path(eval_dir).is_dir():
        raise UserError(f"--eval {eval_dir}: no such directory")


class EvalHook:
    """Zero-shot and retrieval evaluation of the model being trained (train.evaluate)."""

    def __init__(self, model: torch.nn.Module, preprocess: Any, tokenizer: Any, *, eval_dir: str | None,
                 retrieval_data: str | None, every: int, out: Path, info: DistInfo,
                 sharded: torch.nn.Module | None = None) -> None:
        """`sharded`: the FSDP root module around `model` (--fsdp), whose parameters evaluation gathers."""
        self.model, self.preprocess, self.tokenizer = model, preprocess, tokenizer
        self.sharded = sharded
        self.eval_dir, self.retrieval_data, self.every = eval_dir, retrieval_data, every
        self.run, self.info = RunDir(out), info
        self.seconds = 0.0  # spent evaluating, for callers that account for a run's time (train sweep)

    def due(self, step: int, last: bool) -> bool:
        """Every `every` steps; the last step is evaluated by `final` instead."""
        return bool(self.every) and step % self.every == 0 and not last

    def __call__(self, step: int, samples: int, flops: int) -> dict[str, Any]:
        """Evaluate (rank 0, or every rank when sharded, when there is something to evaluate on)
        and append to evals.jsonl (rank 0); {} on the other ranks or without --eval/--retrieval-data."""
        import time

        started = time.perf_counter()
        results: dict[str, Any] = {}
        if (self.info.is_main or self.sharded is not None) and (self.eval_dir or self.retrieval_data):
            with gathered(self.sharded):
                results = evaluate(self.model, self.preprocess, self.tokenizer, self.eval_dir,
                                   device=self.info.device, retrieval_data=self.retrieval_data)
            results.update(step=step, samples=samples, flops=flops)
        if self.info.is_main and results:
            with open(self.run.evals_jsonl, "a") as handle:
                handle.write(json.dumps(results) + "\n")
        results = results if self.info.is_main else {}
        barrier(self.info)
        self.seconds += time.perf_counter() - started
        return results

    def final(self, step: int, samples: int, flops: int) -> dict[str, Any]:
        """The evaluation after the last step, also written to OUT/eval.json."""
        results = self(step, samples, flops)
        if self.info.is_main and results:
            write_json_atomic(self.run.eval_json, results)
        return results
