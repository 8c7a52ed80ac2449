"""`train models`: every model name with its towers and sizes from the configs (about a second);
parameter counts and training FLOPs per sample where measured."""
from __future__ import annotations

from typing import Any, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("models")
    def models(
        names: Optional[list[str]] = typer.Argument(
            None, metavar="NAME", help="Only these models, each measured (parameters, training FLOPs per sample)."),
        measure: bool = typer.Option(False, "--measure", help="Measure every listed model (slow: all of "
                                     "open_clip's take minutes, EVA02-E and EVA01-g included)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON list instead of a table."),
        project_only: bool = typer.Option(False, "--project", help="Only the project's small configs, each "
                                          "measured (seconds)."),
    ) -> None:
        """List models from their configs: towers, image size, embedding size.

        Parameters and training FLOPs per sample (counted on a forward+backward) are measured for
        the NAMEs given, with --measure or --project, and shown from the cache of earlier
        measurements otherwise."""
        import json

        from tqdm import tqdm

        from train.model_catalog import MeasurementCache, cache_file, config_row
        from zoo.models import check_model_name, model_configs, project_model_names

        configs = model_configs()
        for name in names or []:
            check_model_name(name)
        selected = list(dict.fromkeys(names)) if names else project_model_names() if project_only else list(configs)
        to_measure = selected if (names or measure or project_only) else []
        cache = MeasurementCache(cache_file())
        rows = {name: config_row(name, configs[name]) for name in selected}
        for name in selected:
            rows[name].update(cache.get(name, configs[name]) or {})
        if to_measure:
            from train.model_facts import model_info  # torch and open_clip: seconds to import

            for name in tqdm(to_measure, desc="measuring", disable=None if len(to_measure) > 1 else True,
                             leave=False):
                row = model_info(name)
                rows[name].update(row)
                cache.put(name, configs[name], row)
            cache.save()
        if as_json:
            typer.echo(json.dumps(list(rows.values()), indent=1))
            return
        _print_table(list(rows.values()))
        unmeasured = sum(r["train_flops_per_sample"] is None and "error" not in r for r in rows.values())
        if unmeasured:
            typer.echo(f"{unmeasured} of {len(rows)} not measured yet: `train models NAME ...` or --measure "
                       f"measures them (kept in {cache_file()})")


def _print_table(rows: list[dict[str, Any]]) -> None:
    width = {key: max([len(key)] + [len(str(r[key])) for r in rows]) for key in ("name", "vision", "text")}
    typer.echo(f"{'model':{width['name']}s} {'vision':{width['vision']}s} {'text':{width['text']}s} "
               f"{'image':>5s} {'embed':>5s} {'params':>15s} {'train FLOPs/sample':>18s}")
    for r in rows:
        params = f"{r['params']:,d}" if r["params"] else "-"
        flops = f"{r['train_flops_per_sample']:.4g}" if r["train_flops_per_sample"] else r.get("error", "-")
        typer.echo(f"{r['name']:{width['name']}s} {r['vision']:{width['vision']}s} {r['text']:{width['text']}s} "
                   f"{r['image_size']:>5d} {r['embed_dim']:>5d} {params:>15s} {flops:>18s}")
