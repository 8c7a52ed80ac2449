"""`train mim`: EVA-02 masked image modelling of an EVA tower against a teacher CLIP."""
from __future__ import annotations

from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("mim")
    def mim(
        teacher: str = typer.Option(..., "--teacher", help="The teacher CLIP: a `train run` folder or checkpoint (a ViT or EVA image tower)."),
        data: str = typer.Option(..., "--data", help="Shard set dir, pool dir or tar pattern; captions are not needed."),
        out: str = typer.Option(..., "--out", help="Run directory (config.yaml, metrics.jsonl, checkpoints/, final.pt)."),
        model: str = typer.Option("tiny-eva02-32", "--model", help="The student: an EVA (or ViT) model with the teacher's patch grid."),
        budget: Optional[str] = typer.Option(None, "--budget", help="Training FLOPs to spend (measured per step, teacher forward included): 3e12, 300T."),
        samples: Optional[str] = typer.Option(None, "--samples", help="Or a budget in images seen: 20000, 50k."),
        subset: Optional[str] = typer.Option(None, "--subset", help="Keep only these uids: POOL/subsets/NAME.parquet by NAME, or a parquet path."),
        mask_ratio: float = typer.Option(0.4, "--mask-ratio", help="Fraction of patches masked, in blocks (EVA-02: 0.4)."),
        batch_size: int = typer.Option(64, "--batch-size", help="Global batch size."),
        opt: str = typer.Option("lamb", "--opt", help="lamb (timm) | adamw."),
        lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (cosine schedule with warmup)."),
        weight_decay: float = typer.Option(0.05, "--wd", help="Weight decay (never on norms, biases, tokens)."),
        layer_decay: Optional[float] = typer.Option(None, "--layer-decay", help="Layer-wise lr decay over the student's blocks, e.g. 0.75."),
        warmup: Optional[int] = typer.Option(None, "--warmup", help="Warmup steps (default 5% of the run)."),
        grad_clip: Optional[float] = typer.Option(None, "--grad-clip", help="Clip the gradient norm to this value."),
        init_image: Optional[str] = typer.Option(None, "--init-image", help="Start the student's image tower from a checkpoint (fresh runs)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the student's init, data order and masks."),
        workers: int = typer.Option(2, "--workers", help="Data loader worker processes."),
        shuffle_buffer: int = typer.Option(1000, "--shuffle-buffer", help="Samples held in each worker's shuffle buffer."),
        checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Save a resumable checkpoint every N steps (and always at the end)."),
        log_every: int = typer.Option(10, "--log-every", help="Write a metrics.jsonl line every N steps."),
        resume: bool = typer.Option(False, "--resume", help="Continue OUT from its newest checkpoint, exactly."),
        device: str = typer.Option("auto", "--device", help="auto (GPU when present) | cpu | cuda."),
        threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: cores left after loader workers)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    ) -> None:
        """Masked image modelling (EVA-02) from a teacher CLIP, under a compute budget.

        Masks about 40% of the student's patches in blocks; its tokens there regress the
        teacher's patch features, projected into its embedding space, by cosine (no
        captions needed). OUT/final.pt then initialises a CLIP: `train run --init-image OUT`."""
        import json

        from train.mim import MimConfig, run_mim

        cfg = MimConfig(
            data=data, out=out, teacher=teacher, model=model, budget=budget, samples=samples, subset=subset,
            mask_ratio=mask_ratio, batch_size=batch_size, opt=opt, lr=lr, weight_decay=weight_decay,
            layer_decay=layer_decay, warmup=warmup, grad_clip=grad_clip, init_image=init_image, seed=seed,
            workers=workers, shuffle_buffer=shuffle_buffer, checkpoint_every=checkpoint_every, log_every=log_every,
            resume=resume, device=device, threads=threads, progress=progress,
        )
        summary = run_mim(cfg)
        import os

        if int(os.environ.get("RANK", "0")) == 0:
            typer.echo(json.dumps(summary))
