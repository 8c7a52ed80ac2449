"""A run's model as an open_clip `local-dir:` folder, open_clip's own format: the config
(open_clip's save_config_for_hf) and the weights. Any open_clip 3 process loads it as
`local-dir:DIR`, without this project's code, so the reference tools score the same
model: `clip_benchmark eval --model local-dir:DIR --dataset wds/NAME --dataset_root TASK`.
"""
from __future__ import annotations

from pathlib import Path

import open_clip
import torch
from open_clip.push_to_hf_hub import save_config_for_hf

from clikit.errors import UserError
from zoo.checkpoint import read_checkpoint, resolve_checkpoint
from zoo.models import create_model, register_model_configs

WEIGHTS = "open_clip_pytorch_model.bin"  # a name open_clip's local-dir loader looks for


def write_open_clip_dir(checkpoint: str | Path, out: Path) -> Path:
    """Write the checkpoint's model into OUT (open_clip_config.json and the weights)."""
    file = resolve_checkpoint(checkpoint)
    ckpt = read_checkpoint(file)
    name = ckpt.get("model_name")
    if not isinstance(name, str) or ckpt.get("hf_text"):
        raise UserError(f"{file}: only a `train run` model without a Hugging Face text tower can be written "
                        "as an open_clip folder")
    register_model_configs()
    config = open_clip.get_model_config(name)
    if str(config.get("vision_cfg", {}).get("timm_model_name", "")).startswith("clipcurate_"):
        raise UserError(f"{name}'s image tower is a timm model this project registers; a plain open_clip "
                        "process cannot build it")
    model = create_model(name)[0]
    out.mkdir(parents=True, exist_ok=True)
    save_config_for_hf(model, out / "open_clip_config.json", model_config=config)
    torch.save(ckpt["state_dict"], out / WEIGHTS)
    return out
