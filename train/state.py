"""Resume state: what a checkpoint holds, saving and restoring it.

A checkpoint is `{"model_name", "config", "state_dict", "hf_text", ...}` (the shape open_clip
and `zoo.checkpoint.load_model` read; "hf_text" is the Hugging Face text tower's folder or None) plus everything an exact resume needs: optimiser,
schedule, counters, every rank's loader read positions and every rank's RNG state. With
those, a run killed with kill -9 and resumed is bitwise the same as one never stopped.

A run with `--streams N` (train.streams) keeps its data cursor per stream instead of per
rank and loader worker, so it may resume at another world size or number of workers: the
same global batches from the cursor on. Each rank's RNG state is then drawn afresh (from
the seed, the step and the rank), so model-side randomness (FLIP's patch drop, clip-aug,
MIM masks, accumulation seeds) differs from the run that was not resized.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clikit.errors import UserError
from shards.layout import RunDir
from train.config import TrainConfig
from train.sharding import full_states, is_sharded, load_full_states
from zoo.checkpoint import list_checkpoints, load_state, prune_checkpoints, read_checkpoint, save_atomic
from zoo.distributed import DistInfo, all_gather_object, barrier, sum_across

# Arguments that must not change between a run and its --resume (they shape the
# data order, the model or the schedule).
RESUME_FIXED = (
    "data", "subset", "model", "strategy", "patch_drop", "unmasked_fraction", "budget", "samples",
    "batch_size", "opt", "lr", "visual_lr", "text_lr", "weight_decay", "warmup", "seed", "workers",
    "shuffle_buffer", "init_vision", "grad_clip", "slip_scale", "world_size",
    "init_image", "init_text", "lock_image", "lock_image_unlocked_groups", "lock_text", "layer_decay",
    "accum_steps",  # it draws a seed per micro-batch from the RNG
    "teacher", "mask_ratio",  # train mim (train.mim.MimConfig)
    "streams",
)
# Of those, what a run with --streams may change on --resume: its data order does not depend on them.
ELASTIC = ("world_size", "workers")


@dataclass
class Counters:
    """How far the run has got; saved in every checkpoint."""

    step: int = 0
    samples: int = 0
    flops: int = 0
    skipped: int = 0  # unreadable samples skipped, all ranks, up to the last checkpoint
    positions: list[list[int]] = field(default_factory=list)  # per rank, per loader worker (no --streams)
    stream_positions: list[int] = field(default_factory=list)  # --streams N: raw items read per stream


@dataclass
class TrainState:
    """The mutable side of a run. `positions` is this rank's read position per loader
    worker (with --streams: per stream it reads); `skipped_here` counts this rank's skipped samples since this process started
    (the counters hold the total up to the checkpoint it resumed from)."""

    model_name: str
    config: dict[str, Any]
    model: torch.nn.Module
    module: torch.nn.Module  # the StrategyModule around model (it may own a SLIP head)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    counters: Counters
    positions: dict[int, int] = field(default_factory=dict)
    skipped_here: int = 0
    hf_text: str | None = None  # the Hugging Face text tower's folder: load_model and resume rebuild it
    head: torch.nn.Module | None = None  # trained beside the model and resumed with it (train mim's MimHead)
    scalars: set[str] = field(default_factory=set)  # --fsdp: the module's parameters sharded as [1], saved 0-d

    def skipped_total(self, info: DistInfo) -> int:
        """Skipped samples over all ranks and restarts (a collective: every rank calls it)."""
        return self.counters.skipped + sum_across(self.skipped_here, info)


def fresh_counters(workers: int, world_size: int, streams: int = 0) -> Counters:
    """Counters of a new run: nothing read yet by any loader worker of any rank (or any stream)."""
    if streams:
        return Counters(stream_positions=[0] * streams)
    n_slots = max(1, workers)  # workers=0 still reads one stream, in the main process
    return Counters(positions=[[0] * n_slots for _ in range(world_size)])


def existing_checkpoints(out: Path, resume: bool) -> list[Path]:
    """OUT's checkpoints, oldest first; UserError when OUT holds a run that this one
    would overwrite (checkpoints without --resume, or a finished run to resume)."""
    existing = list_checkpoints(out)
    if existing and not resume:
        raise UserError(f"{out} already holds checkpoints; pass --resume to continue it or choose another --out")
    if resume and not existing and RunDir(out).final_pt.is_file():
        raise UserError(f"{out} is finished (final.pt) and has no checkpoint to resume; choose another --out")
    return existing


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's torch RNG states: CPU, and the device's on GPU."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what rng_state returned."""
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_training(seed: int, info: DistInfo, step: int = 0) -> None:
    """Seed a new run's training randomness (augmentation, patch drop), different per rank
    (and per step: a run resumed at another world size draws afresh from there)."""
    value = seed * 1000 + 17 + info.rank + step * 1_000_003
    torch.manual_seed(value)
    if info.device.type == "cuda":
        torch.cuda.manual_seed(value)


