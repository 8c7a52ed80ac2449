"""Shared fixtures: the generated demo pool, served over loopback, and a real download of it.

Session-scoped fixtures are read-only for tests: copy a pool (`pool_copy`) before
writing into it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEMO_SIZE = 300
DEMO_SEED = 7
SAMPLES_PER_SHARD = 100
SMALL_DEMO_SIZE = 60  # the cluster and object-store tests' pool: every fault kind, seconds to fetch
# The test that takes minutes, started first: under `-n 2` (README's test command) it goes to
# a worker at once and overlaps the short tests instead of ending the run alone.
LONGEST = ("tests/test_quickstart.py::test_quickstart_runs_every_stage",)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: not item.nodeid.startswith(LONGEST))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory):
    """A loopback server over an (initially empty) demo folder; yields (folder, handle)."""
    from curate.serve import start_server

    folder = tmp_path_factory.mktemp("demo")
    with start_server(folder, port=0) as handle:
        yield folder, handle


@pytest.fixture(scope="session")
def demo_dir(demo_server) -> Path:
    """A generated demo pool (DEMO_SIZE rows) whose URLs point at demo_server."""
    from curate.demo import make_demo_pool

    folder, handle = demo_server
    make_demo_pool(folder, size=DEMO_SIZE, seed=DEMO_SEED, base_url=handle.url)
    return folder


@pytest.fixture(scope="session")
def pool_dir(demo_dir, tmp_path_factory) -> Path:
    """demo_dir downloaded by `curate download` (read-only: use pool_copy to write)."""
    from curate.download.run import DownloadSettings, download_pool

    pool = tmp_path_factory.mktemp("pools") / "pool"
    settings = DownloadSettings(image_size=64, threads=16, samples_per_shard=SAMPLES_PER_SHARD, allow_private=True)
    download_pool(demo_dir / "metadata.parquet", pool, preset="laion", settings=settings)
    return pool


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> Path:
    """A SMALL_DEMO_SIZE-row demo pool (faults included) served on loopback: its metadata.parquet."""
    from curate.demo import make_demo_pool
    from curate.serve import start_server

    folder = tmp_path_factory.mktemp("small-demo")
    with start_server(folder, port=0) as handle:
        make_demo_pool(folder, size=SMALL_DEMO_SIZE, seed=11, base_url=handle.url, seed_size=0, eval_per_class=0)
        yield folder / "metadata.parquet"


@pytest.fixture
def pool_copy(pool_dir, tmp_path) -> Path:
    """A private, writable copy of pool_dir."""
    target = tmp_path / "pool"
    shutil.copytree(pool_dir, target)
    return target
