"""torchrun/DDP plumbing: gloo on CPU, nccl on GPU; a single process when not launched by torchrun."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", group: bool = False) -> DistInfo:
    """Join the process group torchrun set up (WORLD_SIZE > 1, or any size with `group`: FSDP
    needs one even for a single process), else run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        index = local_rank if world > 1 or device in ("auto", "cuda") else torch.device(device).index or 0
        dev = torch.device("cuda", index)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if (world > 1 or group) and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def local_cpus() -> int:
    """Cores for each torchrun process of this node: the cores this process may use (its CPU
    affinity, as Slurm or taskset set it; os.cpu_count() ignores it) over LOCAL_WORLD_SIZE."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


@contextlib.contextmanager
def exit_on_lost_peer(info: DistInfo, prog: str) -> Iterator[None]:
    """Under torchrun, a process of the run that dies makes this one exit at once with one line
    on stderr, not a traceback per rank or a hang: a collective that loses its peer raises (gloo:
    a RuntimeError naming its source file; NCCL: DistBackendError), and torchrun's SIGTERM, sent
    when another local process failed or the run is stopped, is answered the same way. os._exit:
    destroying the process group or joining loader workers can block on the dead peer.
    A peer that hangs alive is only noticed at the process group's timeout (torch's default)."""
    if not info.enabled:
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: _exit_with_line(
        f"{prog}: error: rank {info.rank} stopped by torchrun (another process of the run failed, or the run was "
        "stopped); see the other ranks' output", 143))
    try:
        yield
    except RuntimeError as exc:
        if not (isinstance(exc, dist.DistError) or "gloo" in str(exc)):
            raise
        _exit_with_line(f"{prog}: error: rank {info.rank} lost contact with another process of the run "
                        f"({_short(exc)}); see the other ranks' output", 1)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _short(exc: BaseException) -> str:
    """A backend's message without its source location and advice: "Connection reset by peer"."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return text.split(". This is typically")[0]


def _exit_with_line(line: str, status: int) -> None:
    print(line, file=sys.stderr, flush=True)
    os._exit(status)


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_across(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / info.world_size


def sum_across(value: int, info: DistInfo) -> int:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.long, device=info.device)
    dist.all_reduce(t)
    return int(t.item())


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's object on every rank (used to share an error so all ranks stop together)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(info: DistInfo) -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
