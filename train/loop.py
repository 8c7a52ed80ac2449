"""The training loop: `run_training(TrainConfig) -> dict`, used by `train run` and callable
from Python. Budget in measured FLOPs (or samples), exact resume, DDP, eval."""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clikit.errors import UserError

# Arguments that must not change between a run and its --resume (they shape the
# data order, the model or the schedule).
RESUME_FIXED = (
    "data", "subset", "model", "strategy", "patch_drop", "unmasked_fraction", "budget", "samples",
    "batch_size", "opt", "lr", "visual_lr", "text_lr", "weight_decay", "warmup", "seed", "workers",
    "shuffle_buffer", "init_vision", "grad_clip", "slip_scale", "world_size",
)


@dataclass
class TrainConfig:
    """Everything `train run` needs; written to runs/NAME/config.yaml."""

    data: str
    out: str
    model: str = "tiny-vit-32"
    budget: str | None = None  # training FLOPs: "3e14", "300T", "2.5P"
    samples: str | None = None  # or samples seen: "1M", "20000"
    strategy: str = "clip"
    subset: str | None = None
    patch_drop: float = 0.5  # flip only
    unmasked_fraction: float = 0.0  # flip only: last fraction of the budget without patch drop
    batch_size: int = 64  # global, over all processes
    opt: str = "lamb"
    lr: float = 1e-3
    visual_lr: float | None = None
    text_lr: float | None = None
    weight_decay: float = 0.05
    warmup: int | None = None  # steps; default 5% of the run
    grad_clip: float | None = None
    slip_scale: float = 1.0
    seed: int = 0
    workers: int = 2
    shuffle_buffer: int = 1000
    checkpoint_every: int = 0  # steps; 0 = only at the end
    keep_checkpoints: int = 2
    log_every: int = 10
    eval_dir: str | None = None
    eval_every: int = 0
    retrieval_data: str | None = None
    resume: bool = False
    init_vision: str | None = None
    grad_checkpointing: bool = False
    device: str = "auto"
    threads: int | None = None  # CPU torch threads; default: cores left after loader workers
    progress: bool = True
    world_size: int = 1  # filled in at run time from torchrun

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Counters:
    step: int = 0
    samples: int = 0
    flops: int = 0
    skipped: int = 0
    positions: list[list[int]] = field(default_factory=list)  # per rank, per loader worker


def _validate(cfg: TrainConfig) -> None:
    from zoo.models import check_model_name
    from train.optim import OPTIMIZERS
    from train.strategies import check_strategy

    check_strategy(cfg.strategy)
    check_model_name(cfg.model)
    if cfg.opt not in OPTIMIZERS:
        raise UserError(f"unknown optimiser {cfg.opt!r}; choose one of: {', '.join(OPTIMIZERS)}")
    if (cfg.budget is None) == (cfg.samples is None):
        raise UserError("give exactly one budget: --budget FLOPS (e.g. 3e14, 300T) or --samples N (e.g. 1M)")
    if cfg.batch_size < 2:
        raise UserError("--batch-size must be at least 2 for a contrastive loss")
    if not 0.0 <= cfg.patch_drop < 1.0:
        raise UserError("--patch-drop must be in [0, 1)")
    if not 0.0 <= cfg.unmasked_fraction < 1.0:
        raise UserError("--unmasked-fraction must be in [0, 1)")
    if cfg.workers < 0:
        raise UserError("--workers must be >= 0")


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    import yaml

    from shards.atomic import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume drop lines logged after the checkpoint, so no step is counted twice."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError):
            break  # a torn last line from the kill
    from shards.atomic import write_text_atomic

    write_text_atomic(path, "".join(l + "\n" for l in kept))


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _init_vision(model: torch.nn.Module, path: str) -> None:
    from zoo.checkpoint import read_checkpoint, resolve_checkpoint

    file = resolve_checkpoint(path)
    state = read_checkpoint(file)["state_dict"]
    visual = {k.removeprefix("module.").removeprefix("visual."): v for k, v in state.items()
              if k.removeprefix("module.").startswith("visual.")}
    if not visual:
        raise UserError(f"--init-vision {path}: no `visual.*` weights in {file}")
    try:
        model.visual.load_state_dict(visual, strict=True)
    except RuntimeError as exc:
        raise UserError(f"--init-vision {file} does not fit this model's image tower; use a checkpoint of the same vision architecture") from exc


