"""`train`: the training command line. Subcommands live in train/commands/<name>.py."""
from __future__ import annotations

import importlib
import os

import typer

from curate.cli import run_app

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Order here is the order in `train --help`.
COMMAND_MODULES = ("run", "models", "eval")

app = typer.Typer(
    name="train",
    help="Train EVA-CLIP models on curated shards under fixed compute budgets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)



@app.callback()
def _root() -> None:
    """Train EVA-CLIP models on curated shards under fixed compute budgets."""


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"train.commands.{_name}")
    except ModuleNotFoundError as exc:  # a command not written yet
        if exc.name != f"train.commands.{_name}":
            raise
        continue
    _module.register(app)


def main() -> None:
    run_app(app, "train")


if __name__ == "__main__":
    main()
