"""`train run`: train a CLIP model on shards until a compute budget is spent."""
from __future__ import annotations

from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        data: str = typer.Option(..., "--data", help="Shard set dir (manifest.json), pool dir (shards/*.tar), or a tar brace pattern."),
        out: str = typer.Option(..., "--out", help="Run directory, e.g. runs/NAME (config.yaml, metrics.jsonl, checkpoints/, final.pt)."),
        model: str = typer.Option("tiny-vit-32", "--model", help="open_clip model name or a project config; see `train models`."),
        budget: Optional[str] = typer.Option(None, "--budget", help="Training FLOPs to spend: 3e14, 300T, 2.5P (measured per step)."),
        samples: Optional[str] = typer.Option(None, "--samples", help="Or a budget in samples seen: 20000, 50k, 1M."),
        strategy: str = typer.Option("clip", "--strategy", help="clip | flip | clip-aug | slip."),
        subset: Optional[str] = typer.Option(None, "--subset", help="Keep only these uids: POOL/subsets/NAME.parquet by NAME, or a parquet path."),
        patch_drop: float = typer.Option(0.5, "--patch-drop", help="flip: fraction of image patches dropped."),
        unmasked_fraction: float = typer.Option(0.0, "--unmasked-fraction", help="flip: last fraction of the budget trained without patch drop."),
        batch_size: int = typer.Option(64, "--batch-size", help="Global batch size (split over torchrun processes)."),
        opt: str = typer.Option("lamb", "--opt", help="lamb (timm) | adamw."),
        lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (cosine schedule with warmup)."),
        visual_lr: Optional[float] = typer.Option(None, "--visual-lr", help="Peak learning rate of the image tower (default --lr)."),
        text_lr: Optional[float] = typer.Option(None, "--text-lr", help="Peak learning rate of the text tower (default --lr)."),
        weight_decay: float = typer.Option(0.05, "--wd", help="Weight decay (never on norms, biases, logit scale)."),
        layer_decay: Optional[float] = typer.Option(None, "--layer-decay", help="Layer-wise lr decay of a ViT/EVA image tower (BEiT/EVA): block i of L trains at lr x DECAY^(L-1-i), e.g. 0.75; useful after --init-image."),
        warmup: Optional[int] = typer.Option(None, "--warmup", help="Warmup steps (default 5% of the run)."),
        grad_clip: Optional[float] = typer.Option(None, "--grad-clip", help="Clip the gradient norm to this value."),
        seed: int = typer.Option(0, "--seed", help="Seed of model init, data order and augmentation."),
        workers: int = typer.Option(2, "--workers", help="Data loader worker processes per training process."),
        shuffle_buffer: int = typer.Option(1000, "--shuffle-buffer", help="Samples held in the shuffle buffer of each worker."),
        checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Save a resumable checkpoint every N steps (and always at the end)."),
        log_every: int = typer.Option(10, "--log-every", help="Write a metrics.jsonl line every N steps."),
        eval_dir: Optional[str] = typer.Option(None, "--eval", help="Labelled image folder for zero-shot (+ retrieval on images with .txt captions)."),
        eval_every: int = typer.Option(0, "--eval-every", help="Also evaluate every N steps (0: only at the end)."),
        retrieval_data: Optional[str] = typer.Option(None, "--retrieval-data", help="Held-out shards for retrieval R@1/5/10 when --eval has no captions."),
        resume: bool = typer.Option(False, "--resume", help="Continue OUT from its newest checkpoint, exactly."),
        init_image: Optional[str] = typer.Option(None, "--init-image", help="Initialise the image tower (fresh runs): a `train run` dir or .pt, an open_clip checkpoint, or timm:MODEL=PATH (a timm classifier's weights for a model whose image tower is timm's MODEL). Prints what was loaded, resampled or new; saved in OUT/init.json."),
        init_text: Optional[str] = typer.Option(None, "--init-text", help="Initialise the text tower (fresh runs): a checkpoint's text tower, or a local Hugging Face model folder (config.json, tokenizer, weights), which replaces MODEL's text tower (mean pooling + a linear projection)."),
        lock_image: bool = typer.Option(False, "--lock-image", help="Freeze the image tower (LiT): no gradient, no backward FLOPs in the budget, BatchNorm statistics frozen."),
        lock_image_unlocked_groups: int = typer.Option(0, "--lock-image-unlocked-groups", help="With --lock-image: leave the last N layer groups of the image tower trainable."),
        lock_text: bool = typer.Option(False, "--lock-text", help="Freeze the text transformer; its projection must stay trainable (a Hugging Face tower from --init-text)."),
        init_vision: Optional[str] = typer.Option(None, "--init-vision", help="Older name of --init-image."),
        grad_checkpointing: bool = typer.Option(False, "--grad-checkpointing", help="Recompute activations in backward to save memory."),
        device: str = typer.Option("auto", "--device", help="auto (GPU when present) | cpu | cuda."),
        threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: cores left after loader workers)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    ) -> None:
        """Train a CLIP model under a compute budget.

        Trains MODEL on DATA with STRATEGY until the FLOP (or sample) budget is spent.
        LiT: --init-image/--init-text load pretrained towers, --lock-image/--lock-text
        freeze them (only what stays trainable gets a gradient and counts backward FLOPs)."""
        import json

        from train.loop import TrainConfig, run_training

        cfg = TrainConfig(
            data=data, out=out, model=model, budget=budget, samples=samples, strategy=strategy, subset=subset,
            patch_drop=patch_drop, unmasked_fraction=unmasked_fraction, batch_size=batch_size, opt=opt, lr=lr,
            visual_lr=visual_lr, text_lr=text_lr, weight_decay=weight_decay, layer_decay=layer_decay, warmup=warmup, grad_clip=grad_clip,
            seed=seed, workers=workers, shuffle_buffer=shuffle_buffer, checkpoint_every=checkpoint_every,
            log_every=log_every, eval_dir=eval_dir, eval_every=eval_every, retrieval_data=retrieval_data,
            resume=resume, init_vision=init_vision, init_image=init_image, init_text=init_text, lock_image=lock_image,
            lock_image_unlocked_groups=lock_image_unlocked_groups, lock_text=lock_text, grad_checkpointing=grad_checkpointing, device=device,
            threads=threads, progress=progress,
        )
        summary = run_training(cfg)
        import os

        if int(os.environ.get("RANK", "0")) == 0:
            typer.echo(json.dumps(summary))
