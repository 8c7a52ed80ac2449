"""Checkpoints: written atomically, read with weights_only=True, loadable by open_clip.

Every file train run writes (checkpoints/step_*.pt and final.pt) is a dict with
`state_dict` (the open_clip model's weights) and `model_name` (plus `hf_text`, the folder of
a Hugging Face text tower, when the run used one), so both
`open_clip.create_model(NAME, pretrained=FILE)` and `load_model(FILE)` read it.
"""
from __future__ import annotations

import pickle
import struct
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from clikit.errors import UserError
from shards.atomic import replacing
from shards.layout import RunDir
from zoo.models import create_model


def save_atomic(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary name in the same folder, fsync, then rename over `path`."""
    with replacing(path) as tmp, open(tmp, "wb") as handle:
        torch.save(_canonical(obj), handle)


def _canonical(obj: Any) -> Any:
    """`obj` rebuilt from fresh dicts, lists and tuples and interned strings (tensors and
    other objects as they are), so that the bytes torch.save writes depend on the values
    alone. Pickle writes an object it has already written as a back-reference: without this,
    a run resumed from a checkpoint (whose optimiser keys are the loaded strings, not the
    ones the code made) would write other bytes than a run never stopped."""
    kind = type(obj)
    if kind is str:
        return sys.intern(obj)
    if kind in (list, tuple):
        return kind(_canonical(item) for item in obj)
    if kind in (dict, OrderedDict):
        new = kind((_canonical(key), _canonical(value)) for key, value in obj.items())
        if kind is OrderedDict and vars(obj):  # a state_dict's _metadata (versions per module)
            vars(new).update(_canonical(vars(obj)))
        return new
    return obj


def load_torch_file(path: str | Path, device: str | torch.device = "cpu") -> Any:
    """torch.load(weights_only=True) with a one-line UserError for missing/corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; give a run directory or a .pt file written by `train run`")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, struct.error, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"checkpoint {path} is corrupt or not a torch checkpoint ({first[:120]}); "
                        "use another checkpoint") from exc


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """A `train run` checkpoint (a dict with a state_dict), read by load_torch_file."""
    obj = load_torch_file(path, device)
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise UserError(f"checkpoint {path} holds no model state_dict; it was not written by `train run`")
    return obj


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Step checkpoints of a run, oldest first."""
    return RunDir(run_dir).checkpoints()


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory -> its final.pt (else its newest step checkpoint); a file -> itself."""
    path = Path(path)
    if path.is_dir():
        run = RunDir(path)
        if run.final_pt.is_file():
            return run.final_pt
        steps = run.checkpoints()
        if steps:
            return steps[-1]
        raise UserError(f"{path} holds neither final.pt nor checkpoints/step_*.pt; is it a `train run` output?")
    return path


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """Load a model trained by `train run`: (model in eval mode, val preprocess, tokenizer, model_name).

    `path` is a run directory (runs/NAME), its final.pt, or one of its step checkpoints."""
    file = resolve_checkpoint(path)
    ckpt = read_checkpoint(file, device="cpu")
    name = ckpt.get("model_name")
    if not isinstance(name, str):
        raise UserError(f"checkpoint {file} does not name its model; it was not written by `train run`")
    # A Hugging Face text tower is rebuilt from its folder (config and tokenizer; weights from here).
    model, _, preprocess, tokenizer = create_model(name, hf_text=ckpt.get("hf_text"), hf_text_pretrained=False)
    load_state(model, ckpt["state_dict"], file)
    model.to(device).eval()
    return model, preprocess, tokenizer, name


def load_state(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str | Path) -> None:
    """load_state_dict(strict) with a one-line UserError when the weights do not fit the model."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise UserError(f"checkpoint {source} does not match the model ({detail[:200]}); check --model") from exc
