"""The top_fraction recipe computed the fast way, with exactly the recipe's result.

The top-k cut of queries/shared/top_k.sql, which queries/top_fraction.sql calls, is the
definition: keep the k best-scored candidates, ties at the cut broken by uid ascending.
Run as SQL on a large pool it reads the uid column several times and sorts the scores in
DuckDB. Here:

1. one pass over the score column alone (numpy): the count n, the quota k (DuckDB's
   top_k_quota macro, the one definition in queries/shared/top_k.sql that the recipe's
   SQL calls too, so rounding is identical) and the cut t, the k-th largest score
   (np.partition);
2. one pass over the uids of the rows with score >= t, streamed from DuckDB straight into
   fixed-width bytes and decoded pairs (curate.filter.datacomp_uids), never a Python
   object per uid;
3. only the rows tied at t are ordered by uid, to keep the first k - #(score > t).

Anything unusual (a score type numpy cannot compare exactly, NaN scores, a null or
malformed uid, a row count that disagrees) returns None and the caller runs the recipe's SQL instead, so
behaviour and error messages stay those of the SQL.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from curate.filter.datacomp_uids import UidBlock, UidFormatError, sorted_order

if TYPE_CHECKING:
    import duckdb

# score types whose values numpy holds exactly and DuckDB compares the same way
_EXACT_TYPES = {
    "FLOAT", "DOUBLE", "TINYINT", "SMALLINT", "INTEGER", "BIGINT",
    "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
}
BATCH_ROWS = 1 << 20


@dataclass
class TopCut:
    """The selected rows: `block` holds every row with score >= cut; `rows` (None = all)
    the ones kept once ties at the cut are broken."""

    block: UidBlock
    rows: np.ndarray | None
    scored: int  # candidates with a score (n)
    selected: int  # rows the recipe returns (k)


def _quota(con: duckdb.DuckDBPyConnection, n: int, params: dict[str, Any]) -> int | None:
    """k, by the top_k_quota macro that build_candidates created on `con` (queries/shared/top_k.sql)."""
    import duckdb

    try:
        rows = con.sql(
            "SELECT top_k_quota($n, $fraction, $count)",
            params={"n": n, "count": params.get("count"), "fraction": params.get("fraction")},
        ).fetchall()
    except duckdb.Error:
        return None  # let the SQL report it
    return rows[0][0]


def top_fraction(con: duckdb.DuckDBPyConnection, params: dict[str, Any]) -> TopCut | None:
    """Run top_fraction over the `candidates` view of `con`; None to fall back to SQL."""
    if set(params) != {"fraction", "count"}:
        return None
    types = dict((row[0], row[1]) for row in con.sql("DESCRIBE SELECT uid, score FROM candidates").fetchall())
    score_type = types.get("score")
    if types.get("uid") != "VARCHAR" or score_type not in _EXACT_TYPES:
        return None

    scores = con.sql("SELECT score FROM candidates WHERE score IS NOT NULL").fetchnumpy()["score"]
    scores = np.ma.getdata(scores)  # no nulls are left: a plain array
    n = len(scores)
    if n == 0:
        return TopCut(UidBlock.empty(0), None, 0, 0)
    k = _quota(con, n, params)
    if k is None or k < 1:
        return None
    if scores.dtype.kind == "f" and np.isnan(scores).any():
        return None  # DuckDB's pushed-down parquet filters and its ORDER BY disagree on NaN
    cut = np.partition(scores, n - k)[n - k]
    above = int(np.count_nonzero(scores > cut))
    at_or_above = int(np.count_nonzero(scores >= cut))
    value: Any = float(cut) if scores.dtype.kind == "f" else int(cut)
    del scores
    extra_ties = at_or_above > k  # some rows tied at the cut must be left out

    # the cut bound as the column's own type: the comparison is exact and DuckDB can push
    # it into the parquet scan
    t = f"CAST($t AS {score_type})"
    columns = f"uid, score = {t} AS tie" if extra_ties else "uid"
    reader = con.sql(f"SELECT {columns} FROM candidates WHERE score >= {t}", params={"t": value}).to_arrow_reader(
        BATCH_ROWS
    )
    block = UidBlock.empty(at_or_above)
    tie = np.zeros(at_or_above, dtype=bool) if extra_ties else None
    filled = 0
    try:
        for batch in _prefetched(reader):
            if filled + batch.num_rows > at_or_above:
                return None
            if extra_ties:
                tie[filled : filled + batch.num_rows] = batch.column(1).to_numpy(zero_copy_only=False)
            filled += block.fill(filled, batch.column(0))
    except UidFormatError:
        return None
    if filled != at_or_above:
        return None

    rows = None
    if extra_ties:
        if not block.canonical:
            return None  # mixed-case uids: ORDER BY uid is not (high, low) order
        tied = np.flatnonzero(tie)
        by_uid = sorted_order(block.pairs, tied)  # lowercase hex: text order == numeric order
        rows = np.concatenate([np.flatnonzero(~tie), by_uid[: k - above]])
    return TopCut(block, rows, n, k)


def _prefetched(reader, depth: int = 4):
    """Batches of an arrow reader, read ahead in a thread: DuckDB scans the next batches
    (without the GIL) while the caller decodes this one."""
    import queue
    import threading

    slots: queue.Queue = queue.Queue(depth)
    done = object()
    stop = threading.Event()

    def pull() -> None:
        try:
            for batch in reader:
                if stop.is_set():
                    break
                slots.put(batch)
            slots.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            slots.put(exc)

    worker = threading.Thread(target=pull, name="duckdb-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                slots.get_nowait()
            except queue.Empty:
                worker.join(0.05)