def restore(state: TrainState, path: Path, out: Path, info: DistInfo, total_steps: int) -> None:
    """Load the checkpoint at `path` into `state` (weights, SLIP head, optimiser, schedule,
    counters) and this rank's RNG; UserError when it was made with other RESUME_FIXED args,
    or planned another number of steps (a FLOP budget measured otherwise at this world size)."""
    ckpt = read_checkpoint(path)
    check_same_run(ckpt.get("config", {}), state.config, out)
    saved_world = len(ckpt["rng"])
    if ckpt.get("total_steps", total_steps) != total_steps:
        raise UserError(f"cannot resume {out} with {info.world_size} process(es): its budget makes {total_steps} "
                        f"steps here but {ckpt['total_steps']} at the {saved_world} it was started with (the FLOPs "
                        f"of a step measured {ckpt.get('flops_per_step')} there); resume it with {saved_world}")
    if state.head is not None:
        state.head.load_state_dict(ckpt["head"])
    try:
        if is_sharded(state.module):  # --fsdp: the checkpoint holds whole tensors; each rank keeps its shards
            parts = {"model": ckpt["state_dict"], "slip_head": ckpt.get("slip_head")}
            load_full_states(state.module, state.optimizer, {k: v for k, v in parts.items() if v is not None},
                             ckpt["optimizer"], state.scalars)
        else:
            load_state(state.model, ckpt["state_dict"], path)
            if getattr(state.module, "slip_head", None) is not None:
                state.module.slip_head.load_state_dict(ckpt["slip_head"])
            state.optimizer.load_state_dict(ckpt["optimizer"])
    except ValueError as exc:  # torch: "loaded state dict contains a parameter group that doesn't match ..."
        raise UserError(f"cannot resume {out}: the checkpoint's optimiser groups differ from this version's "
                        "(position embeddings and class tokens are now exempt from weight decay); "
                        "finish it with the version that started it, or start a new --out") from exc
    state.scheduler.load_state_dict(ckpt["scheduler"])
    data = ckpt["data"]
    state.counters = Counters(step=ckpt["step"], samples=ckpt["samples"], flops=ckpt["flops"],
                              skipped=ckpt["skipped"], positions=data.get("positions", []),
                              stream_positions=data.get("stream_positions", []))
    if saved_world == info.world_size:
        set_rng_state(ckpt["rng"][info.rank], info.device)
    else:  # --streams, resized: no rank's state to take over
        seed_training(state.config["seed"], info, state.counters.step)


