"""`curate sql POOL "SELECT ..."`: run any query over the pool's catalog views."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from curate.sql_query import run_sql

MAX_TABLE_ROWS = 50


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def register(app: typer.Typer) -> None:
    @app.command("sql")
    def sql(
        pool: str = typer.Argument(..., help="Pool folder (written by `curate download`), or its URL (s3://BUCKET/POOL)."),
        query: str = typer.Argument(..., help="A SELECT over the views samples, scores, scores_all, scored, dedup, dedup_all."),
        format: Format = typer.Option(Format.table, "--format", help="Output format; parquet needs --out."),
        out: Optional[Path] = typer.Option(None, "--out", help="Write the result to this file instead of stdout."),
        scores: Optional[str] = typer.Option(None, "--scores", help="Scoring tag behind the `scores` view (default: the pool's only one)."),
        dedup: Optional[str] = typer.Option(None, "--dedup", help="Dedup run behind the `dedup` view (default: the pool's only one)."),
        max_rows: int = typer.Option(MAX_TABLE_ROWS, "--max-rows", help="Rows shown by --format table."),
    ) -> None:
        """Run SQL over the pool's tables (DuckDB).

        Prints or saves the result of a query over the pool's parquet.

        Views: samples (every downloaded row + shard), scores (one tag), scores_all (all tags,
        + tag), scored (scores + url/caption), dedup (one run), dedup_all (+ name).
        """
        run_sql(pool, query, format.value, out, scores, dedup, max_rows)
