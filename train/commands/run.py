"""`train run`: train a CLIP model on shards until a compute budget is spent."""
from __future__ import annotations

import json
import os

import typer

from train.commands.options import config_command
from train.config import TrainConfig


def run(cfg: TrainConfig) -> None:
    """Train a CLIP model under a compute budget.

    Trains MODEL on DATA with STRATEGY until the FLOP (or sample) budget is spent.
    LiT: --init-image/--init-text load pretrained towers, --lock-image/--lock-text
    freeze them (only what stays trainable gets a gradient and counts backward FLOPs)."""
    from train.loop import run_training  # torch: loaded when the command runs, not for --help

    summary = run_training(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(json.dumps(summary))


def register(app: typer.Typer) -> None:
    app.command("run")(config_command(TrainConfig, run))
