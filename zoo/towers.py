"""Towers from pretrained weights (LiT, EVA-CLIP init): build, load, resample, lock, and say
what happened. The one module that owns it: `train run`, `train mim` and the sweep's cost
measurement call `build_towers` with their config's arguments (TrainConfig.tower_arguments).

Sources for the image tower (`init_image_tower`):
  - a `train run` folder or one of its .pt files, or an open_clip checkpoint: its `visual.*`;
  - `timm:MODEL=PATH`: a timm classifier's weights for a model whose image tower is that
    timm model (open_clip's `visual.trunk`); EfficientNet weights with the original
    (lukemelas / gen-efficientnet) names are mapped onto timm's names.
Sources for the text tower (`init_text_tower`): a checkpoint's text tower. A local Hugging
Face folder is a different architecture, so it is chosen when the model is built
(`zoo.models.create_model(..., hf_text=FOLDER)`) and reported by `hf_text_report`.

Every load returns a LoadReport: each tensor of the tower is loaded, resampled (position
and patch embeddings when the grid or patch differs, with timm's functions) or new; a
tensor whose shape fits neither way stops the load with the first mismatches named, so a
partial load is never silent.

`build_towers` makes the model (with a Hugging Face text tower when --init-text names one),
loads the inits into a fresh run and locks towers; a resumed run rebuilds the same
architecture (its Hugging Face text tower from the folder the checkpoint names, without
that folder's weights) and locks the same towers, but the inits are not applied again:
the checkpoint holds the weights. `report_inits` prints each LoadReport and writes
RUN/init.json.
"""
from __future__ import annotations

import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from clikit.errors import UserError
from shards.atomic import write_json_atomic
from shards.layout import RunDir
from zoo.checkpoint import load_torch_file, read_checkpoint, resolve_checkpoint
from zoo.models import create_model

# State dict keys of the resizable embeddings: timm ViT/EVA and open_clip's own ViT.
POS_EMBED_NAMES = ("pos_embed", "positional_embedding")
PATCH_EMBED_NAMES = ("patch_embed.proj.weight", "conv1.weight")


@dataclass
class LoadReport:
    """What an init did to each tensor of one tower."""

    tower: str  # "image" or "text"
    source: str
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (name, status, detail)
    unused: list[str] = field(default_factory=list)  # source tensors the tower has no place for

    def counts(self) -> Counter:
        return Counter(status for _, status, _ in self.rows)

    def format(self, limit: int = 12) -> str:
        """A short table: counts by status, then the resampled and new tensors by name."""
        counts = self.counts()
        head = (f"{self.tower} tower <- {self.source}: "
                + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("loaded", "resampled", "new"))
                + (f"; {len(self.unused)} source tensors unused" if self.unused else ""))
        lines = [head]
        for status in ("resampled", "new"):
            named = [(n, d) for n, s, d in self.rows if s == status]
            for name, detail in named[:limit]:
                lines.append(f"  {status:<9} {name}{'  ' + detail if detail else ''}")
            if len(named) > limit:
                lines.append(f"  {status:<9} ... and {len(named) - limit} more")
        if self.unused:
            lines.append(f"  unused    {', '.join(self.unused[:limit])}{' ...' if len(self.unused) > limit else ''}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"tower": self.tower, "source": self.source, "counts": dict(self.counts()),
                "new": [n for n, s, _ in self.rows if s == "new"],
                "resampled": [n for n, s, _ in self.rows if s == "resampled"], "unused": self.unused}


# --- reading weight files ----------------------------------------------------------------

