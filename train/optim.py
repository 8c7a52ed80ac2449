"""Optimiser and schedule: Lamb (EVA-CLIP's default) or AdamW, cosine with linear warmup,
no weight decay on norms/biases/logit scale, separate vision and text learning rates."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from clikit.errors import UserError

OPTIMIZERS = ("lamb", "adamw")


def _no_decay(name: str, param: nn.Parameter) -> bool:
    # 1-d tensors are norms, biases, scales; embeddings of positions and the class token too.
    return param.ndim < 2 or "logit_scale" in name or "bias" in name or name.endswith(("cls_token", "class_embedding"))


def _tower(name: str) -> str:
    name = name.removeprefix("module.").removeprefix("model.")
    if name.startswith("visual."):
        return "visual"
    if name.startswith(("text.", "transformer.", "token_embedding", "positional_embedding", "ln_final",
                        "text_projection", "attn_mask")):
        return "text"
    return "other"  # logit_scale, SLIP head


def param_groups(module: nn.Module, lr: float, weight_decay: float,
                 visual_lr: float | None = None, text_lr: float | None = None) -> list[dict]:
    """Parameter groups by tower (visual, text, other) and decay (none on norms, biases,
    logit scale, class tokens), each with its tower's lr; frozen parameters left out."""
    lrs = {"visual": visual_lr or lr, "text": text_lr or lr, "other": lr}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        groups.setdefault((_tower(name), _no_decay(name, param)), []).append(param)
    return [
        {"params": params, "lr": lrs[tower], "weight_decay": 0.0 if no_decay else weight_decay,
         "name": f"{tower}{'-no_decay' if no_decay else ''}"}
        for (tower, no_decay), params in sorted(groups.items())
    ]


def make_optimizer(module: nn.Module, name: str, lr: float, weight_decay: float,
                   visual_lr: float | None = None, text_lr: float | None = None,
                   betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-6) -> torch.optim.Optimizer:
    """Lamb (timm) or AdamW over param_groups(module, ...)."""
    groups = param_groups(module, lr, weight_decay, visual_lr, text_lr)
    if name == "lamb":
        from timm.optim import Lamb

        return Lamb(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    raise UserError(f"unknown optimiser {name!r}; choose one of: {', '.join(OPTIMIZERS)}")


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                       min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to each group's lr, then cosine decay to min_ratio x lr at total_steps."""

    # A plain function, not a callable object: LambdaLR's state_dict saves an object's
    # attributes but nothing for a function, which is what checkpoints have always held.
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
