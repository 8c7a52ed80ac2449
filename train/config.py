"""What a training run is asked to do: `TrainConfig` (`train run`), `MimConfig` (`train mim`),
their checks, and runs/NAME/config.yaml."""
from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from clikit.errors import UserError
from shards.atomic import write_text_atomic
from zoo.models import check_model_name


def option(default: Any = MISSING, *, help: str, flag: str | None = None, hidden: bool = False,
           required: bool = False) -> Any:
    """A config field that is also a command-line option (train.commands.options builds it):
    its help text beside it, in the `metadata={"help": ...}` convention of transformers'
    HfArgumentParser, its flag when that is not --FIELD-NAME, hidden for an old alias,
    required when the command insists on a value its config has a default for."""
    return field(default=default, metadata={"help": help, "flag": flag, "hidden": hidden, "required": required})


@dataclass
class TrainConfig:
    """Everything `train run` needs; written to runs/NAME/config.yaml. The fields made with
    `option` are `train run`'s options, in this order; the others are set by callers."""

    command: ClassVar[str] = "run"  # the command these are the options of (it picks the strategies it takes)
    options: ClassVar[tuple[str, ...] | None] = None  # the command's options; None: every `option` field, in order
    option_help: ClassVar[dict[str, str]] = {}  # a subclass's own wording of an option's help

    data: str = option(help="Shard set dir (manifest.json), pool dir (shards/*.tar), or a tar brace pattern; "
                            "local, or a URL (s3://, gs://, http(s)://, pipe:COMMAND).")
    out: str = option(help="Run directory, e.g. runs/NAME (config.yaml, metrics.jsonl, checkpoints/, final.pt).")
    model: str = option("tiny-vit-32", help="open_clip model name or a project config; see `train models`.")
    budget: str | None = option(None, help="Training FLOPs to spend: 3e14, 300T, 2.5P (measured per step).")
    samples: str | None = option(None, help="Or a budget in samples seen: 20000, 50k, 1M.")
    strategy: str = option("clip", help="clip | flip | clip-aug | slip.")
    subset: str | None = option(None, help="Keep only these uids: POOL/subsets/NAME.parquet by NAME, or a parquet path.")
    patch_drop: float = option(0.5, help="flip: fraction of image patches dropped.")
    unmasked_fraction: float = option(0.0, help="flip: last fraction of the budget trained without patch drop.")
    batch_size: int = option(64, help="Global batch size (split over torchrun processes).")
    accum_steps: int = option(1, help=(
        "Split each process's batch into K micro-batches (less memory, one extra forward each); the "
        "contrastive loss still spans the global batch. clip, flip, clip-aug; not with BatchNorm in training."))
    opt: str = option("lamb", help="lamb (timm) | adamw.")
    lr: float = option(1e-3, help="Peak learning rate (cosine schedule with warmup).")
    visual_lr: float | None = option(None, help="Peak learning rate of the image tower (default --lr).")
    text_lr: float | None = option(None, help="Peak learning rate of the text tower (default --lr).")
    weight_decay: float = option(0.05, flag="--wd", help=(
        "Weight decay (never on norms, biases, logit scale, position embeddings, class tokens)."))
    layer_decay: float | None = option(None, help=(
        "Layer-wise lr decay of a ViT/EVA image tower (BEiT/EVA): block i of L trains at lr x DECAY^(L-1-i), "
        "e.g. 0.75; useful after --init-image."))
    warmup: int | None = option(None, help="Warmup steps (default 5% of the run).")
    grad_clip: float | None = option(None, help="Clip the gradient norm to this value.")
    slip_scale: float = 1.0  # weight of SLIP's SimCLR loss
    seed: int = option(0, help="Seed of model init, data order and augmentation.")
    workers: int = option(2, help="Data loader worker processes per training process.")
    shuffle_buffer: int = option(1000, help="Samples held in the shuffle buffer of each worker (with --streams: of each stream).")
    streams: int = option(0, help=(
        "Read the data as N fixed streams, each batch taking B/N samples from every one, so that the data order "
        "is the same at any number of processes and --resume may change it (or --workers). N must be a multiple "
        "of the processes and divide --batch-size. 0: one stream per process and loader worker."))
    checkpoint_every: int = option(0, help="Save a resumable checkpoint every N steps (and always at the end).")
    keep_checkpoints: int = 2
    log_every: int = option(10, help="Write a metrics.jsonl line every N steps.")
    eval_dir: str | None = option(None, flag="--eval", help=(
        "Labelled image folder for zero-shot (+ retrieval on images with .txt captions)."))
    eval_every: int = option(0, help="Also evaluate every N steps (0: only at the end).")
    retrieval_data: str | None = option(None, help="Held-out shards for retrieval R@1/5/10 when --eval has no captions.")
    resume: bool = option(False, help="Continue OUT from its newest checkpoint, exactly.")
    # The older name of init_image: a hidden option, kept as a field so that configs and
    # checkpoints that name it still read (and resume: train.state.RESUME_FIXED).
    init_vision: str | None = option(None, hidden=True, help="Older name of --init-image.")
    init_image: str | None = option(None, help=(
        "Initialise the image tower (fresh runs): a `train run` dir or .pt, an open_clip checkpoint, or "
        "timm:MODEL=PATH (a timm classifier's weights for a model whose image tower is timm's MODEL). Prints what "
        "was loaded, resampled or new; saved in OUT/init.json."))
    init_text: str | None = option(None, help=(
        "Initialise the text tower (fresh runs): a checkpoint's text tower, or a local Hugging Face model folder "
        "(config.json, tokenizer, weights), which replaces MODEL's text tower (mean pooling + a linear projection)."))
    lock_image: bool = option(False, help=(
        "Freeze the image tower (LiT): no gradient, no backward FLOPs in the budget, BatchNorm statistics frozen."))
    lock_image_unlocked_groups: int = option(0, help=(
        "With --lock-image: leave the last N layer groups of the image tower trainable."))
    lock_text: bool = option(False, help=(
        "Freeze the text transformer; its projection must stay trainable (a Hugging Face tower from --init-text)."))
    grad_checkpointing: bool = option(False, help="Recompute activations in backward to save memory.")
    fsdp: bool = option(False, help=(
        "Shard weights, gradients and optimiser state over the torchrun processes (PyTorch FSDP2), for towers "
        "that do not fit one device; checkpoints are the unsharded ones (they resume with or without --fsdp, "
        "at another number of processes when the run has --streams). Needs torchrun (2 or more processes "
        "to save memory)."))
    device: str = option("auto", help="auto (GPU when present) | cpu | cuda.")
    threads: int | None = option(None, help="CPU threads for torch (default: cores left after loader workers).")
    progress: bool = option(True, flag="--progress/--no-progress", help="Show a progress bar.")
    world_size: int = 1  # filled in at run time from torchrun
    # FLOPs of one global step (and of an unmasked FLIP tail step) measured beforehand for this
    # model, strategy and options: `train sweep` measures each such set once and passes them to
    # its cells. None: train run measures them itself (config.yaml records them either way).
    flops_per_step: int | None = None
    flops_per_step_unmasked: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def tower_arguments(self) -> dict[str, Any]:
        """zoo.towers.build_towers's arguments: the model, the strategy's patch drop, the inits
        (--init-vision is --init-image's older name) and the locks."""
        from train.strategies import strategy  # torch: `train --help` reads this module

        return dict(model_name=self.model, patch_dropout=strategy(self.strategy).patch_drop(self.patch_drop),
                    init_image=self.init_image or self.init_vision, init_text=self.init_text,
                    lock_image_tower=self.lock_image, unlocked_groups=self.lock_image_unlocked_groups,
                    lock_text_tower=self.lock_text)

    def validate(self) -> None:
        """UserError for arguments that are wrong on their face, before any process group,
        data or model is touched. A subclass (train.mim.MimConfig) adds its own checks."""
        # torch: `train --help` reads this module, so the optimiser and strategy tables load here.
        from train.optim import OPTIMIZERS
        from train.strategies import strategy

        kind = strategy(self.strategy, self.command)
        check_model_name(self.model)
        if self.opt not in OPTIMIZERS:
            raise UserError(f"unknown optimiser {self.opt!r}; choose one of: {', '.join(OPTIMIZERS)}")
        if (self.budget is None) == (self.samples is None):
            raise UserError("give exactly one budget: --budget FLOPS (e.g. 3e14, 300T) or --samples N (e.g. 1M)")
        if self.batch_size < 1 or (kind.contrastive and self.batch_size < 2):
            raise UserError("--batch-size must be at least 2 for a contrastive loss" if kind.contrastive
                            else "--batch-size must be at least 1")
        if self.accum_steps < 1:
            raise UserError("--accum-steps must be at least 1")
        if self.accum_steps > 1 and not kind.accumulates:
            raise UserError(f"--accum-steps does not apply to strategy {self.strategy} (its loss needs the whole "
                            "batch at once); use --accum-steps 1 or a smaller --batch-size")
        if not 0.0 <= self.patch_drop < 1.0:
            raise UserError("--patch-drop must be in [0, 1)")
        if not 0.0 <= self.unmasked_fraction < 1.0:
            raise UserError("--unmasked-fraction must be in [0, 1)")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise UserError("--layer-decay must be in (0, 1], e.g. 0.75 (each block down gets 0.75x the lr)")
        if self.workers < 0:
            raise UserError("--workers must be >= 0")
        if self.streams < 0:
            raise UserError("--streams must be >= 0 (0: one stream per process and loader worker)")
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