def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .pt/.pth/.bin (torch.load, weights_only) or .safetensors file.

    Unwraps {"state_dict": ...} (ours, open_clip's training) and {"model": ...}, and strips
    DDP's "module." prefix."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        if not path.is_file():
            raise UserError(f"weights file {path} does not exist")
        obj = load_file(str(path))
    else:
        obj = load_torch_file(path)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def efficientnet_legacy_to_timm(state: dict[str, torch.Tensor], trunk: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Map EfficientNet weights named like the original ports (`_conv_stem`, `_blocks.7._bn0`)
    onto timm's EfficientNet names (`conv_stem`, `blocks.3.1.bn1`).

    The original flat block index i is the i-th block of timm's stages in order. A block
    without `_expand_conv` is timm's DepthwiseSeparable block, otherwise InvertedResidual.
    Checked by ImageNet predictions on scikit-image's photos (tests/test_towers.py)."""
    blocks = [(s, j) for s, stage in enumerate(trunk.blocks) for j in range(len(stage))]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    inverted = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    expanded = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.") and "._expand_conv." in k}
    source_blocks = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.")}
    if source_blocks and max(source_blocks) + 1 != len(blocks):
        raise UserError(f"the weights have {max(source_blocks) + 1} EfficientNet blocks, the model {len(blocks)}: "
                        "they are for another EfficientNet size")
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            index = int(parts[1])
            stage, j = blocks[index]
            table = inverted if index in expanded else separable
            out[".".join([f"blocks.{stage}.{j}", table[parts[2]], *parts[3:]])] = value
        elif parts[0] in top:
            out[".".join([top[parts[0]], *parts[1:]])] = value
        else:
            out[key] = value
    return out


# --- loading with a report ----------------------------------------------------------------

def _prefix_tokens(target: int, source: int) -> int | None:
    """Class/register tokens in front of a square grid that fits both lengths, if any."""
    for prefix in range(0, 9):
        if all(n - prefix > 0 and math.isqrt(n - prefix) ** 2 == n - prefix for n in (target, source)):
            return prefix
    return None


def _resample(name: str, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """Source resized to the target's shape when it is a position or patch embedding."""
    from timm.layers import resample_abs_pos_embed, resample_patch_embed

    if name.endswith(POS_EMBED_NAMES) and source.shape[-1] == target.shape[-1] and source.dim() in (2, 3):
        flat_source, flat_target = source.reshape(-1, source.shape[-1]), target.reshape(-1, target.shape[-1])
        prefix = _prefix_tokens(flat_target.shape[0], flat_source.shape[0])
        if prefix is None:
            return None
        side = math.isqrt(flat_target.shape[0] - prefix)
        resized = resample_abs_pos_embed(flat_source.unsqueeze(0), new_size=[side, side], num_prefix_tokens=prefix)
        return resized.reshape(target.shape)
    if name.endswith(PATCH_EMBED_NAMES) and source.dim() == 4 and source.shape[:2] == target.shape[:2]:
        return resample_patch_embed(source, list(target.shape[-2:]))
    return None


def load_matching(
    module: torch.nn.Module,
    source: dict[str, torch.Tensor],
    *,
    tower: str,
    source_name: str,
    include: Callable[[str], bool] = lambda name: True,
) -> LoadReport:
    """Copy `source` into the module's tensors that `include` selects, with a report.

    Same shape: loaded. Position/patch embedding of another size: resampled. Absent from
    the source: new (left as initialised). Any other shape: UserError naming the first
    mismatches, and nothing is changed."""
    report = LoadReport(tower, source_name)
    target = {k: v for k, v in module.state_dict().items() if include(k)}
    update: dict[str, torch.Tensor] = {}
    mismatched = []
    for name, tensor in target.items():
        if name not in source:
            report.rows.append((name, "new", ""))
            continue
        value = source[name]
        if value.shape == tensor.shape:
            update[name] = value
            report.rows.append((name, "loaded", ""))
            continue
        resized = _resample(name, value, tensor)
        if resized is None:
            mismatched.append(f"{name} {tuple(value.shape)} vs {tuple(tensor.shape)}")
        else:
            update[name] = resized
            report.rows.append((name, "resampled", f"{tuple(value.shape)} -> {tuple(tensor.shape)}"))
    if mismatched:
        raise UserError(f"{source_name} does not fit the {tower} tower: {'; '.join(mismatched[:3])}"
                        f"{f' (+{len(mismatched) - 3} more)' if len(mismatched) > 3 else ''}; check --model")
    if not update:
        raise UserError(f"{source_name} has no tensor of the {tower} tower (names like {next(iter(target), '?')}); "
                        "is it the right model or file?")
    report.unused = sorted(k for k in source if k not in target)
    module.load_state_dict(update, strict=False)
    return report


# --- the two towers ------------------------------------------------------------------------

def _checkpoint_state(src: str) -> dict[str, torch.Tensor]:
    return read_state_dict(resolve_checkpoint(src))


def init_image_tower(model: torch.nn.Module, src: str) -> LoadReport:
    """Load the image tower from SRC (see the module docstring)."""
    if src.startswith("timm:"):
        arch, sep, path = src[len("timm:"):].partition("=")
        if not sep or not arch or not path:
            raise UserError(f"--init-image {src}: write timm weights as timm:MODEL=PATH, e.g. timm:efficientnet_lite0=w.pth")
        trunk = getattr(model.visual, "trunk", None)
        have = getattr(getattr(trunk, "pretrained_cfg", None) or {}, "get", lambda k: None)("architecture")
        if trunk is None or have != arch:
            raise UserError(f"--init-image {src}: the model's image tower is {have or type(model.visual).__name__}, "
                            f"not timm's {arch}; pick a --model whose vision tower is {arch}")
        state = read_state_dict(path)
        if any(k.startswith("_conv_stem.") for k in state):
            state = efficientnet_legacy_to_timm(state, trunk)
        return load_matching(trunk, state, tower="image", source_name=src)
    state = _checkpoint_state(src)
    visual = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    if not visual:
        raise UserError(f"--init-image {src} holds no image tower (no visual.* tensors); "
                        "for a timm classifier's weights write timm:MODEL=PATH")
    return load_matching(model.visual, visual, tower="image", source_name=src)


def _is_text_key(name: str) -> bool:
    return not name.startswith("visual.") and name not in ("logit_scale", "logit_bias")


def init_text_tower(model: torch.nn.Module, src: str) -> LoadReport:
    """Load the text tower (everything but visual.* and the logit scale) from a checkpoint."""
    if Path(src).is_dir() and not RunDir(src).is_run():
        raise UserError(f"--init-text {src} is a folder but neither a `train run` folder nor (config.json) a "
                        "Hugging Face model folder")
    state = {k: v for k, v in _checkpoint_state(src).items() if _is_text_key(k)}
    state = _text_keys_as_in(model, state)
    return load_matching(model, state, tower="text", source_name=src, include=_is_text_key)


def _text_keys_as_in(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The text tensors named as `model` names them: open_clip's CLIP keeps its text tower at
    the top level (token_embedding, transformer.*), CustomTextCLIP (EVA, timm towers) under
    text.*, and the weights are the same. So a ViT CLIP can hand its text tower to an EVA
    CLIP, as EVA-CLIP starts its text tower from its teacher's."""
    from open_clip.model import convert_to_custom_text_state_dict

    custom_target = hasattr(model, "text")
    custom_source = any(k.startswith("text.") for k in state)
    if custom_target and not custom_source:
        return convert_to_custom_text_state_dict(state)
    if custom_source and not custom_target:
        tower = {k[len("text."):]: v for k, v in state.items() if k.startswith("text.")}
        if "text_projection" in tower and "transformer.resblocks.0.attn.in_proj_weight" in tower:
            return tower  # an open_clip TextTransformer: the same names as CLIP's top level
    return state


def hf_text_report(model: torch.nn.Module, folder: str) -> LoadReport:
    """The report for a text tower that transformers built from a Hugging Face folder."""
    report = LoadReport("text", folder)
    for name in model.text.state_dict():
        status = "loaded" if name.startswith("transformer.") else "new"
        report.rows.append((f"text.{name}", status, ""))
    return report


# --- locking -------------------------------------------------------------------------------

def trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def lock_image(model: torch.nn.Module, unlocked_groups: int = 0) -> None:
    """Freeze the image tower but its last `unlocked_groups` layer groups. BatchNorm layers
    are not swapped for FrozenBatchNorm2d (that would drop their num_batches_tracked from the
    state dict, which a fresh model then fails to load); train_mode keeps them in eval mode,
    so their statistics stay frozen too."""
    model.lock_image_tower(unlocked_groups=unlocked_groups, freeze_bn_stats=False)


def lock_text(model: torch.nn.Module) -> None:
    """Freeze the text transformer; a tower with nothing trainable left is refused."""
    model.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)
    text = getattr(model, "text", None)
    left = trainable(text) if text is not None else sum(
        p.numel() for n, p in model.named_parameters() if p.requires_grad and _is_text_key(n))
    if left == 0:
        raise UserError("--lock-text leaves the text tower with nothing to train (this text tower's projection "
                        "is locked with it); use a Hugging Face text tower (--init-text FOLDER), whose projection "
                        "stays trainable, or drop --lock-text")


def train_mode(model: torch.nn.Module) -> None:
    """model.train(), but modules with only frozen parameters stay in eval mode (no dropout
    noise or statistics updates in a locked tower)."""
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()


# --- the model with its towers: built, initialised, locked, reported ---------------------------

@dataclass
class Towers:
    """The built model and what came with it."""

    model: torch.nn.Module
    val_preprocess: Any
    tokenizer: Any
    hf_text: str | None  # the Hugging Face text tower's folder, saved in every checkpoint
    reports: list[LoadReport] = field(default_factory=list)  # one per initialised tower


def hf_text_folder(init_text: str | None, resume_from: Path | None) -> tuple[str | None, bool]:
    """(the Hugging Face text tower's folder or None, whether to load that folder's weights).

    A resumed run takes the folder its checkpoint names. A fresh run's --init-text is one
    when it is a folder that is not a `train run` folder (create_model then insists on its
    config.json); a checkpoint passes on the folder it was trained with, weights from it."""
    if resume_from is not None:
        return read_checkpoint(resume_from).get("hf_text"), False
    if not init_text:
        return None, False
    path = Path(init_text)
    if path.is_dir() and not RunDir(path).is_run():
        return str(path.resolve()), True
    return read_checkpoint(resolve_checkpoint(path)).get("hf_text"), False


def build_towers(model_name: str, *, patch_dropout: float = 0.0, init_image: str | None = None,
                 init_text: str | None = None, lock_image_tower: bool = False, unlocked_groups: int = 0,
                 lock_text_tower: bool = False, resume_from: Path | None = None) -> Towers:
    """The model `model_name` (with `patch_dropout`, a Hugging Face text tower), its towers
    loaded from `init_image`/`init_text` (fresh runs only: `resume_from` None) and locked."""
    hf_text, hf_pretrained = hf_text_folder(init_text, resume_from)
    if hf_text:
        _quiet_transformers()
    model, _, val_pre, tokenizer = create_model(model_name, patch_dropout=patch_dropout, hf_text=hf_text,
                                                hf_text_pretrained=hf_pretrained)
    towers = Towers(model, val_pre, tokenizer, hf_text)
    if resume_from is None:
        if init_image:
            towers.reports.append(init_image_tower(model, init_image))
        if hf_pretrained:
            towers.reports.append(hf_text_report(model, hf_text))
        elif init_text:
            towers.reports.append(init_text_tower(model, init_text))
    if lock_image_tower:
        try:
            lock_image(model, unlocked_groups)
        except (AssertionError, NotImplementedError) as exc:  # open_clip's ModifiedResNet: whole or nothing
            raise UserError(f"--lock-image-unlocked-groups {unlocked_groups}: the image tower of "
                            f"{model_name} ({type(model.visual).__name__}) can only be locked whole; drop "
                            "--lock-image-unlocked-groups") from exc
    if lock_text_tower:
        lock_text(model)
    return towers


def _quiet_transformers() -> None:
    # Its per-tensor "Loading weights" bar would bury the run's own output and one-line errors.
    from transformers.utils import logging as hf_logging  # transformers: only with a Hugging Face text tower

    hf_logging.disable_progress_bar()


def init_summary(towers: Towers) -> dict[str, Any]:
    """RUN/init.json: each tower's LoadReport and the parameters left to train."""
    by_tower = {r.tower: r.to_dict() for r in towers.reports}
    model = towers.model
    return {"image": by_tower.get("image"), "text": by_tower.get("text"), "hf_text": towers.hf_text,
            "trainable_params": trainable(model), "params": sum(p.numel() for p in model.parameters()),
            "trainable": sorted(n for n, p in model.named_parameters() if p.requires_grad)[:50]}


def report_inits(towers: Towers, run: RunDir) -> None:
    """Print each tower's LoadReport (stderr, so stdout keeps the run's JSON summary) and write
    RUN/init.json. Rank 0, fresh runs."""
    summary = init_summary(towers)
    for report in towers.reports:
        print(report.format(), file=sys.stderr, flush=True)
    if summary["trainable_params"] < summary["params"]:
        print(f"training {summary['trainable_params']:,} of {summary['params']:,} parameters "
              "(the rest is frozen: locked towers, or a MIM student's text tower)", file=sys.stderr, flush=True)
    write_json_atomic(run.init_json, summary)
