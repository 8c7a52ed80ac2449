"""Shared work done once per sweep, not once per cell: the FLOPs of one training step (and
of a FLIP cell's unmasked tail step) for each model, strategy and set of train options the
grid uses, measured the way `train run` does. The cells are handed these figures
(TrainConfig.flops_per_step), budgets that buy no step fail before any cell runs, and
progress predicts time left from them."""
from __future__ import annotations

import json
import time
from typing import Any

import torch

from clikit.errors import UserError
from train import budget as B
from train.config import TrainConfig
from train.strategies import StrategyModule, strategy
from train.trainer import autocast_forward
from zoo.models import image_size
from zoo.towers import build_towers, train_mode

StepCost = tuple[int, int]  # (FLOPs of a step, FLOPs of an unmasked FLIP tail step), global


def step_key(cell_train: dict[str, Any], model: str, strategy_name: str) -> tuple:
    """What a step's FLOPs may depend on: the model, the strategy and every train option
    (a few more measurements than needed beat a cell trained on another cell's figure)."""
    return model, strategy_name, json.dumps(cell_train, sort_keys=True, default=str)


def measure_step_cost(model: str, strategy_name: str, fields: dict[str, Any]) -> StepCost:
    """Global FLOPs of one step of `model` under `strategy_name` with the cell's train options (CPU,
    one process), counted with torch's flop counter on the real strategy module."""
    fields = {k: v for k, v in fields.items() if k not in ("flops_per_step", "flops_per_step_unmasked")}
    cfg = TrainConfig(data="", out="", model=model, strategy=strategy_name, samples="1", **fields)
    kind = strategy(strategy_name)
    with torch.random.fork_rng():  # leave the caller's RNG as it was
        torch.manual_seed(0)
        towers = build_towers(**cfg.tower_arguments())
        size = image_size(towers.model)
        norm = towers.val_preprocess.transforms[-1]
        module = StrategyModule(towers.model, strategy_name, size, tuple(norm.mean), tuple(norm.std),
                                slip_scale=cfg.slip_scale)
        images = torch.randint(0, 256, (cfg.batch_size, 3, size, size), dtype=torch.uint8)
        texts = towers.tokenizer(["a photo of a red circle on a blue background"] * cfg.batch_size)
        train_mode(module)
        cpu = torch.device("cpu")
        return B.measure_step_costs(module, lambda: autocast_forward(module, images, texts, cpu)[0],
                                    kind.patch_drop(cfg.patch_drop), kind.unmasked_fraction(cfg.unmasked_fraction) > 0, 1)


def measure_all(cells: list, say=print) -> tuple[dict[tuple, StepCost], float]:
    """{step_key: step cost} for every cell, each key measured once; and the seconds it took.
    UserError (naming the cell) when a cell's budget buys no step."""
    costs: dict[tuple, StepCost] = {}
    started = time.perf_counter()
    for cell in cells:
        key = step_key(cell.train, cell.model, cell.strategy)
        if key not in costs:
            try:
                costs[key] = measure_step_cost(cell.model, cell.strategy, cell.train)
            except UserError as exc:
                raise UserError(f"experiment {cell.experiment}, cell {cell.id}: {exc}") from None
        if planned_steps(cell, costs[key]) < 1:
            what = f"{cell.budget:.3g} FLOPs" if cell.budget_kind == "flops" else f"{int(cell.budget)} samples"
            raise UserError(f"experiment {cell.experiment}, cell {cell.id}: budget {what} buys no step "
                            f"(one step costs {costs[key][0]:.3g} FLOPs, "
                            f"{int(cell.train.get('batch_size', 64))} samples)")
    return costs, time.perf_counter() - started


def planned_steps(cell, cost: StepCost) -> int:
    """Steps the cell will train: train run's own step plan on the measured costs."""
    batch = int(cell.train.get("batch_size", 64))
    tail = strategy(cell.strategy).unmasked_fraction(float(cell.train.get("unmasked_fraction", 0.0)))
    flops = float(cell.budget) if cell.budget_kind == "flops" else None
    samples = int(cell.budget) if cell.budget_kind != "flops" else None
    try:
        return B.plan_steps(cost[0], cost[1], budget_flops=flops, budget_samples=samples, samples_arg=str(samples),
                          batch_size=batch, tail_fraction=tail).total_steps
    except UserError:  # not one step fits: measure_all names the cell
        return 0
