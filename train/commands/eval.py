"""`train eval`: zero-shot and retrieval metrics of a trained checkpoint."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from clikit.errors import UserError
from shards.atomic import write_text_atomic
from shards.layout import RunDir


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_(
        checkpoint: str = typer.Argument(..., help="Run directory (runs/NAME), its final.pt, or a step checkpoint."),
        eval_dir: Optional[str] = typer.Option(None, "--eval", help="Folder with one sub-folder of images per class (+ templates.txt)."),
        retrieval_data: Optional[str] = typer.Option(None, "--retrieval-data", help="Held-out shards for retrieval R@1/5/10."),
        retrieval_limit: int = typer.Option(1000, "--retrieval-limit", help="Pairs used for retrieval."),
        out: Optional[str] = typer.Option(None, "--out", help="Where to write the result (default: RUN/evals/FOLDER.json, FOLDER the --eval folder's name (+ the --retrieval-data's), or RUN/evals/SUITE.json for --suite/--task; never the run's own eval.json)."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
        suite: Optional[str] = typer.Option(None, "--suite", help="A folder of task folders (DataComp's / clip_benchmark's webdataset format); writes RUN/evals/SUITE.json."),
        task: Optional[str] = typer.Option(None, "--task", help="One task folder in that format; writes RUN/evals/TASK.json."),
        resamples: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the 95% intervals of --suite/--task."),
    ) -> None:
        """Zero-shot and retrieval metrics of a model.

        Zero-shot top-1/top-5 on --eval and image<->text retrieval R@1/5/10; writes RUN/evals/FOLDER.json.
        With --suite or --task: clip_benchmark's metrics per task with bootstrap 95% intervals
        and DataComp's headline metric (docs/design.md, "Evaluation")."""
        # torch, open_clip (and clip_benchmark for --suite): loaded when the command runs, not for `train --help`.
        import torch

        from train.evaluate import evaluate
        from zoo.checkpoint import load_model, resolve_checkpoint

        if suite is not None or task is not None:
            if eval_dir is not None or retrieval_data is not None:
                raise UserError("--suite/--task and --eval/--retrieval-data are separate evals; run them one at a time")
            from train.suite.run import eval_suite_command, summary_lines

            result, path = eval_suite_command(checkpoint, suite, task, out, device, resamples)
            typer.echo("\n".join(summary_lines(result, path)))
            return
        if eval_dir is None and retrieval_data is None:
            raise UserError("give --eval DIR (class folders) and/or --retrieval-data SHARDS")
        dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        model, preprocess, tokenizer, name = load_model(checkpoint, device=dev)
        results = evaluate(model, preprocess, tokenizer, eval_dir, device=dev, retrieval_data=retrieval_data,
                           retrieval_limit=retrieval_limit)
        results = {"checkpoint": str(resolve_checkpoint(checkpoint)), "model": name, **results}
        # RUN/evals/FOLDER.json, named by what it was evaluated on: never the run's own eval.json,
        # which holds the figures of the eval its training ran (a sweep's results read it).
        name = "+".join(Path(p).resolve().name for p in (eval_dir, retrieval_data) if p is not None)
        out_path = RunDir.of_checkpoint(resolve_checkpoint(checkpoint)).suite_eval(name) if out is None else Path(out)
        write_text_atomic(out_path, json.dumps(results, indent=2))
        typer.echo(json.dumps(results))
