"""`curate`: the curation command line. Subcommands live in curate/commands/<name>.py."""
from __future__ import annotations

import importlib
import os
import sys

import typer

from curate.errors import UserError

# img2dataset imports albumentations, which otherwise calls home at import time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# OpenMP threads that spin while idle steal the cores from the decoding workers (`curate
# score`): sleeping instead measured 7-15% faster there (bench/score.py), the model alone
# no slower. Read once, when torch loads its OpenMP runtime, so it is set before that.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Order here is the order in `curate --help`.
COMMAND_MODULES = (
    "quickstart",
    "demo",
    "serve",
    "download",
    "inspect",
    "score",
    "dedup",
    "sql",
    "filter",
    "export",
    "verify",
)

app = typer.Typer(
    name="curate",
    help="Curate a web-scale image-text pool down to its best slice.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)



@app.callback()
def _root() -> None:
    """Curate a web-scale image-text pool down to its best slice."""


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"curate.commands.{_name}")
    except ModuleNotFoundError as exc:  # a command not written yet
        if exc.name != f"curate.commands.{_name}":
            raise
        continue
    _module.register(app)


def run_app(typer_app: typer.Typer, prog_name: str) -> None:
    """Run a Typer app, turning UserError into one line on stderr and exit status 2."""
    try:
        typer_app(prog_name=prog_name, standalone_mode=True)
    except UserError as exc:
        print(f"{prog_name}: error: {exc}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    run_app(app, "curate")


if __name__ == "__main__":
    main()
