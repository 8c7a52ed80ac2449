"""`curate verify OUT`: check a shard set against its manifest."""
from __future__ import annotations


import typer


def register(app: typer.Typer) -> None:
    @app.command("verify")
    def verify(
        out: str = typer.Argument(..., help="Shard-set folder written by `curate export`, or its URL."),
    ) -> None:
        """Check a shard set against its manifest.

        Checks every shard against manifest.json: missing, truncated, wrong sha256, unsafe
        member names (../x, absolute paths, links), sample counts, sizes.json. Exits 1 and
        lists the problems if any."""
        from curate.verify import verify_shardset  # imported when the command runs: tarfile, hashlib (8 ms of --help)

        report = verify_shardset(out)
        if report.ok:
            typer.echo(f"{out}: ok ({report.shards_checked} shards, {report.samples} samples)")
            return
        for problem in report.problems:
            typer.echo(f"{out}/{problem}", err=True)
        typer.echo(f"{out}: {len(report.problems)} problem(s) in {report.shards_checked} shards", err=True)
        raise typer.Exit(1)
