"""`train mim`: EVA-02 masked image modelling of an EVA tower against a teacher CLIP."""
from __future__ import annotations

import json
import os

import typer

from train.commands.options import config_command
from train.config import MimConfig


def mim(cfg: MimConfig) -> None:
    """Masked image modelling (EVA-02) from a teacher CLIP, under a compute budget.

    Masks about 40% of the student's patches in blocks; its tokens there regress the
    teacher's patch features, projected into its embedding space, by cosine (no
    captions needed). OUT/final.pt then initialises a CLIP: `train run --init-image OUT`."""
    from train.mim import run_mim  # torch: loaded when the command runs, not for --help

    summary = run_mim(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(json.dumps(summary))


def register(app: typer.Typer) -> None:
    app.command("mim")(config_command(MimConfig, mim))
