"""`curate demo-pool OUT`: generate the demo pool."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def demo_pool(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="Folder to write the demo pool into (created; must be empty or a pool made with the same options).")],
    size: Annotated[int, typer.Option(help="Rows in the pool (metadata.parquet), noise and faults included.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, size and base URL give identical files.")] = 0,
    base_url: Annotated[str, typer.Option(help="Where `curate serve OUT` will answer; every URL starts with it.")] = "http://127.0.0.1:8000",
    seed_size: Annotated[Optional[int], typer.Option(help="Rows in the clean seed set (seed.parquet). Default: max(200, size/4).")] = None,
    eval_per_class: Annotated[int, typer.Option(help="Held-out eval images per class (eval/<class>/).")] = 20,
    source: Annotated[str, typer.Option(help="shapes: drawn with PIL; real: Fashion-MNIST photos, named GNOME icons and scikit-image photos from installed packages.")] = "shapes",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it holds something else.")] = False,
    suite: Annotated[bool, typer.Option("--suite/--no-suite", help="Also write the demo suite, OUT/suites/demo (`train eval --suite`).")] = True,
) -> None:
    """Generate a fully known demo pool with noise and faults.

    Drawn shapes of 22 classes (or, with --source real, real images that Debian and
    PyPI packages ship) with paraphrased captions, a set fraction of noisy
    captions (mismatched, generic alt text, partly wrong), exact and near duplicates, and
    faults (404, HTML, truncated, slow, redirect, tiny, huge). Writes metadata.parquet
    (LAION columns), metadata_coyo.parquet, truth.parquet, seed.parquet, images/, eval/,
    and the demo suite of evaluation task folders, suites/demo/.
    """
    # imported when the command runs: numpy, pyarrow, PIL (and clip_benchmark's task format)
    from curate.demo import make_demo_pool
    from curate.eval_suite.demo import build_demo_suite, demo_suite_dir

    summary = make_demo_pool(out, size=size, seed=seed, base_url=base_url, seed_size=seed_size,
                             eval_per_class=eval_per_class, source=source, overwrite=overwrite, progress=True)
    kinds = ", ".join(f"{k} {v}" for k, v in summary["kinds"].items() if v)
    typer.echo(f"{summary['out']}: {summary['size']} pool rows ({kinds})")
    eval_classes = len(summary["classes"]) - len(summary.get("classes_without_eval", []))
    typer.echo(f"seed set: {summary['seed_rows']} rows; eval: {summary['eval_images']} images of "
               f"{eval_classes} classes")
    if suite:
        built = build_demo_suite(demo_suite_dir(out), out, overwrite=True)  # the pool's own folder
        typer.echo(f"demo suite: {demo_suite_dir(out)} ({', '.join(f'{k} {v}' for k, v in built['tasks'].items())} "
                   "test images)")
    typer.echo(f"serve it with: curate serve {summary['out']} --port "
               f"{_port(summary['base_url'])}")


def _port(base_url: str) -> int:
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def register(app: typer.Typer) -> None:
    app.command("demo-pool")(demo_pool)
