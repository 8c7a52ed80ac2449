"""`curate filter`: select a subset of a pool with a DuckDB recipe."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from clikit.errors import UserError
from curate.filter.recipes import describe_recipe, list_recipes, load_recipe, parse_param


def _list(pool: Optional[str], recipe: Optional[str], scores: Optional[str], dedup: Optional[str],
          clusters: Optional[str]) -> None:
    """Print each recipe (or the one named) with its parameters and needs; with POOL, mark
    the needs that pool lacks."""
    recipes = [load_recipe(recipe)] if recipe else [load_recipe(name) for name in list_recipes()]
    missing: dict[str, dict[str, str]] = {}
    if pool is not None:
        from curate.catalog import open_catalog  # duckdb
        from curate.filter.candidates import missing_needs

        with open_catalog(pool, scores=scores, dedup=dedup, clusters=clusters) as catalog:
            missing = {r.name: {need.name: catalog.unselected(need.view) or "missing"
                                for need, _ in missing_needs(catalog, r)} for r in recipes}
    typer.echo("\n\n".join(describe_recipe(r, missing.get(r.name)) for r in recipes))


def register(app: typer.Typer) -> None:
    @app.command("filter")
    def filter_(
        pool: Optional[str] = typer.Argument(None, help="Pool folder (written by `curate download`, scored by `curate score`), or its URL."),
        name: Optional[str] = typer.Option(None, "--name", help="Subset name: writes subsets/NAME.parquet and subsets/NAME.npy."),
        top: Optional[str] = typer.Option(None, "--top", help="Keep the best share of the scored samples: 40%, 0.4, or a count like 5000. Ties broken by uid."),
        by: str = typer.Option("clip_score", "--by", help="Column of the scores to rank by (with --top)."),
        scores: Optional[str] = typer.Option(None, "--scores", help="Scoring tag to use (default: the pool's only one)."),
        dedup: Optional[str] = typer.Option(None, "--dedup", help="Keep only the samples this dedup run kept (dedup/NAME)."),
        where: Optional[str] = typer.Option(None, "--where", help="Extra SQL condition on the candidates, e.g. \"width >= 64 AND caption NOT LIKE '%.jpg'\"."),
        recipe: Optional[str] = typer.Option(None, "--recipe", help=f"Recipe name from queries/ ({', '.join(list_recipes())}) or a path to a .sql file."),
        param: List[str] = typer.Option([], "--param", help="Recipe parameter k=v (repeatable), e.g. --param min_score=0.3."),
        from_npy: Optional[Path] = typer.Option(None, "--from-npy", help="Import a DataComp/DFN subset .npy instead of running a recipe."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing subset of the same name."),
        clusters: Optional[str] = typer.Option(None, "--clusters", help="Cluster run behind the `clusters` view (clusters/NAME; default: the pool's only one)."),
        list_: bool = typer.Option(False, "--list", help="Show every recipe (or the --recipe) with its parameters and the views/columns it needs, then exit; with POOL, mark what that pool lacks."),
        truth: Optional[Path] = typer.Option(None, "--truth", help="A truth.parquet (the demo pools have one): also print the kept share and the precision of what was kept (captions that match their image)."),
    ) -> None:
        """Select the best slice: --top 40%, recipes, SQL.

        Writes subsets/NAME.parquet and DataComp's subsets/NAME.npy.

        Examples: --top 40% | --recipe combined --dedup default | --from-npy datacomp_top30.npy | --list
        """
        if list_:
            _list(pool, recipe, scores, dedup, clusters)
            return
        if pool is None or name is None:
            raise UserError("give the pool and a subset name: curate filter POOL --name NAME --top 40% (or --list to see the recipes)")
        # imported when the command runs: the filter pulls in numpy and pyarrow (`curate --help` stays fast)
        from curate.filter.run import import_npy, run_filter

        if from_npy is not None:
            if top or recipe or where or param or dedup:
                raise UserError("--from-npy imports a subset as it is; drop --top/--recipe/--where/--param/--dedup")
            result = import_npy(pool, from_npy, name, overwrite=overwrite)
            in_pool = result.metadata["counts"]["in_pool"]
            typer.echo(f"imported {result.count} uids into {result.parquet} ({in_pool} of them in this pool)")
            return
        params = dict(parse_param(p) for p in param)
        if truth is not None and not truth.is_file():
            raise UserError(f"--truth {truth} does not exist; give the demo pool's truth.parquet")
        result = run_filter(
            pool, name, top=top, by=by, scores=scores, dedup=dedup, where=where,
            recipe=recipe, params=params, overwrite=overwrite, clusters=clusters,
        )
        counts = result.metadata["counts"]
        typer.echo(
            f"{result.name}: kept {result.count} of {counts['candidates_scored']} scored candidates "
            f"(recipe {result.metadata['recipe']}, scores {result.metadata['scores_tag']}) -> {result.parquet}, {result.npy}"
        )
        if truth is not None:
            from curate.truth.recipes import format_subset_quality, subset_quality  # duckdb

            typer.echo(format_subset_quality(subset_quality(pool, result.name, truth)))
