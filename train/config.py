"""What a training run is asked to do: `TrainConfig`, its checks, and runs/NAME/config.yaml."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from clikit.errors import UserError


@dataclass
class TrainConfig:
    """Everything `train run` needs; written to runs/NAME/config.yaml."""

    command: ClassVar[str] = "run"  # the command these are the options of (it picks the strategies it takes)

    data: str
    out: str
    model: str = "tiny-vit-32"
    budget: str | None = None  # training FLOPs: "3e14", "300T", "2.5P"
    samples: str | None = None  # or samples seen: "1M", "20000"
    strategy: str = "clip"
    subset: str | None = None
    patch_drop: float = 0.5  # flip only
    unmasked_fraction: float = 0.0  # flip only: last fraction of the budget without patch drop
    batch_size: int = 64  # global, over all processes
    opt: str = "lamb"
    lr: float = 1e-3
    visual_lr: float | None = None
    text_lr: float | None = None
    weight_decay: float = 0.05
    layer_decay: float | None = None  # layer-wise lr decay over the image tower's blocks (ViT/EVA)
    warmup: int | None = None  # steps; default 5% of the run
    grad_clip: float | None = None
    slip_scale: float = 1.0
    seed: int = 0
    workers: int = 2
    shuffle_buffer: int = 1000
    checkpoint_every: int = 0  # steps; 0 = only at the end
    keep_checkpoints: int = 2
    log_every: int = 10
    eval_dir: str | None = None
    eval_every: int = 0
    retrieval_data: str | None = None
    resume: bool = False
    init_vision: str | None = None  # the older name of init_image
    init_image: str | None = None  # a run dir or .pt, an open_clip checkpoint, or timm:MODEL=PATH
    init_text: str | None = None  # a checkpoint's text tower, or a Hugging Face model folder
    lock_image: bool = False
    lock_image_unlocked_groups: int = 0  # with lock_image: leave the last N layer groups trainable
    lock_text: bool = False
    grad_checkpointing: bool = False
    device: str = "auto"
    threads: int | None = None  # CPU torch threads; default: cores left after loader workers
    progress: bool = True
    world_size: int = 1  # filled in at run time from torchrun
    # FLOPs of one global step (and of an unmasked FLIP tail step) measured beforehand for this
    # model, strategy and options: `train sweep` measures each such set once and passes them to
    # its cells. None: train run measures them itself (config.yaml records them either way).
    flops_per_step: int | None = None
    flops_per_step_unmasked: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """UserError for arguments that are wrong on their face, before any process group,
        data or model is touched. A subclass (train.mim.MimConfig) adds its own checks."""
        from train.optim import OPTIMIZERS
        from train.strategies import strategy
        from zoo.models import check_model_name

        kind = strategy(self.strategy, self.command)
        check_model_name(self.model)
        if self.opt not in OPTIMIZERS:
            raise UserError(f"unknown optimiser {self.opt!r}; choose one of: {', '.join(OPTIMIZERS)}")
        if (self.budget is None) == (self.samples is None):
            raise UserError("give exactly one budget: --budget FLOPS (e.g. 3e14, 300T) or --samples N (e.g. 1M)")
        if self.batch_size < 1 or (kind.contrastive and self.batch_size < 2):
            raise UserError("--batch-size must be at least 2 for a contrastive loss" if kind.contrastive
                            else "--batch-size must be at least 1")
        if not 0.0 <= self.patch_drop < 1.0:
            raise UserError("--patch-drop must be in [0, 1)")
        if not 0.0 <= self.unmasked_fraction < 1.0:
            raise UserError("--unmasked-fraction must be in [0, 1)")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise UserError("--layer-decay must be in (0, 1], e.g. 0.75 (each block down gets 0.75x the lr)")
        if self.workers < 0:
            raise UserError("--workers must be >= 0")
        if self.init_vision and self.init_image:
            raise UserError("--init-vision is the older name of --init-image; give only one of them")
        if self.lock_image_unlocked_groups < 0:
            raise UserError("--lock-image-unlocked-groups must be >= 0")
        if (self.flops_per_step is not None and self.flops_per_step < 1) or (
                self.flops_per_step_unmasked is not None and self.flops_per_step is None):
            raise UserError("flops_per_step must be a positive count of FLOPs (flops_per_step_unmasked only beside it)")
        if (self.flops_per_step is not None and self.flops_per_step_unmasked is None
                and kind.unmasked_fraction(self.unmasked_fraction) > 0):
            raise UserError("a flip run with --unmasked-fraction handed flops_per_step also needs "
                            "flops_per_step_unmasked (an unmasked step costs more)")
        if self.lock_image_unlocked_groups and not self.lock_image:
            raise UserError("--lock-image-unlocked-groups only applies to a locked image tower; add --lock-image")


def validate(cfg: TrainConfig) -> None:
    """cfg.validate(): TrainConfig's checks and those of cfg's class."""
    cfg.validate()


def write_run_config(path: Path, data: dict[str, Any]) -> None:
    """config.yaml: the arguments plus what the run derived from them (FLOPs per step,
    steps, local batch), in argument order so a reader can rerun it."""
    import yaml

    from shards.atomic import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))
