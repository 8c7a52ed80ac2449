"""Where img2dataset runs the download: its own distributors, each a record found by name.

`curate download --distributor multiprocessing|pyspark|ray` hands img2dataset the name; the
record here only says which package the engine needs and how to have an engine ready
before img2dataset starts (and stopped after, when we started it). The download itself
(resizer, writer, guard, uids, shard order) is the same code on every engine.

- pyspark: img2dataset uses the active SparkSession, or makes one with 16 GB of driver
  memory; we make it first, from `--spark-master` (default `local[--processes]`, bound to
  loopback). A session the caller already has is used and left running.
- ray: `--ray-address` (or RAY_ADDRESS) joins that cluster; without either, a new local
  cluster of `--processes` CPUs is started and shut down after. Never a bare `ray.init()`,
  which joins whatever cluster /tmp/ray last named, maybe another user's.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ContextManager, Iterator

from clikit.errors import UserError

if TYPE_CHECKING:
    from curate.download.fetch import DownloadSettings


@dataclass(frozen=True)
class Distributor:
    name: str
    engine: str | None  # the module the engine needs, None for the standard library
    extra: str | None  # the clipcurate extra that installs it
    session: Callable[["DownloadSettings"], ContextManager[None]]


@contextlib.contextmanager
def _no_session(settings: "DownloadSettings") -> Iterator[None]:
    yield


@contextlib.contextmanager
def _spark_session(settings: "DownloadSettings") -> Iterator[None]:
    from pyspark.sql import SparkSession  # optional and heavy (a JVM): only for --distributor pyspark

    if SparkSession.getActiveSession() is not None:
        yield
        return
    # Spark's Python workers must run this interpreter, which can import curate.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    master = settings.spark_master or f"local[{settings.processes}]"
    builder = SparkSession.builder.master(master).appName("clipcurate-download").config("spark.ui.enabled", "false")
    if master.startswith("local"):  # a machine-local session: listen on loopback only
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    spark = builder.getOrCreate()
    try:
        yield
    finally:
        spark.stop()


@contextlib.contextmanager
def _ray_cluster(settings: "DownloadSettings") -> Iterator[None]:
    import ray  # optional and heavy: only for --distributor ray

    if ray.is_initialized():
        yield
        return
    address = settings.ray_address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=settings.processes, include_dashboard=False,
                     _node_ip_address="127.0.0.1", log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot join the Ray cluster at {address} ({first}); start one with `ray start --head` "
                        "and pass its address to --ray-address, or leave --ray-address out for a local one") from None
    try:
        yield
    finally:
        ray.shutdown()


DISTRIBUTORS = {d.name: d for d in (
    Distributor("multiprocessing", None, None, _no_session),
    Distributor("pyspark", "pyspark", "spark", _spark_session),
    Distributor("ray", "ray", "sweep", _ray_cluster),
)}


def get_distributor(name: str) -> Distributor:
    """The record for `name`; a UserError when it is unknown or its engine is not installed."""
    distributor = DISTRIBUTORS.get(name)
    if distributor is None:
        raise UserError(f"unknown --distributor {name!r}; choose one of {', '.join(DISTRIBUTORS)}")
    if distributor.engine and importlib.util.find_spec(distributor.engine) is None:
        raise UserError(f"--distributor {name} needs {distributor.engine}: pip install 'clipcurate[{distributor.extra}]'")
    return distributor
