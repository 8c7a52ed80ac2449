"""Where cells run: in the sweep's own process (one at a time), in N local worker processes
(`--jobs N`, each pinned to its own GPU, or to its own share of the CPUs), or as Ray tasks on a cluster (`--executor ray --address ADDR`), each asking
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
    (before the cell imports torch, so CUDA only ever sees its own device)."""
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
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UserError(f"cannot reach the Ray cluster at {address or 'a new local one'}: "
                            f"{str(exc).splitlines()[0]}") from None
    task = ray.remote(run_cell).options(num_cpus=float(resources.get("cpus", 1)),
                                        num_gpus=float(resources.get("gpus", 0)), max_retries=0)
    refs = {task.remote(cell, **kwargs): cell for cell, kwargs in jobs}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            yield refs[ref], ray.get(ref)


def cpu_count() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
