"""`curate sql` streams its result: a large one is printed or written batch by batch,
never held whole (peak RSS measured in the child process, as the benches do)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pyarrow.parquet as pq

from poolfactory import make_pool

ROOT = Path(__file__).resolve().parents[1]
# bench/measure.py (a child's own peak RSS, wait4), loaded by its path: bench/ on sys.path would
# shadow the `train` package with bench/train.py for every later import in this process, and
# for every process it spawns (spawn hands its sys.path on).
_spec = importlib.util.spec_from_file_location("bench_measure", ROOT / "bench" / "measure.py")
_measure = sys.modules["bench_measure"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(_measure)
run_child = _measure.run_child

# 5M rows of 100 characters: about 560 MB as one Arrow table, a few MB a batch.
QUERY = "SELECT range AS i, repeat(chr((97 + range % 26)::INTEGER), 100) AS s FROM range(5000000)"
PEAK_MB = 400  # measured: 170-180 MB streamed, 660-730 MB when the whole result was built first


def test_a_large_result_streams_to_the_screen_and_to_parquet(tmp_path):
    pool = make_pool(tmp_path / "pool").path
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    shown = run_child([sys.executable, "-m", "curate", "sql", pool, QUERY], env=env)
    assert shown.stdout.splitlines()[-1].startswith("... 4999950 more rows (5000000 in all")
    assert "│ 49 " in shown.stdout and "│ 50 " not in shown.stdout  # the first 50 rows, then the count
    assert shown.peak_mb < PEAK_MB, shown.peak_mb
    out = tmp_path / "big.parquet"
    written = run_child([sys.executable, "-m", "curate", "sql", pool, QUERY, "--format", "parquet", "--out", out],
                        env=env)
    assert "wrote 5000000 rows" in written.stderr and pq.read_metadata(out).num_rows == 5_000_000
    assert written.peak_mb < PEAK_MB, written.peak_mb


def test_duckdb_memory_is_capped_and_the_cap_can_be_set(tmp_path):
    """DuckDB would take 80% of the machine; the catalog caps it (CLIPCURATE_DUCKDB_MEMORY
    sets another cap) and spills under the system temp folder, not the working directory."""
    from clihelp import run_curate

    pool = make_pool(tmp_path / "pool").path
    query = "SELECT current_setting('memory_limit') AS m, current_setting('temp_directory') AS t"
    shown = run_curate("sql", pool, query, "--format", "csv")
    limit, spill = shown.stdout.splitlines()[1].replace('"', "").split(",")
    assert limit == "3.7 GiB" and "clipcurate-duckdb-" in spill and not spill.startswith(str(ROOT))
    os.environ["CLIPCURATE_DUCKDB_MEMORY"] = "200MB"
    try:
        assert run_curate("sql", pool, query, "--format", "csv").stdout.splitlines()[1].startswith('"190.7 MiB",')
        os.environ["CLIPCURATE_DUCKDB_MEMORY"] = "lots"
        bad = run_curate("sql", pool, query)
        assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
            "curate: error: CLIPCURATE_DUCKDB_MEMORY='lots' is not a memory size; write e.g. 4GB or 500MB"]
    finally:
        del os.environ["CLIPCURATE_DUCKDB_MEMORY"]
