"""`train weak-to-strong`: small CLIP -> MIM of a bigger EVA -> CLIP from it, as one plan."""
from __future__ import annotations

from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("weak-to-strong")
    def weak_to_strong(
        plan: str = typer.Argument(..., help="YAML plan: data, eval, seed, defaults and the stages (kind clip|mim; see below)."),
        out: str = typer.Option(..., "--out", help="Folder for the stages (OUT/seed<S>/<stage name>, S the seed) and OUT/table.json."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Override the plan's seed for every stage (repeat runs with other seeds)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    ) -> None:
        """Run a weak-to-strong plan (EVA-CLIP-18B): each stage a `train run` or `train mim`.

        Stages run in order in OUT/seed<S>/NAME; `teacher:`, `init_image:` and `init_text:` may
        name an earlier stage. Rerunning reuses a finished stage of the same seed and options
        (other options: a one-line refusal) and resumes a killed one exactly.
        Prints one table: each stage's FLOPs, samples, loss and zero-shot top-1/top-5.

        Example plan:  data: POOL / eval: EVAL / stages: [{name: small, kind: clip,
        model: tiny-vit-32, budget: 2e13}, {name: mim, kind: mim, teacher: small,
        model: small-eva02-32, budget: 1e13}, {name: big, kind: clip, model: small-eva02-32,
        init_image: mim, budget: 2e13}]"""
        from train.weak_to_strong import format_table, run_plan  # torch: loaded when the command runs, not for --help

        rows = run_plan(plan, out, seed=seed, progress=progress)
        typer.echo(format_table(rows))
