"""Where cells run: in the sweep's own process (one at a time), in N local worker processes
(`--jobs N`, each pinned to its own GPU or its own share of the CPUs), or as Ray tasks on a
cluster (`--executor ray --address ADDR`), each asking
for the CPUs/GPUs of the sweep file's `resources:`. All yield (cell, result) as cells finish."""
from __future__ import annotations

import os
import signal
from typing import Any, Iterator

from clikit.errors import UserError
from pipeline.sweep.cell import run_cell

EXECUTORS = ("local", "ray")


def _die_with_parent() -> None:
    # A killed sweep must not leave a worker training a cell that the resumed sweep runs again.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def placements(workers: int, cpus: list[int], gpus: int) -> list[dict[str, Any]]:
    """What each of `workers` local workers is pinned to: with GPUs, one device each
    (CUDA_VISIBLE_DEVICES, round robin when there are fewer GPUs than workers); without, its
    own share of the CPUs (sched_setaffinity), so cells side by side never share a core."""
    out = []
    for slot in range(workers):
        share = cpus[slot * len(cpus) // workers:(slot + 1) * len(cpus) // workers] or [cpus[slot * len(cpus) // workers]]
        out.append({"cuda_visible_devices": str(slot % gpus) if gpus else None,
                    "cpus": None if gpus else share})
    return out


def _start_worker(slots) -> None:
    """A worker's initialiser: die with the sweep, then take the next placement and pin to it
    (before any cell runs: CUDA reads CUDA_VISIBLE_DEVICES when it first initialises, so the
    worker only ever sees its own device)."""
    _die_with_parent()
    placement = slots.get()
    if placement["cuda_visible_devices"] is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = placement["cuda_visible_devices"]
    if placement["cpus"] is not None:
        os.sched_setaffinity(0, placement["cpus"])


def run_cells(jobs: list[tuple[Any, dict[str, Any]]], *, workers: int = 1, executor: str = "local",
              address: str | None = None, resources: dict[str, float] | None = None) -> Iterator[tuple[Any, dict]]:
    """Run `run_cell(cell, **kwargs)` for each (cell, kwargs); yield (cell, result) in finishing order."""
    if executor not in EXECUTORS:
        raise UserError(f"--executor {executor!r} is not one of {', '.join(EXECUTORS)}")
    if executor == "ray":
        yield from _ray(jobs, address, resources or {})
    elif workers <= 1:
        for cell, kwargs in jobs:
            yield cell, run_cell(cell, **kwargs)
    else:
        yield from _local_pool(jobs, workers)


def _local_pool(jobs: list[tuple[Any, dict[str, Any]]], workers: int) -> Iterator[tuple[Any, dict]]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    import torch

    # spawn, not fork: the parent holds torch threads and DuckDB state that fork would copy half-made.
    context = multiprocessing.get_context("spawn")
    slots = context.Queue()
    for placement in placements(workers, sorted(os.sched_getaffinity(0)), torch.cuda.device_count()):
        slots.put(placement)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                             initargs=(slots,)) as pool:
        futures = {pool.submit(run_cell, cell, **kwargs): cell for cell, kwargs in jobs}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield futures[future], future.result()


def _ray(jobs: list[tuple[Any, dict[str, Any]]], address: str | None,
         resources: dict[str, float]) -> Iterator[tuple[Any, dict]]:
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install -e '.[sweep]'") from None
    if not ray.is_initialized():
        try:  # log_to_driver: each cell's output streams to the sweep's terminal, prefixed by Ray
            ray.init(address=address, include_dashboard=False, log_to_driver=True, logging_level="ERROR")
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UserError(f"cannot reach the Ray cluster at {address or 'a new local one'}: "
                            f"{str(exc).splitlines()[0]}") from None
    check_every_node_sees(sorted({p for _, kwargs in jobs for p in _local_paths(kwargs)}))
    # A cell asks for one GPU where the cluster has any, unless the file's resources: say otherwise.
    gpus = resources.get("gpus", 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0)
    task = ray.remote(run_cell).options(num_cpus=float(resources.get("cpus", 1)), num_gpus=float(gpus),
                                        max_retries=0)
    refs = {task.remote(cell, **kwargs): cell for cell, kwargs in jobs}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            yield refs[ref], ray.get(ref)


def _local_paths(kwargs: dict[str, Any]) -> list[str]:
    """The folders a cell reads or writes that are not object-store URLs: every node must see them."""
    wanted = [kwargs.get("run_dir"), kwargs.get("pool"), kwargs.get("eval_dir"), kwargs.get("eval_suite"),
              kwargs.get("retrieval")]
    paths = [str(p) for p in wanted if p and "://" not in str(p) and not str(p).startswith("pipe:")]
    # a run folder is made by its cell: the sweep's OUT (OUT/runs/CELL) is what must be shared
    return [os.path.dirname(os.path.dirname(p.rstrip("/"))) if p == kwargs.get("run_dir") else p for p in paths]


def _missing(paths: list[str]) -> list[str]:
    return [p for p in paths if not os.path.exists(p)]


def check_every_node_sees(paths: list[str]) -> None:
    """One small task per alive node checks that `paths` exist there; a node that lacks one
    means the cluster shares no filesystem with the driver: say so in one line, before any
    cell runs (its run folder would be written where the driver never reads it)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(_missing)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    missing = ray.get([probe.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
        n["NodeID"], soft=False)).remote(paths) for n in nodes])
    for node, lacks in zip(nodes, missing):
        if lacks:
            raise UserError(f"--executor ray: node {node.get('NodeManagerAddress')} cannot see {lacks[0]}; put the "
                            "sweep's --out, pool and eval folders on a filesystem every node mounts (or the pool "
                            "at an s3:// URL)")


def cpu_count() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
