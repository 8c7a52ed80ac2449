"""The seed model that scores a pool: any open_clip model with local weights or a `train run` checkpoint."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clikit.errors import UserError
from shards.layout import RunDir


@dataclass
class SeedModel:
    model: Any
    preprocess: Any
    tokenizer: Any
    model_name: str
    weights: str  # what the weights came from: a path, a pretrained tag or a run
    default_tag: str
    source: str = "pretrained"  # or "checkpoint": how `weights` is loaded again

    def describe(self) -> dict:
        return {"model": self.model_name, "weights": self.weights, "source": self.source}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "model"


def load_seed_model(model: str | None, pretrained: str | None, checkpoint: str | None, device: str = "cpu") -> SeedModel:
    """Build the scorer from exactly one weights source; errors say how to fix the call."""
    import open_clip

    from zoo.models import register_model_configs

    register_model_configs()  # the project's own small configs (tiny-vit-32, ...)

    if checkpoint and pretrained:
        raise UserError("give either --checkpoint (a `train run` output) or --pretrained (weights for --model), not both")
    if checkpoint:
        from zoo.checkpoint import load_model

        path = Path(checkpoint)
        if not path.exists():
            raise UserError(f"checkpoint {checkpoint} does not exist; give a run folder (runs/NAME) or a .pt file")
        try:
            net, preprocess, tokenizer, name = load_model(path, device=device)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged file fails deep in torch's unpickler, in many types
            first = (str(exc).strip().splitlines() or [""])[0][:120]
            raise UserError(f"checkpoint {path} is corrupt or not a torch checkpoint ({type(exc).__name__}: {first}); "
                            "use another checkpoint") from None
        if model and model != name:
            raise UserError(f"--model {model} does not match the checkpoint's model {name}; drop --model")
        run_name = path.name if path.is_dir() else (path.parent.name if path == RunDir(path.parent).final_pt else path.stem)
        return SeedModel(net, preprocess, tokenizer, name, str(path.resolve()), _slug(f"{name}-{run_name}"), "checkpoint")
    if not model:
        raise UserError("give --model NAME with --pretrained PATH_OR_TAG, or --checkpoint RUN_OR_PATH")
    if model not in open_clip.list_models():
        raise UserError(f"unknown model {model!r}; `train models` lists the project's, open_clip.list_models() the rest")
    if not pretrained:
        raise UserError(f"--model {model} needs weights: --pretrained PATH (a local file) or an open_clip tag")
    is_file = Path(pretrained).is_file()
    if not is_file and pretrained not in open_clip.list_pretrained_tags_by_model(model):
        raise UserError(f"--pretrained {pretrained} is neither a file nor an open_clip tag of {model}")
    try:
        net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained, device=device)
    except Exception as exc:  # noqa: BLE001 - hub and state-dict errors come in many types
        if is_file:
            raise UserError(f"cannot load weights {pretrained} into {model}: {str(exc).splitlines()[0][:200]}") from None
        raise UserError(
            f"open_clip could not fetch pretrained tag {pretrained!r} for {model} (no hub access here?): "
            "download the weights elsewhere and pass --pretrained PATH"
        ) from None
    net.eval()
    weights_name = Path(pretrained).stem if is_file else pretrained
    return SeedModel(net, preprocess, open_clip.get_tokenizer(model), model,
                     str(Path(pretrained).resolve()) if is_file else pretrained, _slug(f"{model}-{weights_name}"))
