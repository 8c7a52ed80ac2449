"""`curate inspect POOL`."""
from __future__ import annotations

import json
from typing import Annotated

import typer


def inspect(
    pool: Annotated[str, typer.Argument(help="A pool folder written by `curate download`, or its URL (s3://BUCKET/POOL).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object for machines.")] = False,
    placeholder_min_urls: Annotated[int, typer.Option(help="Flag image bytes served for at least this many URLs.")] = 5,
) -> None:
    """Pool counts, failures, sizes and duplicates."""
    from curate.pool_report import format_report, inspect_pool  # imported when the command runs: pyarrow

    report = inspect_pool(pool, placeholder_min_urls=placeholder_min_urls)
    typer.echo(json.dumps(report, indent=2) if as_json else format_report(report))


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)
