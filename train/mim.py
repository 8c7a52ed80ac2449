"""`train mim` (EVA-02): masked image modelling of an EVA (or ViT) image tower against a
teacher CLIP's patch features (projected into its embedding space), under a measured FLOP
budget.

It is a training stage like `train run` and runs through the same parts (train.loop's
stage runner: train.budget's measured step plan, train.state's checkpoints and exact
resume, train.trainer's step loop, train.metrics' metrics.jsonl); only the model differs
(train.mim_model.MimModule: block-wise masks over ~40% of the patches, student tokens at
those patches regress the frozen teacher's by cosine). The student is a whole open_clip
model of --model, so final.pt is an ordinary checkpoint and `train run --init-image RUN`
loads its image tower (zoo.towers.init_image_tower)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from clikit.errors import UserError
from train.config import MimConfig, TrainConfig
from train.loop import _Model, _run
from train.mim_model import MimModule, NoPatchTokens, grid_of
from zoo.checkpoint import load_model
from zoo.distributed import DistInfo, exit_on_lost_peer, init_distributed, shutdown
from zoo.models import image_size
from zoo.towers import build_towers


def run_mim(cfg: MimConfig) -> dict[str, Any]:
    """Train until the budget is spent; returns the final counters (as run_training does).

    Writes OUT/config.yaml, OUT/metrics.jsonl, OUT/checkpoints/step_*.pt, OUT/final.pt (the
    student open_clip model) and OUT/summary.json. Only rank 0 writes."""
    cfg.validate()
    info = init_distributed(cfg.device)
    try:
        with exit_on_lost_peer(info, "train"):
            summary = _run(cfg, info, build=build_mim)
    finally:
        shutdown(info)
    return dict(summary, teacher=cfg.teacher)


def build_mim(cfg: TrainConfig, info: DistInfo, resume_from: Path | None):
    """train.loop's build step for MIM: the student (--model, --init-image applied on fresh
    runs), the teacher's image tower from its checkpoint, and the MimModule around both."""
    assert isinstance(cfg, MimConfig)
    teacher, teacher_pre, _, teacher_name = load_model(cfg.teacher)
    torch.manual_seed(cfg.seed)  # the student's initial weights, as in train run
    towers = build_towers(**cfg.tower_arguments(), resume_from=resume_from)
    model, val_pre = towers.model, towers.val_preprocess
    norm, t_norm = val_pre.transforms[-1], teacher_pre.transforms[-1]
    try:
        grid_of(model.visual)
    except NoPatchTokens as exc:
        raise UserError(f"--model {cfg.model}: {exc}; MIM masks patches, so the student must be an EVA or ViT "
                        "model (e.g. tiny-eva02-32)") from exc
    try:
        grid_of(teacher.visual)
    except NoPatchTokens as exc:
        raise UserError(f"--teacher {cfg.teacher} ({teacher_name}): {exc}; MIM regresses the teacher's patch "
                        "features, so the teacher must be a ViT or EVA CLIP") from exc
    module = MimModule(model, teacher.visual, tuple(norm.mean), tuple(norm.std), tuple(t_norm.mean),
                       tuple(t_norm.std), image_size(teacher), cfg.mask_ratio).to(info.device)
    return _Model(model, module, val_pre, None, image_size(model), towers, head=module.mim_head, needs_text=False)
