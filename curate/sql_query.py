"""`curate sql`: run a user's query over the pool's catalog views and print or save the result."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from clikit.errors import UserError
from curate.catalog import open_catalog
from shards.atomic import replacing

if TYPE_CHECKING:
    import pyarrow as pa


def run_sql(
    pool: str | Path,
    query: str,
    fmt: str = "table",
    out: str | Path | None = None,
    scores: str | None = None,
    dedup: str | None = None,
    max_rows: int = 50,
) -> int:
    """Run `query`; print it as a table/csv/json, or write csv/json/parquet to `out`.

    Returns the number of result rows. Files are written to a temporary name, then renamed.
    """
    import duckdb

    if fmt == "parquet" and out is None:
        raise UserError("--format parquet needs --out FILE")
    body = query.strip().rstrip(";")
    if not body:
        raise UserError("the query is empty; pass e.g. \"SELECT count(*) FROM samples\"")
    with open_catalog(pool, scores=scores, dedup=dedup) as catalog:
        if not catalog.views:
            raise UserError(f"{pool} holds no pool parquet (shards/*.parquet); run `curate download INPUT {pool}` first")
        try:
            relation = catalog.con.sql(body)
            if relation is None:
                raise UserError("the query returned no result; `curate sql` runs SELECT queries")
            table = relation.to_arrow_table()
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0]
            hint = ""
            if "scores" in first and "scores" not in catalog.views and catalog.score_tags:
                hint = f"; several scoring tags ({', '.join(catalog.score_tags)}): pass --scores TAG or query scores_all"
            raise UserError(f"query failed: {first}{hint} ({catalog.describe()})") from None
    if out is not None:
        _write(table, fmt if fmt != "table" else "csv", Path(out))
        print(f"wrote {table.num_rows} rows to {out}", file=sys.stderr)
    elif fmt == "table":
        _print_table(table, max_rows)
    else:
        _write(table, fmt, None)
    return table.num_rows


def _write(table: pa.Table, fmt: str, out: Path | None) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if out is None:
        if fmt == "csv":
            pacsv.write_csv(table, sys.stdout.buffer)
        else:
            sys.stdout.write(_json_text(table) + "\n")
        sys.stdout.flush()
        return
    with replacing(out) as tmp:
        if fmt == "parquet":
            pq.write_table(table, tmp)
        elif fmt == "csv":
            pacsv.write_csv(table, tmp)
        else:
            tmp.write_text(_json_text(table) + "\n", encoding="utf-8")


def _json_text(table: pa.Table) -> str:
    import json

    return json.dumps(table.to_pylist(), default=str, ensure_ascii=False)


def _print_table(table: pa.Table, max_rows: int) -> None:
    from rich.console import Console
    from rich.table import Table

    view = Table(show_lines=False)
    for name in table.column_names:
        view.add_column(name)
    for row in table.slice(0, max_rows).to_pylist():
        view.add_row(*("" if v is None else str(v) for v in row.values()))
    console = Console()
    console.print(view)
    if table.num_rows > max_rows:
        console.print(f"... {table.num_rows - max_rows} more rows ({table.num_rows} in all; --max-rows or --out for more)")