def changed_run_fields(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The RESUME_FIXED fields (those that change what a run trains) whose value in `current`
    differs from `saved` (a checkpoint's config, or a finished run's config.yaml)."""
    # A config from before an argument existed holds its default.
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    return [k for k in RESUME_FIXED if saved.get(k, defaults.get(k)) != current.get(k)]


def check_same_run(saved: dict[str, Any], current: dict[str, Any], out: Path) -> None:
    """UserError unless a checkpoint's config `saved` may be resumed as `current`: the same
    RESUME_FIXED arguments, but for world size and workers in a run with --streams."""
    changed = changed_run_fields(saved, current)
    if saved.get("streams"):
        changed = [k for k in changed if k not in ELASTIC]
    elif set(changed) & set(ELASTIC) and "streams" not in changed:
        raise UserError(
            f"cannot resume {out} with {current['world_size']} process(es) and --workers {current['workers']}: it "
            f"was started with {saved.get('world_size')} and --workers {saved.get('workers')} without --streams "
            "(its data order is split by process and loader worker); resume it with those, or start a new run "
            "with --streams N to be able to change them")
    if changed:
        raise UserError(
            f"cannot resume {out}: {', '.join(changed)} differ from the checkpoint "
            f"({', '.join(f'{k}={saved.get(k)!r}' for k in changed)}); rerun with the same arguments"
        )


def save_checkpoint(state: TrainState, out: Path, keep: int, flops_per_step: int, total_steps: int,
                    info: DistInfo) -> None:
    """Write OUT/checkpoints/step_NNNNNNNN.pt (rank 0, atomically) and keep the newest
    `keep`. A collective: every rank sends its read positions and RNG state."""
    gathered = all_gather_object(state.positions, info)
    all_rng = all_gather_object(rng_state(info.device), info)
    skipped_total = state.skipped_total(info)
    weights, slip_head, optimizer = _whole_states(state)
    if info.is_main:
        c = state.counters
        ckpt = {
            "model_name": state.model_name, "config": state.config, "state_dict": weights,
            "hf_text": state.hf_text, "slip_head": slip_head,
            "head": state.head.state_dict() if state.head is not None else None,
            "optimizer": optimizer, "scheduler": state.scheduler.state_dict(), "scaler": None,
            "step": c.step, "samples": c.samples, "flops": c.flops,
            "skipped": skipped_total, "data": _data_cursor(gathered, state.config.get("streams", 0), c.step),
            "rng": all_rng, "flops_per_step": flops_per_step, "total_steps": total_steps,
        }
        save_atomic(ckpt, RunDir(out).checkpoint(c.step))
        prune_checkpoints(out, keep)
    barrier(info)


def save_final(state: TrainState, out: Path, info: DistInfo) -> int:
    """Write OUT/final.pt (weights and counters, no resume state); returns the skipped total."""
    skipped_total = state.skipped_total(info)
    weights = _whole_states(state, optimizer=False)[0]
    if info.is_main:
        c = state.counters
        final = {"model_name": state.model_name, "config": state.config, "state_dict": weights,
                 "hf_text": state.hf_text, "step": c.step, "samples": c.samples, "flops": c.flops}
        save_atomic(final, RunDir(out).final_pt)
    barrier(info)
    return skipped_total


def _data_cursor(gathered: list[dict[int, int]], streams: int, step: int) -> dict[str, Any]:
    """A checkpoint's "data": every rank's positions (per logical loader worker), or with
    --streams the N streams' positions, each from the rank that reads it."""
    if streams:
        merged = {s: q for positions in gathered for s, q in positions.items()}
        return {"stream_positions": [merged[s] for s in range(streams)], "batches_taken": step}
    return {"positions": [[positions[w] for w in sorted(positions)] for positions in gathered], "batches_taken": step}


def _whole_states(state: TrainState, optimizer: bool = True) -> tuple[dict[str, torch.Tensor],
                                                                      dict[str, torch.Tensor] | None, Any]:
    """(the model's, the SLIP head's or None, the optimiser's (None unless asked)) state_dict, whole:
    gathered from every rank when the module is sharded (--fsdp; a collective), else the plain ones."""
    slip_head = getattr(state.module, "slip_head", None)
    if is_sharded(state.module):
        parts, optimizer_state = full_states(state.module, state.optimizer if optimizer else None, state.scalars)
        return parts.get("model", {}), parts.get("slip_head", {}) if slip_head is not None else None, optimizer_state
    return (state.model.state_dict(), slip_head.state_dict() if slip_head is not None else None,
            state.optimizer.state_dict() if optimizer else None)