@dataclass
class MimConfig(TrainConfig):
    """TrainConfig plus the teacher; written to OUT/config.yaml like a `train run`'s."""

    command: ClassVar[str] = "mim"
    # train mim's options, in --help order: the teacher, then the options of a train run that
    # a MIM stage uses (no strategy, evaluation, text tower or locks), worded for a student.
    options: ClassVar[tuple[str, ...]] = (
        "teacher", "data", "out", "model", "budget", "samples", "subset", "mask_ratio", "batch_size", "opt", "lr",
        "weight_decay", "layer_decay", "warmup", "grad_clip", "init_image", "seed", "workers", "shuffle_buffer",
        "streams", "checkpoint_every", "log_every", "resume", "device", "threads", "progress")
    option_help: ClassVar[dict[str, str]] = {
        "data": "Shard set dir, pool dir or tar pattern; captions are not needed.",
        "out": "Run directory (config.yaml, metrics.jsonl, checkpoints/, final.pt).",
        "model": "The student: an EVA (or ViT) model with the teacher's patch grid.",
        "budget": "Training FLOPs to spend (measured per step, teacher forward included): 3e12, 300T.",
        "samples": "Or a budget in images seen: 20000, 50k.",
        "batch_size": "Global batch size.",
        "weight_decay": "Weight decay (never on norms, biases, tokens, position embeddings).",
        "layer_decay": "Layer-wise lr decay over the student's blocks, e.g. 0.75.",
        "init_image": "Start the student's image tower from a checkpoint (fresh runs).",
        "seed": "Seed of the student's init, data order and masks.",
        "workers": "Data loader worker processes.",
        "shuffle_buffer": "Samples held in each worker's shuffle buffer.",
    }

    model: str = "tiny-eva02-32"
    strategy: str = "mim"
    teacher: str = option("", required=True, help=(
        "The teacher CLIP: a `train run` folder or checkpoint (a ViT or EVA image tower)."))
    mask_ratio: float = option(0.4, help="Fraction of patches masked, in blocks (EVA-02: 0.4).")

    def validate(self) -> None:
        """TrainConfig's checks (its strategy record says MIM contrasts nothing: a batch of
        one will do), then the teacher and the mask."""
        super().validate()
        if not self.teacher:
            raise UserError("--teacher is required: a `train run` folder or checkpoint of the CLIP to learn from")
        if not 0.0 < self.mask_ratio < 1.0:
            raise UserError("--mask-ratio must be in (0, 1), e.g. 0.4")


def validate(cfg: TrainConfig) -> None:
    """cfg.validate(): TrainConfig's checks and those of cfg's class."""
    cfg.validate()


def write_run_config(path: Path, data: dict[str, Any]) -> None:
    """config.yaml: the arguments plus what the run derived from them (FLOPs per step,
    steps, local batch), in argument order so a reader can rerun it."""
    import yaml

    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))
