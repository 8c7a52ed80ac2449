"""The `candidates` view every recipe reads, the shared macros recipes call, and running
SQL over the catalog with clear errors.

`candidates` is the scoring tag's rows (`scores`, or `scored` with url/caption when a
--where is given), restricted to the dedup run's kept samples with --dedup and to
--where, with a `score` column holding the --by column. The macros of queries/shared/
(the top-k cut) are created on the same connection.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from clikit.errors import UserError
from curate.catalog import Catalog
from curate.filter.recipes import Need, Recipe, shared_sql

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _failed(catalog: Catalog, exc: Exception) -> UserError:
    """A DuckDB error as one line naming the catalog's views."""
    first = str(exc).strip().splitlines()[0]
    return UserError(f"query failed: {first} ({catalog.describe()})")


def run_query(catalog: Catalog, sql: str, params: dict[str, Any] | None = None) -> duckdb.DuckDBPyRelation:
    """`sql` on the catalog's connection; a DuckDB error becomes a UserError naming the catalog."""
    import duckdb

    try:
        return catalog.con.sql(sql, params=params or None)
    except duckdb.Error as exc:
        raise _failed(catalog, exc) from None


def query_table(catalog: Catalog, sql: str, params: dict[str, Any] | None = None):
    """`sql`'s whole result as an arrow table; a DuckDB error while it runs (a recipe's own
    `error(...)` too) becomes the same one-line UserError as run_query's."""
    import duckdb

    relation = run_query(catalog, sql, params)
    try:
        return relation.to_arrow_table()
    except duckdb.Error as exc:
        raise _failed(catalog, exc) from None


def query_batches(catalog: Catalog, sql: str, params: dict[str, Any] | None = None,
                  rows: int = 1 << 20) -> Iterator[pa.RecordBatch]:
    """`sql`'s result as Arrow batches of `rows`, streamed (never the whole result at once);
    a DuckDB error while it runs becomes the same one-line UserError as run_query's."""
    import duckdb

    relation = run_query(catalog, sql, params)
    try:
        yield from relation.to_arrow_reader(rows)
    except duckdb.Error as exc:
        raise _failed(catalog, exc) from None


def build_candidates(catalog: Catalog, by: str, dedup: bool, where: str | None) -> str:
    """Create the temp view `candidates` and the shared macros; return the view's SQL (recorded in the subset)."""
    catalog.require_scores()
    base = "scored" if where and "scored" in catalog.views else "scores"
    columns = catalog.columns(base)
    numeric = [
        row[0] for row in catalog.con.sql(f"DESCRIBE {base}").fetchall()
        if any(t in row[1] for t in ("FLOAT", "DOUBLE", "INT", "DECIMAL")) and row[0] not in ("key",)
    ]
    if by not in columns:
        raise UserError(f"--by {by!r} is not a column of {base}; use one of {', '.join(numeric)}")
    conditions = []
    if dedup:
        catalog.require_dedup()
        conditions.append("uid IN (SELECT uid FROM dedup WHERE keep)")
    if where:
        conditions.append(f"({where})")
    sql = f"SELECT *, {_quote_ident(by)} AS score FROM {base}"
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    run_query(catalog, f"CREATE OR REPLACE TEMP VIEW candidates AS {sql}")
    for shared in shared_sql():
        catalog.con.execute(shared.sql)
    # bind the view now so a bad --where fails here with a clear message
    run_query(catalog, "SELECT * FROM candidates LIMIT 0").fetchall()
    return sql


def missing_needs(catalog: Catalog, recipe: Recipe) -> list[tuple[Need, str]]:
    """The recipe's `@needs` the catalog lacks, each with the line to print."""
    missing = []
    for need in recipe.needs:
        if need.view in catalog.views and (need.column is None or need.column in catalog.columns(need.view)):
            continue
        several = catalog.unselected(need.view)  # made by a stage, but which run is meant?
        missing.append((need, several or f"recipe {recipe.name} needs {need.name}: run `{need.stage}`"))
    return missing


def check_needs(catalog: Catalog, recipe: Recipe) -> None:
    """A UserError naming the first missing view or column and the stage that makes it."""
    missing = missing_needs(catalog, recipe)
    if missing:
        raise UserError(missing[0][1])
