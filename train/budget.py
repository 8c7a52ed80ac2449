"""Compute budgets: parse them, measure the real FLOPs of one training step, and turn a
budget (FLOPs or samples) into the run's step plan."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

import torch

from clikit.errors import UserError
from train.strategies import set_patch_drop

_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGbBtTpPeE]?)\s*(?:FLOPS?|flops?)?\s*$")


def _parse(text: str, what: str) -> float:
    match = _NUMBER.match(str(text))
    if not match:
        raise UserError(f"{what} {text!r} is not a number; write e.g. 3e14, 300T, 2.5P (FLOPs) or 1M (samples)")
    value = float(match.group(1)) * _SUFFIX[match.group(2).upper()]
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{what} {text!r} must be a positive number")
    return value


def parse_flops(text: str | float | int) -> float:
    """'3e14', '300T', '2.5P', '1.2e3G' -> FLOPs as a float."""
    return _parse(str(text), "budget")


def parse_samples(text: str | int) -> int:
    """'1M', '50k', '20000' -> a sample count."""
    return int(round(_parse(str(text), "--samples")))


def format_flops(value: float) -> str:
    """3.2e14 -> '320T': the short form the CLI and the progress bar print."""
    for suffix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def measure_step_flops(step: Callable[[], torch.Tensor], modules: list[torch.nn.Module]) -> int:
    """FLOPs of one forward+backward of `step` (a closure returning the loss), counted by
    torch.utils.flop_counter on the real model, strategy and batch shape.

    The measurement leaves no trace: RNG, buffers (BatchNorm statistics) and gradients are
    restored, so a run that measures is bitwise the same as one that does not."""
    from torch.utils.flop_counter import FlopCounterMode

    saved = [{k: v.detach().clone() for k, v in m.state_dict(keep_vars=True).items() if not isinstance(v, torch.nn.Parameter)}
             for m in modules]
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        counter = FlopCounterMode(display=False)
        with counter:
            loss = step()
            loss.backward()
        total = counter.get_total_flops()
    for module, buffers in zip(modules, saved):
        for name, value in module.state_dict(keep_vars=True).items():
            if name in buffers:
                value.data.copy_(buffers[name])
        for p in module.parameters():
            p.grad = None
    if total <= 0:
        raise UserError("measured 0 FLOPs for one training step; the model has no countable ops")
    return int(total)


def steps_for_budget(budget_flops: float, flops_per_step: int) -> int:
    """Whole steps that fit in the budget; UserError when not even one does."""
    steps = int(budget_flops // flops_per_step)
    if steps < 1:
        raise UserError(
            f"budget {format_flops(budget_flops)} FLOPs is smaller than one step "
            f"({format_flops(flops_per_step)} FLOPs); raise --budget or lower --batch-size"
        )
    return steps


@dataclass(frozen=True)
class StepPlan:
    """How many steps the run takes and what each costs (global FLOPs, all processes).

    FLIP with --unmasked-fraction trains `main_steps` with patch drop, then `tail_steps`
    without it; every other strategy has no tail and one cost."""

    main_steps: int
    tail_steps: int
    cost_main: int
    cost_tail: int

    @property
    def total_steps(self) -> int:
        return self.main_steps + self.tail_steps

    def in_tail(self, step: int) -> bool:
        """True when step (0-based) trains without patch drop."""
        return step >= self.main_steps

    def cost(self, step: int) -> int:
        """Global FLOPs of step (0-based)."""
        return self.cost_tail if self.in_tail(step) else self.cost_main


def _global_step_flops(module: torch.nn.Module, drop: float, loss_of_step: Callable[[], torch.Tensor],
                       world_size: int) -> int:
    set_patch_drop(module, drop)
    return measure_step_flops(loss_of_step, [module]) * world_size  # the budget is counted globally


def measure_step_costs(module: torch.nn.Module, loss_of_step: Callable[[], torch.Tensor], patch_drop: float,
                       measure_tail: bool, world_size: int) -> tuple[int, int]:
    """(cost of a step with `patch_drop`, cost of an unmasked tail step), global FLOPs.
    The tail is measured only when the run has one; otherwise both are the same."""
    cost_main = _global_step_flops(module, patch_drop, loss_of_step, world_size)
    cost_tail = _global_step_flops(module, 0.0, loss_of_step, world_size) if measure_tail else cost_main
    return cost_main, cost_tail


def plan_steps(cost_main: int, cost_tail: int, *, budget_flops: float | None, budget_samples: int | None,
               samples_arg: str | None, batch_size: int, tail_fraction: float) -> StepPlan:
    """Steps from a FLOP budget (the tail takes `tail_fraction` of the FLOPs) or from a
    sample budget (the tail takes that fraction of the steps). tail_fraction is 0 unless
    the strategy is flip. UserError when not one step fits."""
    if budget_flops is not None:
        tail_steps = int(tail_fraction * budget_flops // cost_tail)
        main_steps = int((budget_flops - tail_steps * cost_tail) // cost_main)
        if main_steps + tail_steps < 1:
            steps_for_budget(budget_flops, min(cost_main, cost_tail))  # raises, naming the sizes
        return StepPlan(main_steps, tail_steps, cost_main, cost_tail)
    total = budget_samples // batch_size
    if total < 1:
        raise UserError(f"--samples {samples_arg} is smaller than one step ({batch_size} samples); "
                        "raise --samples or lower --batch-size")
    tail_steps = int(round(total * tail_fraction))
    return StepPlan(total - tail_steps, tail_steps, cost_main, cost_tail)
