"""`curate score POOL`."""
from __future__ import annotations

from typing import Annotated, Optional

import typer


def score(
    pool: Annotated[str, typer.Argument(help="A pool folder written by `curate download`, or its URL (s3://BUCKET/POOL).")],
    model: Annotated[Optional[str], typer.Option(help="open_clip model name (with --pretrained); `train models` lists the project's.")] = None,
    pretrained: Annotated[Optional[str], typer.Option(help="Weights for --model: a local file, or an open_clip pretrained tag.")] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="A `train run` output: runs/NAME, its final.pt or a step checkpoint.")] = None,
    tag: Annotated[Optional[str], typer.Option(help="Output folder name under scores/ and embeddings/ (default: from model and weights).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 256,
    workers: Annotated[Optional[int], typer.Option(help="DataLoader decoding workers (default: one per CPU core, up to 8).")] = None,
    threads: Annotated[Optional[int], typer.Option(help="torch threads for the model (default: torch's choice; with a model cheaper than decoding on a small CPU, 1 leaves the cores to the workers).")] = None,
    text_embeddings: Annotated[bool, typer.Option("--text-embeddings", help="Also write NNNNN.text.npy.")] = False,
    device: Annotated[str, typer.Option(help="auto (GPU when present), cpu, cuda, cuda:N.")] = "auto",
) -> None:
    """Score every image-text pair with a seed CLIP."""
    from curate.score.run import ScoreSettings, score_pool  # imported when the command runs: torch, open_clip

    settings = ScoreSettings(batch_size=batch_size, workers=workers, threads=threads, text_embeddings=text_embeddings, device=device)
    result = score_pool(pool, model=model, pretrained=pretrained, checkpoint=checkpoint, tag=tag, settings=settings)
    rate = result.rows / result.seconds if result.seconds > 0 else 0.0
    typer.echo(
        f"scores/{result.tag}: {result.shards_scored} shards scored ({result.rows} samples, {rate:.0f}/s, "
        f"{result.failures} undecodable), {result.shards_skipped} already done"
    )


def register(app: typer.Typer) -> None:
    app.command("score")(score)
