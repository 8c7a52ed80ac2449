"""Commands of the pipeline layer, plugged into the stage CLIs (`curate quickstart`)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def quickstart(
    workdir: Annotated[Path, typer.Option(help="Work folder; a rerun reuses what is finished.")] = Path("quickstart"),
    size: Annotated[int, typer.Option(help="Rows in the generated demo pool.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the demo pool.")] = 0,
    threads: Annotated[int, typer.Option(help="Download threads.")] = 32,
) -> None:
    """Run the whole pipeline on the demo pool."""
    from pipeline.quickstart import QuickstartConfig, run_quickstart

    run_quickstart(QuickstartConfig(workdir=workdir, size=size, seed=seed, threads=threads))


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)
