"""`run_training(TrainConfig) -> dict`, used by `train run` and callable from Python: check
the arguments, set up data, model, budget and resume state, run the Trainer, write the
final model, evaluation and summary. Budget in measured FLOPs (or samples), exact resume,
DDP, eval.

The parts: train.config (TrainConfig, checks, config.yaml), train.sources (--data,
--subset), train.data (the batch stream), train.budget (FLOPs per step, the step plan),
zoo.towers (towers from pretrained weights, locks, init.json), train.state
(checkpoints and resume), train.trainer (the step loop),
train.metrics (metrics.jsonl), train.eval_hook (evals.jsonl, eval.json)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from clikit.errors import UserError
from shards.atomic import write_json_atomic
from shards.layout import RunDir
from shards.uid_arrays import SortedUids
from train import budget as B
from train.accumulate import check_batch_statistics
from train.budget import StepPlan
from train.config import TrainConfig, write_run_config
from train.data import StreamConfig, make_loader
from train.eval_hook import EvalHook, check_eval_dir
from train.metrics import MetricsLog, truncate_metrics
from train.optim import cosine_with_warmup, make_optimizer
from train.sources import check_first_shard, load_subset_uids, resolve_shards
from train.sharding import shard
from train.state import TrainState, existing_checkpoints, fresh_counters, restore, save_final, seed_training
from train.strategies import StrategyModule, patch_dropout_modules, strategy
from train.streams import check_streams, joined_batches, owned_streams
from train.trainer import Trainer, autocast_forward
from zoo.attention import use_flash_attention
from zoo.distributed import DistInfo, exit_on_lost_peer, init_distributed, local_cpus, shutdown
from zoo.models import image_size
from zoo.towers import Towers, build_towers, report_inits, train_mode

__all__ = ["TrainConfig", "run_training"]


@dataclass
class _Model:
    """The model being trained and what comes with it."""

    model: torch.nn.Module  # the open_clip model: what final.pt holds
    module: torch.nn.Module  # the StrategyModule around it: what computes the loss
    preprocess: Any  # open_clip's eval transform, for evaluation
    tokenizer: Any
    image_size: int
    towers: Towers  # the inits' reports and the Hugging Face text tower's folder
    head: torch.nn.Module | None = None  # trained and checkpointed beside the model (train mim)
    needs_text: bool = True  # False: the batch stream neither requires nor tokenises captions


def run_training(cfg: TrainConfig) -> dict[str, Any]:
    """Train until the budget is spent; returns summary.json's figures (the final counters and eval
    results) and eval_s, the seconds spent evaluating.

    Writes OUT/config.yaml, OUT/metrics.jsonl, OUT/checkpoints/step_*.pt, OUT/final.pt,
    OUT/summary.json and (with eval_dir or retrieval_data) OUT/evals.jsonl and OUT/eval.json.
    Only rank 0 writes."""
    cfg.validate()
    if cfg.fsdp and "WORLD_SIZE" not in os.environ:
        raise UserError("--fsdp shards the model over the processes torchrun starts; launch with torchrun "
                        "--nproc-per-node 2 (or more; 1 runs the sharded code path unsharded), or drop --fsdp")
    info = init_distributed(cfg.device, group=cfg.fsdp)
    try:
        with exit_on_lost_peer(info, "train"):
            return _run(cfg, info)
    finally:
        shutdown(info)


def _run(cfg: TrainConfig, info: DistInfo, build: Callable[[TrainConfig, DistInfo, Path | None], _Model] | None = None,
         ) -> dict[str, Any]:
    """One training stage. `build` makes the model and the module whose loss is minimised
    (default: CLIP with cfg.strategy; train.mim passes the MIM student and teacher)."""
    # The order of the checks and of the seeded draws below is part of the run's
    # reproducibility (and of which error a bad invocation sees first): keep it.
    cfg.world_size = info.world_size
    _set_cpu_threads(cfg, info.device)
    if cfg.batch_size % info.world_size:
        raise UserError(f"--batch-size {cfg.batch_size} must divide evenly over {info.world_size} processes")
    local_batch = cfg.batch_size // info.world_size
    if local_batch % cfg.accum_steps:
        raise UserError(f"--accum-steps {cfg.accum_steps} must divide each process's batch of {local_batch} "
                        f"(--batch-size {cfg.batch_size} over {info.world_size} processes)")
    if cfg.streams:
        check_streams(cfg.streams, cfg.batch_size, info.world_size, cfg.workers)
    shards = resolve_shards(cfg.data)
    check_first_shard(shards)
    subset = load_subset_uids(cfg.subset, cfg.data) if cfg.subset else None
    budget_flops = B.parse_flops(cfg.budget) if cfg.budget is not None else None
    budget_samples = B.parse_samples(cfg.samples) if cfg.samples is not None else None
    check_eval_dir(cfg.eval_dir)
    out = Path(cfg.out)
    existing = existing_checkpoints(out, cfg.resume)

    resume_from = existing[-1] if cfg.resume and existing else None
    built = (build or _build_model)(cfg, info, resume_from)
    plan = _plan(cfg, info, built, local_batch, budget_flops, budget_samples)
    # Sharded after the FLOPs are measured (on the whole model) and before the optimiser takes its parameters.
    scalars = shard(built.module, built.model, info) if cfg.fsdp else set()
    state = _start_state(cfg, info, built, plan, resume_from, out, scalars)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_run_config(RunDir(out).config_yaml, dict(
            state.config, flops_per_step=plan.cost_main, flops_per_step_unmasked=plan.cost_tail,
            total_steps=plan.total_steps, local_batch=local_batch))
        if resume_from is None:
            report_inits(built.towers, RunDir(out))

    net = built.module if cfg.fsdp else _wrap_ddp(built.module, info)
    batches = _batches(cfg, info, built, shards, subset, local_batch, state)
    log = MetricsLog(out, info, plan.total_steps, state.counters.step, cfg.progress)
    evals = EvalHook(built.model, built.preprocess, built.tokenizer, eval_dir=cfg.eval_dir,
                     retrieval_data=cfg.retrieval_data, every=cfg.eval_every, out=out, info=info,
                     sharded=built.module if cfg.fsdp else None)
    with use_flash_attention(built.module, info.device):  # flash-attn on GPU if installed; FLOPs measured on SDPA
        Trainer(cfg, info, state, net, plan, batches, log, evals, out, budget_flops).run()

    skipped_total = save_final(state, out, info)
    c = state.counters
    eval_results = evals.final(c.step, c.samples, c.flops)
    summary = {
        "step": c.step, "samples": c.samples, "flops": c.flops,
        "flops_per_step": plan.cost_main, "skipped": skipped_total, "loss": log.last_loss,
        "out": str(out), "model": cfg.model, "strategy": cfg.strategy, **eval_results,
    }
    if info.is_main:
        write_json_atomic(RunDir(out).summary_json, summary)
    return dict(summary, eval_s=evals.seconds)  # a timing, so not in summary.json (the same bytes every run)


def _set_cpu_threads(cfg: TrainConfig, device: torch.device) -> None:
    # Oversubscribed OpenMP threads spin and stall (10x slower on a busy 2-core box), so by
    # default each local process takes its share of the cores, less one per loader worker.
    # (Two torchrun "nodes" on one host each count all its cores: pass --threads there.)
    if device.type != "cpu":
        return
    torch.set_num_threads(cfg.threads or max(1, local_cpus() - cfg.workers))


def _build_model(cfg: TrainConfig, info: DistInfo, resume_from: Path | None) -> _Model:
    """The model and its strategy module, with the same initial weights on every rank
    (DDP also broadcasts them): pretrained towers loaded (fresh runs) and locked
    (zoo.towers) before anything measures or optimises it."""
    torch.manual_seed(cfg.seed)
    towers = build_towers(**cfg.tower_arguments(), resume_from=resume_from)
    model, val_pre, tokenizer = towers.model, towers.val_preprocess, towers.tokenizer
    if strategy(cfg.strategy).drops_patches and not patch_dropout_modules(model):
        raise UserError(f"strategy {cfg.strategy} drops image patches; {cfg.model} has no patch tokens (pick a ViT or EVA model)")
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    size = image_size(model)
    norm = val_pre.transforms[-1]
    module = StrategyModule(model, cfg.strategy, size, tuple(norm.mean), tuple(norm.std),
                            rank=info.rank, world_size=info.world_size, slip_scale=cfg.slip_scale).to(info.device)
    if cfg.accum_steps > 1:
        train_mode(module)  # as it will train: locked towers in eval mode
        check_batch_statistics(module, cfg.model)
    return _Model(model, module, val_pre, tokenizer, size, towers)


def _plan(cfg: TrainConfig, info: DistInfo, built: _Model, local_batch: int, budget_flops: float | None,
          budget_samples: int | None) -> StepPlan:
    """Measure one step's FLOPs on the real module and batch shape (unless the caller
    measured them: cfg.flops_per_step), then plan the steps."""
    kind = strategy(cfg.strategy)
    patch_drop, tail_fraction = kind.patch_drop(cfg.patch_drop), kind.unmasked_fraction(cfg.unmasked_fraction)
    if cfg.flops_per_step is not None:
        # No draw from the RNG is skipped that matters: fresh runs reseed after planning, resumed runs restore it.
        return B.plan_steps(cfg.flops_per_step, cfg.flops_per_step_unmasked or cfg.flops_per_step,
                            budget_flops=budget_flops, budget_samples=budget_samples, samples_arg=cfg.samples,
                            batch_size=cfg.batch_size, tail_fraction=tail_fraction)
    device = info.device
    # A made-up batch of the real shape: its random pixels come from the seeded global RNG,
    # so this draw is part of the run's bitwise-reproducible sequence.
    images = torch.randint(0, 256, (local_batch, 3, built.image_size, built.image_size), dtype=torch.uint8, device=device)
    texts = (built.tokenizer(["a photo of a red circle on a blue background"] * local_batch).to(device)
             if built.needs_text else None)
    train_mode(built.module)  # after locking: frozen towers count no backward FLOPs
    cost_main, cost_tail = B.measure_step_costs(
        built.module, lambda: autocast_forward(built.module, images, texts, device)[0],
        patch_drop, tail_fraction > 0, info.world_size)
    return B.plan_steps(cost_main, cost_tail, budget_flops=budget_flops, budget_samples=budget_samples,
                        samples_arg=cfg.samples, batch_size=cfg.batch_size,
                        tail_fraction=tail_fraction)


def _start_state(cfg: TrainConfig, info: DistInfo, built: _Model, plan: StepPlan, resume_from: Path | None,
                 out: Path, scalars: set[str]) -> TrainState:
    """Optimiser, schedule and counters: fresh and seeded, or restored from `resume_from`
    (then metrics.jsonl and evals.jsonl lose the lines logged after that checkpoint)."""
    optimizer = make_optimizer(built.module, cfg.opt, cfg.lr, cfg.weight_decay, cfg.visual_lr, cfg.text_lr,
                               layer_decay=cfg.layer_decay)
    warmup = cfg.warmup if cfg.warmup is not None else max(1, int(0.05 * plan.total_steps))
    scheduler = cosine_with_warmup(optimizer, warmup, plan.total_steps)
    # What the run is (config.yaml, every checkpoint): not --resume, which only says how this
    # process started, so that a run killed and resumed writes the bytes of one never stopped.
    config = {k: v for k, v in cfg.to_dict().items() if k != "resume"}
    state = TrainState(cfg.model, config, built.model, built.module, optimizer, scheduler,
                       fresh_counters(cfg.workers, info.world_size, cfg.streams), hf_text=built.towers.hf_text,
                       head=built.head, scalars=scalars)
    if resume_from is not None:
        restore(state, resume_from, out, info, plan.total_steps)
    else:
        seed_training(cfg.seed, info)
    if info.is_main:  # also on a fresh start: a run killed before its first checkpoint logged lines
        truncate_metrics(RunDir(out).metrics_jsonl, state.counters.step)
        # evals.jsonl's lines carry the step too. A mid-run eval is written before its step's
        # checkpoint, so it stays; the final one comes after the last checkpoint and is redone.
        step = state.counters.step
        truncate_metrics(RunDir(out).evals_jsonl, step - 1 if step == plan.total_steps else step)
    return state


def _wrap_ddp(module: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    if not info.enabled:
        return module
    device = info.device
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def _batches(cfg: TrainConfig, info: DistInfo, built: _Model, shards: list[str], subset: SortedUids | None,
             local_batch: int, state: TrainState) -> Iterator[dict[str, Any]]:
    """This rank's batch iterator, started where the counters say its loader workers (or,
    with --streams, its streams) were."""
    c = state.counters
    positions = c.stream_positions if cfg.streams else c.positions[info.rank]
    stream = StreamConfig(
        shards=shards, batch_size=local_batch, image_size=built.image_size,
        context_length=int(getattr(built.tokenizer, "context_length", 77)), tokenizer=built.tokenizer,
        seed=cfg.seed, rank=info.rank, world_size=info.world_size, num_workers=cfg.workers,
        shuffle_buffer=cfg.shuffle_buffer, subset=subset, positions=list(positions), batches_taken=state.counters.step,
        need_text=built.needs_text, streams=cfg.streams,
    )
    state.positions = {i: q for i, q in enumerate(positions) if not cfg.streams or i in owned_streams(
        cfg.streams, info.rank, info.world_size)}
    # Starting a DataLoader iterator draws its base seed from the global RNG. Our streams are
    # seeded by themselves, and a resumed run must not draw once more than the run it
    # continues (MIM masks, FLIP drops and augmentations come from that RNG), so fork it.
    with torch.random.fork_rng(devices=[]):
        pin_memory = info.device.type == "cuda"
        return joined_batches(stream, pin_memory) if cfg.streams else iter(make_loader(stream, pin_memory))
