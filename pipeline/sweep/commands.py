"""`train sweep` and `train report`, plugged into the train CLI through the
`clipcurate.commands` entry points "train.sweep" and "train.report" (train never imports the
pipeline layer, which may use both stages: the sweep makes its subsets with curate's filter)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer



def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="Sweep YAML: pool, scores/dedup tags, eval folder and a grid of "
                                                    "experiments (data x models x strategies x budgets x seeds); "
                                                    "see sweeps/smoke.yaml.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: results.parquet, cells/, runs/. Rerunning into it "
                                                    "skips finished cells and resumes half-run ones.")],
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="Cells run side by side on this machine.")] = 1,
    executor: Annotated[str, typer.Option(help="local (this machine) or ray (a Ray cluster; pip install -e '.[sweep]').")] = "local",
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (host:port, or 'auto'); default: a new "
                                                        "local Ray instance.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Run the file's quick: cut instead of the whole grid.")] = False,
    pool: Annotated[Optional[str], typer.Option(help="Pool to use instead of the file's pool: (a folder or a URL).")] = None,
    eval_dir: Annotated[Optional[Path], typer.Option("--eval", help="Eval folder instead of the file's eval:.")] = None,
    eval_suite: Annotated[Optional[Path], typer.Option(
        "--eval-suite", help="Eval suite (a folder of task folders) instead of the file's eval_suite:; default: the "
                             "demo suite of the demo pool the pool came from, when it has one.")] = None,
    report: Annotated[bool, typer.Option(help="Write the report (report.md, report.html, PNGs) at the end.")] = True,
) -> None:
    """Run a grid of train runs (one per cell) with eval; results in OUT/results.parquet."""
    # torch, through train (the spec checks budgets with train.budget): not for `train --help`
    from pipeline.sweep.run import SweepOptions, run_sweep
    from pipeline.sweep.spec import load_sweep

    spec = load_sweep(sweep_file, quick=quick, pool=str(pool) if pool else None,
                      eval_dir=str(eval_dir) if eval_dir else None, eval_suite=str(eval_suite) if eval_suite else None)
    summary = run_sweep(spec, out, SweepOptions(jobs=jobs, executor=executor, address=address, say=typer.echo))
    if report and summary["ok"]:
        from pipeline.report import write_report  # numpy, pyarrow, matplotlib: not for `train --help`

        written = write_report(out)
        typer.echo(f"   report: {written['html']} ({len(written['pngs'])} plots)")


def report(
    out: Annotated[Path, typer.Argument(help="A sweep's output folder (with results.parquet).")],
    metric: Annotated[Optional[str], typer.Option(
        help="The figure the report judges: a results.parquet column (zeroshot_top1, image_to_text_R@1, ...) or "
             "a suite task's name (its headline). Default: the eval suite's average, else zeroshot_top1.")] = None,
) -> None:
    """Plot, fit and summarise a sweep: OUT/report.md, OUT/report.html (self-contained) and OUT/plots/*.png."""
    from pipeline.report import write_report  # numpy, pyarrow, matplotlib: not for `train --help`

    written = write_report(out, metric)
    typer.echo(f"{written['md']}\n{written['html']}\n" + "\n".join(str(p) for p in written["pngs"]))


def register_sweep(app: typer.Typer) -> None:
    app.command("sweep")(sweep)


def register_report(app: typer.Typer) -> None:
    app.command("report")(report)
