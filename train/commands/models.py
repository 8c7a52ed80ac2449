"""`train models`: every model name with its parameter count and measured FLOPs per sample."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("models")
    def models(
        as_json: bool = typer.Option(False, "--json", help="Print one JSON list instead of a table."),
        project_only: bool = typer.Option(False, "--project", help="Only the project's small configs (fast)."),
    ) -> None:
        """List models with parameters and FLOPs.

        Name, parameters, image size and training FLOPs per sample (measured)."""
        import json

        from zoo.models import all_model_names, project_model_names
        from train.model_facts import model_info

        names = project_model_names() if project_only else all_model_names()
        rows = []
        from tqdm import tqdm

        for name in tqdm(names, desc="measuring", disable=as_json, leave=False):
            rows.append(model_info(name))
        if as_json:
            typer.echo(json.dumps(rows, indent=1))
            return
        typer.echo(f"{'model':40s} {'params':>12s} {'image':>6s} {'train FLOPs/sample':>20s}")
        for r in rows:
            flops = f"{r['train_flops_per_sample']:.4g}" if r["train_flops_per_sample"] else r.get("error", "?")
            typer.echo(f"{r['name']:40s} {r['params']:>12,d} {r['image_size']:>6d} {flops:>20s}")
