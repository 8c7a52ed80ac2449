"""`curate download --distributor pyspark|ray`: img2dataset's own distributors on real engines
(a local Spark, a Ray head started here), giving multiprocessing's shards byte for byte,
and a killed cluster download resumed exactly."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import SMALL_DEMO_SIZE as ROWS
from curate.download.run import DownloadSettings, download_pool
from engines import RAY_ENV, kill_group, processes_mentioning, ray_head

PER_SHARD = 10
COMMON = ["--preset", "laion", "--allow-private", "--samples-per-shard", str(PER_SHARD), "--threads", "4",
          "--image-size", "32", "--timeout", "5"]
SETTINGS = DownloadSettings(image_size=32, threads=4, samples_per_shard=PER_SHARD, timeout=5, allow_private=True)

needs_spark = pytest.mark.skipif(not __import__("importlib").util.find_spec("pyspark"),
                                 reason="pyspark is not installed (pip install -e '.[spark]')")
needs_ray = pytest.mark.skipif(not __import__("importlib").util.find_spec("ray"),
                               reason="ray is not installed (pip install -e '.[sweep]')")


@pytest.fixture(scope="module")
def baseline(small_demo, tmp_path_factory) -> Path:
    """The same input downloaded with multiprocessing: the bytes every engine must give."""
    pool = tmp_path_factory.mktemp("baseline") / "pool"
    download_pool(small_demo, pool, preset="laion", settings=SETTINGS)
    return pool


def shard_digests(pool: Path) -> dict[str, str]:
    """sha256 of every shard tar and parquet (the stats json holds timestamps)."""
    files = sorted((pool / "shards").glob("*.tar")) + sorted((pool / "shards").glob("*.parquet"))
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def uids(pool: Path) -> list[str]:
    return sorted(uid for p in sorted((pool / "shards").glob("*.parquet")) for uid in pq.read_table(p)["uid"].to_pylist())


def curate(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def assert_same_pool(pool: Path, baseline: Path) -> None:
    assert uids(pool) == uids(baseline)
    digests, expected = shard_digests(pool), shard_digests(baseline)
    assert len(expected) == 2 * -(-ROWS // PER_SHARD)
    assert digests == expected, sorted(k for k in expected if digests.get(k) != expected[k])


@needs_spark
def test_pyspark_local_session_writes_the_multiprocessing_shards(small_demo, baseline, tmp_path):
    pool = tmp_path / "pool"
    result = curate("download", str(small_demo), str(pool), *COMMON, "--distributor", "pyspark",
                    "--spark-master", "local[2]")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[Stage 0:" in result.stderr, "no Spark job ran"  # Spark's console progress bar
    assert_same_pool(pool, baseline)
    assert json.loads((pool / "pool.json").read_text())["settings"]["distributor"] == "pyspark"


@needs_ray
def test_ray_cluster_writes_the_multiprocessing_shards(small_demo, baseline, tmp_path):
    pool = tmp_path / "pool"
    with ray_head() as head:
        result = curate("download", str(small_demo), str(pool), *COMMON, "--distributor", "ray",
                        "--ray-address", head.address, env=RAY_ENV)
        tasks = head.task_names()
    assert result.returncode == 0, result.stderr[-3000:]
    # one img2dataset task per shard ran on the cluster (Ray may log a task's marker more than once)
    assert tasks.count("ray_download") >= ROWS // PER_SHARD, tasks
    assert_same_pool(pool, baseline)


def _finished(pool: Path) -> list[str]:
    done = []
    for stats in sorted((pool / "shards").glob("*_stats.json")):
        try:
            json.loads(stats.read_text())
            done.append(stats.name)
        except (OSError, ValueError):
            pass
    return done


@needs_ray
def test_killed_ray_download_resumes_exactly(small_demo, baseline, tmp_path):
    """SIGKILL the driver and the whole Ray cluster after the first finished shard; a
    multiprocessing rerun repairs what the kill left and gives the uninterrupted bytes."""
    pool = tmp_path / "pool"
    with ray_head() as head:
        driver = subprocess.Popen(
            [sys.executable, "-m", "curate", "download", str(small_demo), str(pool), *COMMON,
             "--distributor", "ray", "--ray-address", head.address],
            env={**os.environ, **RAY_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while not _finished(pool) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        kill_group(driver)
        kill_group(head.process)
        assert "ray_download" in head.task_names()
        # What the kill did not reach (a raylet Ray starts in a session of its own) ends by itself
        # once its head is gone: seconds, more on a loaded machine. One left after 30 s is a leak.
        deadline = time.monotonic() + 30
        while processes_mentioning(head.temp_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not processes_mentioning(head.temp_dir), "a Ray process outlived the kill"
    done_before = _finished(pool)
    assert 1 <= len(done_before) < ROWS // PER_SHARD, "the kill must land part-way"
    kept = {name: (pool / "shards" / name).stat().st_mtime_ns for name in done_before}

    download_pool(small_demo, pool, preset="laion", settings=SETTINGS)
    assert_same_pool(pool, baseline)
    for name, mtime in kept.items():  # a shard finished before the kill is not fetched again
        assert (pool / "shards" / name).stat().st_mtime_ns == mtime, name
    assert not list((pool / "shards").glob(".*"))
