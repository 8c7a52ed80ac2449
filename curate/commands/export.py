"""`curate export`: write a subset as an open_clip-readable webdataset shard set."""
from __future__ import annotations


import typer


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        pool: str = typer.Argument(..., help="Pool folder holding the subset, or its URL (s3://BUCKET/POOL)."),
        out: str = typer.Argument(..., help="New folder or URL (s3://BUCKET/SET) for the shard set (rerun with the same options to finish a killed export)."),
        subset: str = typer.Option(..., "--subset", help="Subset name (subsets/NAME.parquet, from `curate filter`)."),
        samples_per_shard: int = typer.Option(10000, "--samples-per-shard", help="Samples in each output shard (the last may have fewer)."),
        shuffle: bool = typer.Option(False, "--shuffle", help="Shuffle samples across shards (default: pool order)."),
        seed: int = typer.Option(0, "--seed", help="Seed for --shuffle."),
    ) -> None:
        """Export a subset as a shard set.

        Copies the subset's samples into OUT/000000.tar... with <uid>.jpg|png, <uid>.txt,
        <uid>.json, plus sizes.json and manifest.json (written last). Check it with
        `curate verify OUT`; train with open_clip's --train-data 'OUT/{000000..00000K}.tar'."""
        from tqdm import tqdm

        from curate.export import export_subset  # imported when the command runs: numpy, pyarrow, torch

        with tqdm(desc=f"export {subset}", unit="sample", disable=None) as bar:
            result = export_subset(pool, subset, out, samples_per_shard, shuffle, seed, progress=bar.update)
        note = f", {result.missing} subset uids not in this pool" if result.missing else ""
        typer.echo(
            f"{out}: {result.count} samples in {result.shards} shards ({result.bytes / 1e6:.1f} MB{note}); "
            f"--train-data '{result.manifest['train_data']}' --train-num-samples {result.count}"
        )
