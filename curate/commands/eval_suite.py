"""`curate eval-suite OUT`: evaluation task folders in DataComp's / clip_benchmark's
webdataset format, for `train eval --suite OUT`."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Optional

import typer


def eval_suite(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="The suite folder: one task folder is written in it per source.")],
    demo: Annotated[Optional[Path], typer.Option("--demo", help="A demo pool (`curate demo-pool`): write its demo suite.")] = None,
    classes: Annotated[Optional[list[Path]], typer.Option("--classes", help="A class-folder eval set (one sub-folder of images per class, templates.txt): a zero-shot task named after the folder. Repeatable.")] = None,
    pairs: Annotated[Optional[list[Path]], typer.Option("--pairs", help="Image-caption pairs (images with same-named .txt files, one caption a line; or a shard set or pool): a retrieval task named after the folder. Repeatable.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Pairs taken from each --pairs source (default: all).")] = None,
    images: Annotated[int, typer.Option("--images", help="Images per demo task (class tasks round up to whole classes; digits has at most 898).")] = 1000,
    full: Annotated[bool, typer.Option("--full", help="Demo suite: the fashion task takes all of Fashion-MNIST's test split.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace task folders that exist.")] = False,
) -> None:
    """Build evaluation task folders in clip_benchmark's webdataset format.

    Each task folder holds classnames.txt, zeroshot_classification_templates.txt (or
    dataset_type.txt saying retrieval) and test/N.tar shards; `train eval RUN --suite OUT`
    scores a model on every task folder in OUT (DataComp's own folders included).
    """
    from clikit.errors import UserError
    from curate.eval_suite.classes import write_class_task
    from curate.eval_suite.demo import build_demo_suite
    from curate.eval_suite.pairs import write_pairs_task

    sources = [(p, write_class_task) for p in classes or []] + [
        (p, partial(write_pairs_task, limit=limit)) for p in pairs or []]
    if demo is None and not sources:
        raise UserError("give --demo POOL, --classes DIR or --pairs DIR (each may be repeated)")
    names = [p.resolve().name for p, _ in sources]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash:
        raise UserError(f"two sources are named {clash!r}, and a task is named after its folder; rename one")
    if demo is not None:
        if sources:
            raise UserError("--demo writes a whole suite; build --classes/--pairs tasks into another OUT")
        summary = build_demo_suite(out, demo, images=images, full=full, overwrite=overwrite)
        built = summary["tasks"]
    else:
        taken = [n for n in names if (out / n).exists()]
        if taken and not overwrite:
            raise UserError(f"{out / taken[0]} exists; remove it, choose another OUT, or pass --overwrite")
        built = {}
        for (source, write), name in zip(sources, names):
            built[name] = write(source, out / name)
    for name, count in built.items():
        typer.echo(f"{out / name}: {count} test images")
    typer.echo(f"score a model on them with: train eval RUN --suite {out}")


def register(app: typer.Typer) -> None:
    app.command("eval-suite")(eval_suite)
