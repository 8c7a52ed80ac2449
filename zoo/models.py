"""The project's own small model configs, registered with open_clip (and timm for the towers).

open_clip's timm towers ignore vision_cfg.image_size, so a small-image EVA02 or ConvNeXt
needs its own timm model function; those are registered here under `clipcurate_*` names
and referenced by the JSON configs in zoo/model_configs/.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import re
from pathlib import Path
from typing import Any

from clikit.bounded import load_json
from clikit.errors import UserError

CONFIG_DIR = Path(__file__).parent / "model_configs"
_registered = False


def _strip_timm_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    # timm.create_model passes these to every entry point; the inner create_model resolves
    # the base architecture's own.
    kwargs.pop("pretrained_cfg", None)
    kwargs.pop("pretrained_cfg_overlay", None)
    kwargs.pop("cache_dir", None)
    return kwargs


def _eva02_32(width: int, depth: int, heads: int, kwargs: dict[str, Any]):
    """An EVA02 tower at 32 px with patch 4 (an 8x8 grid): rope, SwiGLU, scaled MLP."""
    import timm

    args = dict(
        img_size=32, patch_size=4, embed_dim=width, depth=depth, num_heads=heads,
        mlp_ratio=4 * 2 / 3, swiglu_mlp=True, scale_mlp=True,
        use_rot_pos_emb=True, ref_feat_shape=(8, 8),
    )
    # eva02_tiny's architecture with our sizes; its pretrained_cfg is metadata only, never loaded.
    return timm.create_model("eva02_tiny_patch14_224", pretrained=False, **dict(args, **_strip_timm_kwargs(kwargs)))


def _register_timm_towers() -> None:
    from timm.models import is_model, register_model

    if is_model("clipcurate_eva02_small_32"):
        return

    @register_model
    def clipcurate_eva02_tiny_32(pretrained: bool = False, **kwargs: Any):
        """EVA02 tower at 32 px: patch 4, width 128, 4 blocks, rope, SwiGLU (EVA02's recipe)."""
        return _eva02_32(128, 4, 4, kwargs)

    @register_model
    def clipcurate_eva02_small_32(pretrained: bool = False, **kwargs: Any):
        """The weak-to-strong student: tiny's recipe at width 192, 6 blocks, 6 heads."""
        return _eva02_32(192, 6, 6, kwargs)

    @register_model
    def clipcurate_convnext_tiny_32(pretrained: bool = False, **kwargs: Any):
        """ConvNeXt tower for 32 px: dims 32-256, depths 1-1-2-1, Linear MLPs (convnext_atto's 1x1 convs off)."""
        import timm

        args = dict(depths=(1, 1, 2, 1), dims=(32, 64, 128, 256), conv_mlp=False)
        return timm.create_model("convnext_atto", pretrained=False, **dict(args, **_strip_timm_kwargs(kwargs)))


def register_model_configs() -> None:
    """Register the project's model configs with open_clip and its timm towers with timm.

    Idempotent. Every zoo function that looks a name up calls it; code that calls open_clip
    directly with a project name (`open_clip.create_model("tiny-vit-32", ...)`) calls it first."""
    global _registered
    if _registered:
        return
    import open_clip

    _register_timm_towers()
    if project_model_names()[0] not in open_clip.list_models():  # e.g. a reloaded zoo.models
        open_clip.add_model_config(CONFIG_DIR)
    _registered = True


def project_model_names() -> list[str]:
    """Names of the configs shipped in zoo/model_configs/."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def _natural_key(name: str) -> list[int | str]:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name.lower())]


def model_configs() -> dict[str, dict[str, Any]]:
    """Every model config by name, as open_clip.get_model_config gives it once the project's are
    registered, in open_clip.list_models()'s order, read straight from the JSON files.

    Importing open_clip loads torch and transformers (about 5 CPU s), and open_clip 3.3.0 has no
    public API listing its configs without that import, so this reads its model_configs/ folder
    (found without importing it) by open_clip's rule: a file with embed_dim, vision_cfg and
    text_cfg, the project's folder last, names in natural order. tests/test_train_models_quick.py
    checks the result against open_clip's own."""
    spec = importlib.util.find_spec("open_clip")
    folders = [Path(p) / "model_configs" for p in (spec.submodule_search_locations or [])] if spec else []
    configs: dict[str, dict[str, Any]] = {}
    for folder in [*folders, CONFIG_DIR]:
        for file in sorted(folder.glob("*.json")):
            config = json.loads(file.read_text(encoding="utf-8"))
            if all(key in config for key in ("embed_dim", "vision_cfg", "text_cfg")):
                configs[file.stem] = config
    return {name: configs[name] for name in sorted(configs, key=_natural_key)}


def all_model_names() -> list[str]:
    """Every model name open_clip knows, the project's own included."""
    import open_clip

    register_model_configs()
    return open_clip.list_models()


def check_model_name(name: str) -> None:
    """Raise UserError for a model open_clip does not know."""
    names = all_model_names()
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, names, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(
            f"unknown model {name!r}{hint}; run `train models` to list the {len(names)} model names"
        )


def hf_text_cfg(folder: str | Path, context_length: int, pretrained: bool) -> dict[str, Any]:
    """open_clip's text_cfg for a Hugging Face text tower read from a local folder.

    Mean pooling (what sentence encoders such as MiniLM are trained with) and a linear
    projection into the joint space; `pretrained` loads the folder's weights."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
            raise UserError(f"--init-text {folder}: no config.json there; give a Hugging Face model folder "
                        "(config.json, tokenizer and weights) or a `train run` checkpoint")
    try:  # bounded before transformers reads it (clikit.bounded)
        load_json(folder / "config.json")
    except ValueError:
        raise UserError(f"--init-text {folder}: config.json is not JSON; give a Hugging Face model folder") from None
    return {"hf_model_name": str(folder.resolve()), "hf_tokenizer_name": str(folder.resolve()),
            "hf_model_pretrained": pretrained, "hf_proj_type": "linear", "hf_pooler_type": "mean_pooler",
            "context_length": context_length}


def create_model(name: str, patch_dropout: float = 0.0, device: str = "cpu", hf_text: str | None = None,
                 hf_text_pretrained: bool = True):
    """Build an untrained open_clip model plus (train preprocess, val preprocess, tokenizer).

    `hf_text`: replace the config's text tower by the Hugging Face model in that folder (its
    weights loaded when `hf_text_pretrained`; a checkpoint being restored passes False)."""
    import open_clip

    check_model_name(name)
    kwargs: dict[str, Any] = {}
    if patch_dropout > 0:
        kwargs["force_patch_dropout"] = patch_dropout
    tokenizer = None
    if hf_text:
        base = open_clip.get_model_config(name) or {}
        context = int(base.get("text_cfg", {}).get("context_length", 77))
        kwargs["text_cfg"] = hf_text_cfg(hf_text, context, hf_text_pretrained)
        kwargs["force_custom_text"] = True  # open_clip picks the model class before applying text_cfg
        import transformers

        transformers.logging.set_verbosity_error()  # its load table lists the unused BERT pooler
        tokenizer = open_clip.tokenizer.HFTokenizer(kwargs["text_cfg"]["hf_tokenizer_name"], context_length=context)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip warns "no pretrained weights" for every fresh model
    try:
        model, train_pre, val_pre = open_clip.create_model_and_transforms(
            name, pretrained=None, device=device, **kwargs
        )
    finally:
        root.setLevel(level)
    return model, train_pre, val_pre, tokenizer or open_clip.get_tokenizer(name)


def image_size(model) -> int:
    """The square input size the model's vision tower expects."""
    size = getattr(model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
