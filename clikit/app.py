"""Build and run a Typer app whose subcommands live in modules with a `register(app)`."""
from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points
from typing import Iterable

import typer

from clikit.errors import UserError

PLUGIN_GROUP = "clipcurate.commands"


def quiet_environment() -> None:
    """Defaults that keep third-party libraries offline and quiet (a user's setting wins)."""
    # img2dataset imports albumentations, which otherwise calls home at import time.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    # A pretrained hub tag fails at once instead of retrying for a minute.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_app(name: str, help_text: str, command_modules: Iterable[str]) -> typer.Typer:
    """A Typer app with each module's `register(app)` called, in order (the order of --help).

    Commands of a layer above the tool (the pipeline's `curate quickstart`, which needs both
    stages) are plugged in through the `clipcurate.commands` entry point group, named
    `<tool>.<command>`, so that the tool itself never imports that layer.
    """
    app = typer.Typer(
        name=name,
        help=help_text,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )

    @app.callback()
    def _root() -> None:
        pass

    _root.__doc__ = help_text
    for module_name in command_modules:
        importlib.import_module(module_name).register(app)
    for plugin in sorted(entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name):
        tool, _, _command = plugin.name.partition(".")
        if tool == name:
            plugin.load()(app)
    return app


def run_app(typer_app: typer.Typer, prog_name: str) -> None:
    """Run a Typer app, turning UserError into one line on stderr and exit status 2."""
    try:
        typer_app(prog_name=prog_name, standalone_mode=True)
    except UserError as exc:
        print(f"{prog_name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