def run_training(cfg: TrainConfig) -> dict[str, Any]:
    """Train until the budget is spent; returns the final counters and eval results.

    Writes OUT/config.yaml, OUT/metrics.jsonl, OUT/checkpoints/step_*.pt, OUT/final.pt and
    (with eval_dir) OUT/eval.json. Only rank 0 writes."""
    from zoo.distributed import init_distributed, shutdown

    _validate(cfg)
    info = init_distributed(cfg.device)
    try:
        return _run(cfg, info)
    finally:
        shutdown(info)


def _run(cfg: TrainConfig, info) -> dict[str, Any]:
    from tqdm import tqdm

    from train import budget as B
    from zoo.checkpoint import list_checkpoints, load_state, prune_checkpoints, read_checkpoint, save_atomic
    from train.data import StreamConfig, check_first_shard, load_subset_uids, make_loader, resolve_shards
    from zoo.distributed import all_gather_object, barrier, mean_across, sum_across
    from train.evaluate import evaluate
    from zoo.models import create_model, image_size
    from train.optim import cosine_with_warmup, make_optimizer
    from train.strategies import StrategyModule, patch_dropout_modules, set_patch_drop

    cfg.world_size = info.world_size
    device = info.device
    if device.type == "cpu":
        # Oversubscribed OpenMP threads spin and stall (10x slower on a busy 2-core box), so by
        # default leave one core per loader worker and split the rest over the local processes.
        import os

        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        threads = cfg.threads or max(1, ((os.cpu_count() or 1) - cfg.workers * local) // local)
        torch.set_num_threads(threads)
    if cfg.batch_size % info.world_size:
        raise UserError(f"--batch-size {cfg.batch_size} must divide evenly over {info.world_size} processes")
    local_batch = cfg.batch_size // info.world_size
    shards = resolve_shards(cfg.data)
    check_first_shard(shards)
    subset = load_subset_uids(cfg.subset, cfg.data) if cfg.subset else None
    budget_flops = B.parse_flops(cfg.budget) if cfg.budget is not None else None
    budget_samples = B.parse_samples(cfg.samples) if cfg.samples is not None else None
    if cfg.eval_dir is not None and not Path(cfg.eval_dir).is_dir():
        raise UserError(f"--eval {cfg.eval_dir}: no such directory")

    out = Path(cfg.out)
    existing = list_checkpoints(out)
    if existing and not cfg.resume:
        raise UserError(f"{out} already holds checkpoints; pass --resume to continue it or choose another --out")
    if cfg.resume and not existing and (out / "final.pt").is_file():
        raise UserError(f"{out} is finished (final.pt) and has no checkpoint to resume; choose another --out")

    # Model: the same initial weights on every rank (DDP also broadcasts them).
    torch.manual_seed(cfg.seed)
    flip = cfg.strategy == "flip"
    model, _, val_pre, tokenizer = create_model(cfg.model, patch_dropout=cfg.patch_drop if flip else 0.0)
    if flip and not patch_dropout_modules(model):
        raise UserError(f"strategy flip drops image patches; {cfg.model} has no patch tokens (pick a ViT or EVA model)")
    if cfg.init_vision:
        _init_vision(model, cfg.init_vision)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    size = image_size(model)
    norm = val_pre.transforms[-1]
    module = StrategyModule(model, cfg.strategy, size, tuple(norm.mean), tuple(norm.std),
                            rank=info.rank, world_size=info.world_size, slip_scale=cfg.slip_scale).to(device)
    context_length = int(getattr(tokenizer, "context_length", 77))
    use_bf16 = device.type == "cuda"

    def forward(images: torch.Tensor, texts: torch.Tensor, net: torch.nn.Module):
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            return net(images, texts)

    # FLOPs of one step, measured on the real module and batch shape (forward + backward).
    fake_images = torch.randint(0, 256, (local_batch, 3, size, size), dtype=torch.uint8, device=device)
    fake_texts = tokenizer(["a photo of a red circle on a blue background"] * local_batch).to(device)
    module.train()

    def one_step_flops(drop: float) -> int:
        set_patch_drop(module, drop)
        local = B.measure_step_flops(lambda: forward(fake_images, fake_texts, module)[0], [module])
        return local * info.world_size  # budget counted globally

    cost_main = one_step_flops(cfg.patch_drop if flip else 0.0)
    cost_tail = one_step_flops(0.0) if flip and cfg.unmasked_fraction > 0 else cost_main
    if budget_flops is not None:
        tail_steps = int(cfg.unmasked_fraction * budget_flops // cost_tail) if flip else 0
        main_steps = int((budget_flops - tail_steps * cost_tail) // cost_main)
        if main_steps + tail_steps < 1:
            B.steps_for_budget(budget_flops, min(cost_main, cost_tail))
    else:
        total = budget_samples // cfg.batch_size
        if total < 1:
            raise UserError(f"--samples {cfg.samples} is smaller than one step ({cfg.batch_size} samples); "
                            "raise --samples or lower --batch-size")
        tail_steps = int(round(total * cfg.unmasked_fraction)) if flip else 0
        main_steps = total - tail_steps
    total_steps = main_steps + tail_steps

    def step_cost(step: int) -> int:
        return cost_main if step < main_steps else cost_tail

    optimizer = make_optimizer(module, cfg.opt, cfg.lr, cfg.weight_decay, cfg.visual_lr, cfg.text_lr)
    warmup = cfg.warmup if cfg.warmup is not None else max(1, int(0.05 * total_steps))
    scheduler = cosine_with_warmup(optimizer, warmup, total_steps)
    n_slots = max(1, cfg.workers)
    counters = Counters(positions=[[0] * n_slots for _ in range(info.world_size)])
    config_dict = cfg.to_dict()

    if cfg.resume and existing:
        ckpt = read_checkpoint(existing[-1])
        saved = ckpt.get("config", {})
        changed = [k for k in RESUME_FIXED if saved.get(k) != config_dict.get(k)]
        if changed:
            raise UserError(
                f"cannot resume {out}: {', '.join(changed)} differ from the checkpoint "
                f"({', '.join(f'{k}={saved.get(k)!r}' for k in changed)}); rerun with the same arguments"
            )
        load_state(model, ckpt["state_dict"], existing[-1])
        if module.slip_head is not None:
            module.slip_head.load_state_dict(ckpt["slip_head"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        counters = Counters(step=ckpt["step"], samples=ckpt["samples"], flops=ckpt["flops"],
                            skipped=ckpt["skipped"], positions=ckpt["data"]["positions"])
        _set_rng_state(ckpt["rng"][info.rank], device)
        if info.is_main:
            _truncate_metrics(out / "metrics.jsonl", counters.step)
    else:
        torch.manual_seed(cfg.seed * 1000 + 17 + info.rank)  # training randomness differs per rank
        if device.type == "cuda":
            torch.cuda.manual_seed(cfg.seed * 1000 + 17 + info.rank)

    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _write_yaml(out / "config.yaml", dict(config_dict, flops_per_step=cost_main, flops_per_step_unmasked=cost_tail,
                                              total_steps=total_steps, local_batch=local_batch))

    net: torch.nn.Module = module
    if info.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None)

    stream = StreamConfig(
        shards=shards, batch_size=local_batch, image_size=size, context_length=context_length,
        tokenizer=tokenizer, seed=cfg.seed, rank=info.rank, world_size=info.world_size,
        num_workers=cfg.workers, shuffle_buffer=cfg.shuffle_buffer, subset=subset,
        positions=list(counters.positions[info.rank]), batches_taken=counters.step,
    )
    batches = iter(make_loader(stream, pin_memory=device.type == "cuda"))
    positions = list(counters.positions[info.rank])

    def save_checkpoint() -> None:
        all_positions = all_gather_object(positions, info)
        all_rng = all_gather_object(_rng_state(device), info)
        skipped_total = counters.skipped + sum_across(skipped_local[0], info)
        if info.is_main:
            state = {
                "model_name": cfg.model, "config": config_dict, "state_dict": model.state_dict(),
                "slip_head": module.slip_head.state_dict() if module.slip_head is not None else None,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": None,
                "step": counters.step, "samples": counters.samples, "flops": counters.flops,
                "skipped": skipped_total, "data": {"positions": all_positions, "batches_taken": counters.step},
                "rng": all_rng, "flops_per_step": cost_main, "total_steps": total_steps,
            }
            save_atomic(state, out / "checkpoints" / f"step_{counters.step:08d}.pt")
            prune_checkpoints(out, cfg.keep_checkpoints)
        barrier(info)

    def run_eval() -> dict[str, Any]:
        results: dict[str, Any] = {}
        if info.is_main and (cfg.eval_dir or cfg.retrieval_data):
            results = evaluate(model, val_pre, tokenizer, cfg.eval_dir, device=device, retrieval_data=cfg.retrieval_data)
            results.update(step=counters.step, samples=counters.samples, flops=counters.flops)
            with open(out / "evals.jsonl", "a") as handle:
                handle.write(json.dumps(results) + "\n")
        barrier(info)
        return results

    bar = tqdm(total=total_steps, initial=counters.step, disable=not (cfg.progress and info.is_main),
               unit="step", dynamic_ncols=True)
    skipped_local = [0]  # unreadable samples this rank skipped since this process started
    window = {"loss": torch.zeros((), device=device), "n": 0, "wait": 0.0, "t0": time.perf_counter(), "samples": 0}
    last_loss = float("nan")
    module.train()
    eval_results: dict[str, Any] = {}
    while counters.step < total_steps:
        t_wait = time.perf_counter()
        batch = next(batches)
        window["wait"] += time.perf_counter() - t_wait
        if "error" in batch:
            raise UserError(batch["error"])
        positions[batch["logical"]] = batch["position"]
        skipped_local[0] += batch["skipped"]
        images = batch["images"].to(device, non_blocking=True)
        texts = batch["texts"].to(device, non_blocking=True)
        if flip:
            set_patch_drop(module, cfg.patch_drop if counters.step < main_steps else 0.0)
        loss, _ = forward(images, texts, net)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        with torch.no_grad():  # as in CLIP: temperature no lower than 1/100
            model.logit_scale.clamp_(0, math.log(100))
        counters.flops += step_cost(counters.step)
        counters.step += 1
        counters.samples += cfg.batch_size
        window["loss"] += loss.detach()
        window["n"] += 1
        window["samples"] += cfg.batch_size
        bar.update(1)

        last = counters.step == total_steps
        if counters.step % cfg.log_every == 0 or last:
            mean_loss = float(mean_across(window["loss"] / window["n"], info))
            elapsed = max(time.perf_counter() - window["t0"], 1e-9)
            last_loss = mean_loss
            if info.is_main:
                record = {
                    "step": counters.step, "samples": counters.samples, "flops": counters.flops,
                    "loss": mean_loss, "lr": optimizer.param_groups[0]["lr"],
                    "temperature": float(1.0 / model.logit_scale.detach().exp()),
                    "samples/s": window["samples"] / elapsed, "data-wait fraction": window["wait"] / elapsed,
                }
                with open(out / "metrics.jsonl", "a") as handle:
                    handle.write(json.dumps(record) + "\n")
                budget_used = counters.flops / budget_flops if budget_flops else counters.step / total_steps
                bar.set_postfix(budget=f"{100 * budget_used:.0f}%", loss=f"{mean_loss:.3f}",
                                rate=f"{record['samples/s']:.0f}/s")
            window = {"loss": torch.zeros((), device=device), "n": 0, "wait": 0.0,
                      "t0": time.perf_counter(), "samples": 0}
        if (cfg.checkpoint_every and counters.step % cfg.checkpoint_every == 0) or last:
            save_checkpoint()
        if cfg.eval_every and counters.step % cfg.eval_every == 0 and not last:
            run_eval()
    bar.close()

    skipped_total = counters.skipped + sum_across(skipped_local[0], info)
    if info.is_main:
        final = {"model_name": cfg.model, "config": config_dict, "state_dict": model.state_dict(),
                 "step": counters.step, "samples": counters.samples, "flops": counters.flops}
        save_atomic(final, out / "final.pt")
    barrier(info)
    eval_results = run_eval()
    summary = {
        "step": counters.step, "samples": counters.samples, "flops": counters.flops,
        "flops_per_step": cost_main, "skipped": skipped_total, "loss": last_loss,
        "out": str(out), "model": cfg.model, "strategy": cfg.strategy, **eval_results,
    }
    if info.is_main:
        from shards.atomic import write_json_atomic

        if eval_results:
            write_json_atomic(out / "eval.json", eval_results)
        write_json_atomic(out / "summary.json", summary)
    return summary
