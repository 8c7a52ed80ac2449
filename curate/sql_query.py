"""`curate sql`: run a user's query over the pool's catalog views and print or save the result."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from clikit.errors import UserError
from curate.catalog import open_catalog
from shards.atomic import replacing

if TYPE_CHECKING:
    import pyarrow as pa


# Rows per Arrow batch read from DuckDB: the result is streamed, never held whole.
BATCH_ROWS = 1 << 16


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

    The result streams from DuckDB in Arrow batches: a table prints its first `max_rows`
    rows and counts the rest, csv/json/parquet are written batch by batch, so memory stays
    at one batch however large the result. Returns the number of result rows. Files are
    written to a temporary name, then renamed.
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
            reader = relation.to_arrow_reader(BATCH_ROWS)
            if out is not None:
                rows = _write(reader, fmt if fmt != "table" else "csv", Path(out))
                print(f"wrote {rows} rows to {out}", file=sys.stderr)
            elif fmt == "table":
                rows = _print_table(reader, max_rows)
            else:
                rows = _write(reader, fmt, None)
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0]
            hint = ""
            if "scores" in first and "scores" not in catalog.views and catalog.score_tags:
                hint = f"; several scoring tags ({', '.join(catalog.score_tags)}): pass --scores TAG or query scores_all"
            raise UserError(f"query failed: {first}{hint} ({catalog.describe()})") from None
    return rows


def _write(reader: pa.RecordBatchReader, fmt: str, out: Path | None) -> int:
    """Write the batches as csv, json or parquet to `out` (stdout when None); the row count."""
    if out is None:
        rows = _write_stream(reader, fmt, sys.stdout.buffer)
        sys.stdout.flush()
        return rows
    with replacing(out) as tmp:
        with open(tmp, "wb") as handle:
            return _write_stream(reader, fmt, handle)


def _write_stream(reader: pa.RecordBatchReader, fmt: str, sink: BinaryIO) -> int:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rows = 0
    if fmt == "json":  # one JSON list, as json.dumps(list of rows) spells it
        sink.write(b"[")
        for batch in reader:
            for row in batch.to_pylist():
                sink.write((", " if rows else "").encode() + _json_row(row))
                rows += 1
        sink.write(b"]\n")
        return rows
    writer_of = {"csv": pacsv.CSVWriter, "parquet": pq.ParquetWriter}[fmt]
    with writer_of(sink, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def _json_row(row: dict) -> bytes:
    import json

    return json.dumps(row, default=str, ensure_ascii=False).encode("utf-8")


def _print_table(reader: pa.RecordBatchReader, max_rows: int) -> int:
    """Print the first `max_rows` rows as soon as they arrive; count the rest without keeping them."""
    from rich.console import Console
    from rich.table import Table

    view = Table(show_lines=False)
    for name in reader.schema.names:
        view.add_column(name)
    console = Console()
    rows, shown = 0, False
    for batch in reader:
        if rows < max_rows:
            for row in batch.slice(0, max_rows - rows).to_pylist():
                view.add_row(*("" if v is None else str(v) for v in row.values()))
        rows += batch.num_rows
        if rows >= max_rows and not shown:
            console.print(view)
            shown = True
    if not shown:
        console.print(view)
    if rows > max_rows:
        console.print(f"... {rows - max_rows} more rows ({rows} in all; --max-rows or --out for more)")
    return rows
