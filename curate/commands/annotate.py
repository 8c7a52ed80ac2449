"""`curate annotate POOL`: caption language and metadata matches per sample."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("annotate")
    def annotate(
        pool: str = typer.Argument(..., help="Pool folder (the one `curate download` wrote), or its URL (s3://BUCKET/POOL)."),
        classes: Optional[Path] = typer.Option(
            None, "--classes",
            help="Class names whose mention the text_based recipe keeps: an eval suite folder (every task's "
                 "classnames.txt, e.g. DEMO/suites/demo), one task folder, a class folder (DIR/<class>/, e.g. "
                 "DEMO/eval) or a file of one name a line. Writes class_ids; they join the metadata entries too."),
        metadata: Optional[str] = typer.Option(
            None, "--metadata",
            help="MetaCLIP's entry list: 'wordnet' (default: WordNet's nouns from Debian's wordnet-base), a file "
                 "of one entry a line, or 'none'. Writes entry_ids, which the metaclip recipe balances over."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Annotate again when the settings changed."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    ) -> None:
        """Annotate captions: language, metadata entries, class names.

        Writes annotations/NNNNN.parquet per pool shard (uid, caption_language, entry_ids,
        class_ids), resumable; the catalog's `annotations` view reads them."""
        from curate.annotate.run import annotate_pool  # imported when the command runs: lingua, pyarrow

        result = annotate_pool(pool, metadata=metadata, classes=classes, overwrite=overwrite, progress=not quiet)
        if result.warning:
            typer.echo(f"warning: {result.warning}", err=True)
        rate = result.rows / result.seconds if result.seconds > 0 else 0.0
        typer.echo(f"annotations: {result.shards_annotated} shards annotated ({result.rows} rows, {rate:.0f}/s), "
                   f"{result.shards_skipped} already done; columns {', '.join(result.columns)}")
