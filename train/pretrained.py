"""Towers from pretrained weights for `train run` (LiT): build the model with a Hugging Face
text tower when --init-text names one, load --init-image/--init-text into a fresh run,
lock towers (--lock-image, --lock-image-unlocked-groups, --lock-text) and keep what each
load did (zoo.towers.LoadReport) for RUN/init.json.

A resumed run rebuilds the same architecture (its Hugging Face text tower from the folder
the checkpoint names, without that folder's weights), locks the same towers and loads the
checkpoint; the inits are not applied again."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clikit.errors import UserError
from shards.layout import RunDir
from train.config import TrainConfig
from train.strategies import strategy


@dataclass
class Towers:
    """The built model and what came with it."""

    model: torch.nn.Module
    val_preprocess: Any
    tokenizer: Any
    hf_text: str | None  # the Hugging Face text tower's folder, saved in every checkpoint
    reports: list = field(default_factory=list)  # zoo.towers.LoadReport, one per initialised tower


def hf_text_folder(cfg: TrainConfig, resume_from: Path | None) -> tuple[str | None, bool]:
    """(the Hugging Face text tower's folder or None, whether to load that folder's weights).

    A resumed run takes the folder its checkpoint names. A fresh run's --init-text is one
    when it is a folder that is not a `train run` folder (create_model then insists on its
    config.json); a checkpoint passes on the folder it was trained with, weights from it."""
    from zoo.checkpoint import read_checkpoint, resolve_checkpoint

    if resume_from is not None:
        return read_checkpoint(resume_from).get("hf_text"), False
    if not cfg.init_text:
        return None, False
    path = Path(cfg.init_text)
    if path.is_dir() and not RunDir(path).is_run():
        return str(path.resolve()), True
    return read_checkpoint(resolve_checkpoint(path)).get("hf_text"), False


def build_towers(cfg: TrainConfig, resume_from: Path | None) -> Towers:
    """The model of cfg.model (FLIP's patch dropout, a Hugging Face text tower), initialised
    (fresh runs only) and locked as cfg asks."""
    from zoo.models import create_model

    hf_text, hf_pretrained = hf_text_folder(cfg, resume_from)
    if hf_text:
        _quiet_transformers()
    patch_dropout = strategy(cfg.strategy).patch_drop(cfg.patch_drop)
    model, _, val_pre, tokenizer = create_model(cfg.model, patch_dropout=patch_dropout, hf_text=hf_text,
                                                hf_text_pretrained=hf_pretrained)
    towers = Towers(model, val_pre, tokenizer, hf_text)
    if resume_from is None:
        towers.reports = _load_inits(cfg, model, hf_text if hf_pretrained else None)
    _lock(cfg, model)
    return towers


def _quiet_transformers() -> None:
    # Its per-tensor "Loading weights" bar would bury the run's own output and one-line errors.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _load_inits(cfg: TrainConfig, model: torch.nn.Module, hf_folder: str | None) -> list:
    from zoo.towers import hf_text_report, init_image_tower, init_text_tower

    reports = []
    image_src = cfg.init_image or cfg.init_vision
    if image_src:
        reports.append(init_image_tower(model, image_src))
    if hf_folder:
        reports.append(hf_text_report(model, hf_folder))
    elif cfg.init_text:
        reports.append(init_text_tower(model, cfg.init_text))
    return reports


def _lock(cfg: TrainConfig, model: torch.nn.Module) -> None:
    from zoo.towers import lock_image, lock_text

    if cfg.lock_image:
        try:
            lock_image(model, cfg.lock_image_unlocked_groups)
        except (AssertionError, NotImplementedError) as exc:  # open_clip's ModifiedResNet: whole or nothing
            raise UserError(f"--lock-image-unlocked-groups {cfg.lock_image_unlocked_groups}: the image tower of "
                            f"{cfg.model} ({type(model.visual).__name__}) can only be locked whole; drop "
                            "--lock-image-unlocked-groups") from exc
    if cfg.lock_text:
        lock_text(model)


def init_summary(towers: Towers) -> dict[str, Any]:
    """RUN/init.json: each tower's LoadReport and the parameters left to train."""
    from zoo.towers import trainable

    by_tower = {r.tower: r.to_dict() for r in towers.reports}
    model = towers.model
    return {"image": by_tower.get("image"), "text": by_tower.get("text"), "hf_text": towers.hf_text,
            "trainable_params": trainable(model), "params": sum(p.numel() for p in model.parameters()),
            "trainable": sorted(n for n, p in model.named_parameters() if p.requires_grad)[:50]}


def report_inits(towers: Towers, out: Path) -> None:
    """Print each tower's LoadReport (stderr, so stdout keeps the run's JSON summary) and write
    RUN/init.json. Rank 0, fresh runs."""
    from shards.atomic import write_json_atomic

    summary = init_summary(towers)
    for report in towers.reports:
        print(report.format(), file=sys.stderr, flush=True)
    if summary["trainable_params"] < summary["params"]:
        print(f"training {summary['trainable_params']:,} of {summary['params']:,} parameters "
              "(the rest is frozen: locked towers, or a MIM student's text tower)", file=sys.stderr, flush=True)
    write_json_atomic(RunDir(out).init_json, summary)
