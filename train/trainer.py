"""The step loop: one optimiser step per batch until the step plan is done, logging,
checkpointing and evaluating when they are due."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from clikit.errors import UserError
from train.accumulate import accumulated_backward
from train.budget import StepPlan
from train.config import TrainConfig
from train.eval_hook import EvalHook
from train.metrics import MetricsLog
from train.sharding import full_value, gradient_sync_paused
from train.state import TrainState, save_checkpoint
from train.strategies import set_patch_drop, strategy
from zoo.distributed import DistInfo
from zoo.towers import train_mode


def autocast_forward(net: torch.nn.Module, images: torch.Tensor, texts: torch.Tensor,
                     device: torch.device, **options: Any) -> tuple[Any, ...]:
    """The strategy's (loss, logs) (or what `options` ask of it), in bf16 autocast on GPU and
    plain fp32 on CPU."""
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return net(images, texts, **options)


class Trainer:
    """Runs the steps of one process. `net` is the StrategyModule (sharded with --fsdp), or DDP around it."""

    def __init__(self, cfg: TrainConfig, info: DistInfo, state: TrainState, net: torch.nn.Module, plan: StepPlan,
                 batches: Iterator[dict[str, Any]], log: MetricsLog, evals: EvalHook, out: Path,
                 budget_flops: float | None) -> None:
        self.cfg, self.info, self.state, self.net, self.plan = cfg, info, state, net, plan
        self.batches, self.log, self.evals, self.out = batches, log, evals, out
        self.budget_flops = budget_flops
        kind = strategy(cfg.strategy)
        self.drops_patches, self.contrastive = kind.drops_patches, kind.contrastive

    def run(self) -> None:
        """Step until plan.total_steps; checkpoints (always after the last step) and
        mid-run evaluations as configured."""
        c = self.state.counters
        train_mode(self.state.module)  # locked towers stay in eval mode (no dropout, frozen BN)
        while c.step < self.plan.total_steps:
            self.step(self._next_batch())
            last = c.step == self.plan.total_steps
            if c.step % self.cfg.log_every == 0 or last:
                self.log.write(c.step, c.samples, c.flops, self._logged_lr(), self._logit_scale(), self.budget_flops)
            # Evaluate before the checkpoint of the same step: a kill between the two resumes from
            # the checkpoint before, whose resume drops this eval line and evaluates the step again.
            if self.evals.due(c.step, last):
                self.evals(c.step, c.samples, c.flops)
            if (self.cfg.checkpoint_every and c.step % self.cfg.checkpoint_every == 0) or last:
                save_checkpoint(self.state, self.out, self.cfg.keep_checkpoints, self.plan.cost_main,
                                self.plan.total_steps, self.info)
        self.log.close()

    def _logged_lr(self) -> float:
        """The lr metrics.jsonl reports: the first group's ("other": logit scale or the MIM
        head, always at the full --lr, also with --layer-decay)."""
        return self.state.optimizer.param_groups[0]["lr"]

    def _logit_scale(self) -> torch.Tensor | None:
        """What metrics.jsonl turns into the temperature; None for a loss without one (MIM).
        Whole when sharded (--fsdp; a collective, like the line's mean loss)."""
        return full_value(self.state.model.logit_scale) if self.contrastive else None

    def _next_batch(self) -> dict[str, Any]:
        """The next batch; records the loader position it reached and what it skipped."""
        t_wait = time.perf_counter()
        batch = next(self.batches)
        self.log.waited(time.perf_counter() - t_wait)
        if "error" in batch:
            raise UserError(batch["error"])
        self.state.positions.update(batch["positions"])
        self.state.skipped_here += batch["skipped"]
        return batch

    def step(self, batch: dict[str, Any]) -> None:
        """One optimiser step on one batch, then the counters."""
        state, cfg, c, device = self.state, self.cfg, self.state.counters, self.info.device
        images = batch["images"].to(device, non_blocking=True)
        texts = batch["texts"].to(device, non_blocking=True) if batch["texts"] is not None else None
        if self.drops_patches:
            set_patch_drop(state.module, 0.0 if self.plan.in_tail(c.step) else cfg.patch_drop)
        if cfg.accum_steps > 1:
            loss = accumulated_backward(
                lambda im, tx: autocast_forward(self.net, im, tx, device, features_only=True),
                state.module.clip_loss, images, texts, cfg.accum_steps, device,
                no_sync=gradient_sync_paused(self.net))
        else:
            loss, _ = autocast_forward(self.net, images, texts, device)
            loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(state.module.parameters(), cfg.grad_clip)
        state.optimizer.step()
        state.optimizer.zero_grad(set_to_none=True)
        state.scheduler.step()
        if self.contrastive:
            with torch.no_grad():  # as in CLIP: temperature no lower than 1/100
                state.model.logit_scale.clamp_(0, math.log(100))
        c.flops += self.plan.cost(c.step)
        c.step += 1
        c.samples += cfg.batch_size
        self.log.stepped(loss, cfg.batch_size)
