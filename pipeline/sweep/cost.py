"""Shared work done once per sweep, not once per cell: the FLOPs of one training step for
each (model, strategy, batch, options) the grid uses, measured the way `train run` does,
so budgets that buy no step fail before any cell runs and progress can predict time left."""
from __future__ import annotations

import time
from typing import Any

from clikit.errors import UserError


def step_key(cell_train: dict[str, Any], model: str, strategy: str) -> tuple:
    """The fields a step's FLOPs depend on."""
    return (model, strategy, int(cell_train.get("batch_size", 64)), float(cell_train.get("patch_drop", 0.5)),
            bool(cell_train.get("lock_image")), bool(cell_train.get("lock_text")))


def measure_step_flops(model: str, strategy: str, fields: dict[str, Any]) -> int:
    """Global FLOPs of one step of `model` under `strategy` at the cell's batch size (CPU,
    one process), counted with torch's flop counter on the real strategy module."""
    import torch

    from train import budget as B
    from train.config import TrainConfig
    from train.pretrained import build_towers
    from train.strategies import StrategyModule
    from train.trainer import autocast_forward
    from zoo.models import image_size
    from zoo.towers import train_mode

    cfg = TrainConfig(data="", out="", model=model, strategy=strategy, samples="1", **fields)
    with torch.random.fork_rng():  # leave the caller's RNG as it was
        torch.manual_seed(0)
        towers = build_towers(cfg, None)
        size = image_size(towers.model)
        norm = towers.val_preprocess.transforms[-1]
        module = StrategyModule(towers.model, strategy, size, tuple(norm.mean), tuple(norm.std),
                                slip_scale=cfg.slip_scale)
        images = torch.randint(0, 256, (cfg.batch_size, 3, size, size), dtype=torch.uint8)
        texts = towers.tokenizer(["a photo of a red circle on a blue background"] * cfg.batch_size)
        train_mode(module)
        cpu = torch.device("cpu")
        cost, _ = B.measure_step_costs(module, lambda: autocast_forward(module, images, texts, cpu)[0],
                                       cfg.patch_drop if strategy == "flip" else 0.0, False, 1)
    return cost


def measure_all(cells: list, say=print) -> tuple[dict[tuple, int], float]:
    """{step_key: FLOPs per step} for every cell, each key measured once; and the seconds it took.
    UserError (naming the cell) when a cell's budget buys no step."""
    costs: dict[tuple, int] = {}
    started = time.perf_counter()
    for cell in cells:
        key = step_key(cell.train, cell.model, cell.strategy)
        if key not in costs:
            try:
                costs[key] = measure_step_flops(cell.model, cell.strategy, cell.train)
            except UserError as exc:
                raise UserError(f"experiment {cell.experiment}, cell {cell.id}: {exc}") from None
        steps = planned_steps(cell, costs[key])
        if steps < 1:
            what = f"{cell.budget:.3g} FLOPs" if cell.budget_kind == "flops" else f"{int(cell.budget)} samples"
            raise UserError(f"experiment {cell.experiment}, cell {cell.id}: budget {what} buys no step "
                            f"(one step costs {costs[key]:.3g} FLOPs, {key[2]} samples)")
    return costs, time.perf_counter() - started


def planned_steps(cell, flops_per_step: int) -> int:
    """Steps the cell will train (flip's unmasked tail aside)."""
    if cell.budget_kind == "flops":
        return int(cell.budget // flops_per_step)
    return int(cell.budget) // int(cell.train.get("batch_size", 64))
