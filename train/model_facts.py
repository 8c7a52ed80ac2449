"""Model facts for `train models`: parameters and training FLOPs per sample, measured with
torch.utils.flop_counter on a forward+backward of one sample. Models are built on the
meta device, so even ViT-bigG costs no memory and no time to initialise."""
from __future__ import annotations

import logging
from typing import Any

import torch


def model_info(name: str, device: str = "meta") -> dict[str, Any]:
    """{name, params, image_size, train_flops_per_sample} of one open_clip model; with an
    `error` (and FLOPs None) when it cannot be built offline or counted."""
    import open_clip
    from torch.utils.flop_counter import FlopCounterMode

    from zoo.models import image_size, register_model_configs

    register_model_configs()
    row: dict[str, Any] = {"name": name, "params": 0, "image_size": 0, "train_flops_per_sample": None}
    previous = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # open_clip warns "no pretrained weights" per model
    try:
        with torch.device(device):
            model = open_clip.create_model(name, pretrained=None, pretrained_text=False, device=device)
        size = image_size(model)
        row["params"] = sum(p.numel() for p in model.parameters())
        row["image_size"] = size
        cfg = open_clip.get_model_config(name) or {}
        context = int(cfg.get("text_cfg", {}).get("context_length", 77))
        images = torch.zeros(2, 3, size, size, device=device)
        texts = torch.zeros(2, context, dtype=torch.long, device=device)
        model.train()
        counter = FlopCounterMode(display=False)
        with counter:
            out = model(images, texts)
            feats = out if isinstance(out, (tuple, list)) else list(out.values())
            loss = sum(f.float().sum() for f in feats if isinstance(f, torch.Tensor) and f.requires_grad)
            loss.backward()
        row["train_flops_per_sample"] = counter.get_total_flops() // 2
    except Exception as exc:  # a model needing a download (HF text tower) or an exotic tower
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}"
    finally:
        logging.getLogger().setLevel(previous)
    return row
