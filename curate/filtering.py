"""Old home of `curate filter`, kept only for callers not yet moved to curate.filter.

Still imported by curate/export.py, tests/test_export.py, tests/test_verify.py and
tests/test_pipeline.py; delete this file once they import from curate.filter.* directly.
"""
from __future__ import annotations

from pathlib import Path

from curate.filter.run import run_filter, tool_version  # noqa: F401
from curate.filter.subsets import read_subset_metadata  # noqa: F401
from shards.layout import Pool


def subset_paths(pool: str | Path, name: str) -> tuple[Path, Path]:
    """subsets/NAME.parquet and subsets/NAME.npy (use shards.layout.Pool instead)."""
    layout = Pool(pool)
    return layout.subset_parquet(name), layout.subset_npy(name)
