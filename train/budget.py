"""Compute budgets: parse them, and measure the real FLOPs of one training step."""
from __future__ import annotations

import math
import re
from typing import Callable

import torch

from clikit.errors import UserError

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
