"""Optimiser and schedule: Lamb (EVA-CLIP's default) or AdamW, cosine with linear warmup,
no weight decay on norms/biases/logit scale nor on what the towers exempt themselves
(position embeddings, class tokens), separate vision and text learning rates, and
layer-wise lr decay over the image tower's blocks (--layer-decay)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from clikit.errors import UserError

OPTIMIZERS = ("lamb", "adamw")


def _no_decay(name: str, param: nn.Parameter, exempt: set[str]) -> bool:
    # 1-d tensors are norms, biases, scales; `exempt` holds what the towers name (position
    # embeddings, class tokens, whatever their shape).
    return (param.ndim < 2 or "logit_scale" in name or "bias" in name or name in exempt
            or name.endswith(("cls_token", "class_embedding", "mask_token")))


def exempt_from_decay(module: nn.Module) -> set[str]:
    """Full names of the parameters the model's own modules exempt from weight decay: each
    submodule's `no_weight_decay()` (timm's convention, which open_clip's towers follow too:
    timm's EVA and ViT {pos_embed, cls_token, ...}, open_clip's VisionTransformer
    {positional_embedding, class_embedding}, its text tower and CLIP {positional_embedding}).
    Every submodule is asked, because open_clip's TimmModel does not pass its trunk's on."""
    names: set[str] = set()
    for prefix, sub in module.named_modules():
        own = getattr(sub, "no_weight_decay", None)
        if callable(own):
            names.update(f"{prefix}.{name}" if prefix else name for name in own())
    return names


def _tower(name: str) -> str:
    name = name.removeprefix("module.").removeprefix("model.")
    if name.startswith("visual."):
        return "visual"
    if name.startswith(("text.", "transformer.", "token_embedding", "positional_embedding", "ln_final",
                        "text_projection", "attn_mask")):
        return "text"
    return "other"  # logit_scale, SLIP head


# open_clip's own ViT has no group_matcher; this one follows timm's (stem, blocks, final norm).
_OPEN_CLIP_VIT_MATCHER = {
    "stem": r"^(?:class_embedding|positional_embedding|conv1|ln_pre)",
    "blocks": [(r"^transformer\.resblocks\.(\d+)", None), (r"^(?:ln_post|proj)", (99999,))],
}


def _image_tower(module: nn.Module) -> tuple[str, nn.Module]:
    """(the prefix of its parameter names, the image tower) of a CLIP model or a module around one."""
    for name, sub in module.named_modules():
        if name == "visual" or name.endswith(".visual"):
            return name + ".", sub
    raise UserError("--layer-decay needs a model with an image tower (no `visual` module found)")


def visual_layer_ids(module: nn.Module) -> tuple[dict[str, int], int]:
    """({full parameter name: layer id}, number of layers) for the image tower's parameters,
    layer 0 being the patch/position embeddings and the last the final norm and head (timm's
    grouping: the trunk's group_matcher for timm ViT/EVA towers). UserError for towers
    without transformer blocks."""
    from timm.models._manipulate import group_parameters

    prefix, visual = _image_tower(module)
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "group_matcher") and hasattr(trunk, "blocks"):
        inner, layer_map = "trunk.", group_parameters(trunk, trunk.group_matcher(coarse=False), reverse=True)
    elif hasattr(visual, "transformer") and hasattr(visual, "conv1"):
        inner, layer_map = "", group_parameters(visual, _OPEN_CLIP_VIT_MATCHER, reverse=True)
    else:
        raise UserError(f"--layer-decay applies to ViT/EVA image towers; {type(visual).__name__} has no "
                        "transformer blocks (drop --layer-decay)")
    ids = {prefix + inner + name: int(layer) for name, layer in layer_map.items()}
    num_layers = max(ids.values()) + 1
    for name, _ in visual.named_parameters():  # the projection head outside the trunk: last layer
        ids.setdefault(prefix + name, num_layers - 1)
    return ids, num_layers


def param_groups(module: nn.Module, lr: float, weight_decay: float,
                 visual_lr: float | None = None, text_lr: float | None = None,
                 layer_decay: float | None = None) -> list[dict]:
    """Parameter groups by tower (visual, text, other) and decay (none on norms, biases,
    logit scale, class tokens, position embeddings), each with its tower's lr; frozen
    parameters left out.

    With `layer_decay` (BEiT/EVA's layer-wise lr decay), image-tower layer i of L gets
    visual_lr x layer_decay ** (L - 1 - i): the embeddings learn slowest, the head at full lr."""
    lrs = {"visual": visual_lr or lr, "text": text_lr or lr, "other": lr}
    layer_of, num_layers = visual_layer_ids(module) if layer_decay is not None else ({}, 1)
    exempt = exempt_from_decay(module)
    groups: dict[tuple[str, bool, int], list[nn.Parameter]] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        tower = _tower(name)
        layer = layer_of.get(name, num_layers - 1) if tower == "visual" else num_layers - 1
        groups.setdefault((tower, _no_decay(name, param, exempt), layer), []).append(param)
    result = []
    for (tower, no_decay, layer), params in sorted(groups.items()):
        scale = layer_decay ** (num_layers - 1 - layer) if layer_decay is not None else 1.0
        name = f"{tower}{'-no_decay' if no_decay else ''}{f'-layer{layer}' if layer_decay is not None and tower == 'visual' else ''}"
        result.append({"params": params, "lr": lrs[tower] * scale, "weight_decay": 0.0 if no_decay else weight_decay,
                       "name": name, "lr_scale": scale})
    return result


def make_optimizer(module: nn.Module, name: str, lr: float, weight_decay: float,
                   visual_lr: float | None = None, text_lr: float | None = None,
                   betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-6,
                   layer_decay: float | None = None) -> torch.optim.Optimizer:
    """Lamb (timm) or AdamW over param_groups(module, ...)."""
    groups = param_groups(module, lr, weight_decay, visual_lr, text_lr, layer_decay)
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
