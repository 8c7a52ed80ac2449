"""`curate dedup`: group exact, perceptual and semantic duplicates; keep the best of each."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from clikit.errors import UserError
from shards.layout import Pool


def register(app: typer.Typer) -> None:
    @app.command("dedup")
    def dedup(
        pool: str = typer.Argument(..., help="Pool folder (the one `curate download` wrote), or its URL (s3://BUCKET/POOL)."),
        scores: str = typer.Option(..., "--scores", help="Scoring tag to read: scores/TAG and embeddings/TAG."),
        method: str = typer.Option(
            "exact,phash-pixels", "--method",
            help="One or more of, comma-separated: exact: same image bytes (sha256); phash: perceptual hashes "
                 "within --phash-bits (default 4); phash-pixels: phash within --phash-bits (default 6) AND the "
                 "thumbnails `curate score` stores agreeing (16x16 grey correlation >= --threshold, default "
                 "0.98, and 4x4 colour grids within 12 CIELAB units); phash-knn: phash within --phash-bits "
                 "(default 6) AND image embeddings agreeing (cosine >= --threshold at the largest distance, "
                 "down to 0.1 lower for identical hashes; the bar is measured on the pool unless --threshold "
                 "is given); knn: embeddings with cosine >= --threshold (default 0.95; FAISS); "
                 "semdedup: k-means clusters, then knn pairs within each (SemDeDup); all: exact,phash,knn. "
                 "Default exact,phash-pixels: phash alone is fooled by flat backgrounds, and the seed model's "
                 "embeddings confuse look-alikes with copies; the pictures' own thumbnails do not depend on it.",
        ),
        threshold: Optional[float] = typer.Option(
            None, "--threshold",
            help="Similarity in (0, 1] at which two images are near duplicates: the cosine of embeddings for "
                 "knn, semdedup, phash-knn and --against (default 0.95; phash-knn's measured on the pool), "
                 "the grey thumbnails' correlation for phash-pixels (default 0.98).",
        ),
        name: Optional[str] = typer.Option(
            None, "--name", "--tag",
            help="The dedup run's name: writes dedup/NAME/, which `curate filter --dedup NAME` and `curate sql "
                 "--dedup NAME` read. Default: the methods joined by '+' (dedup/exact+phash-pixels). "
                 "--tag is its older spelling."),
        keep: str = typer.Option("best-score", "--keep", help="Member kept per group: best-score (highest clip_score, ties by uid) or first (pool order)."),
        clusters: Optional[int] = typer.Option(None, "--clusters", help="semdedup: number of k-means clusters. Default: sqrt(samples)."),
        phash_bits: Optional[int] = typer.Option(
            None, "--phash-bits",
            help="Largest Hamming distance (of 64 bits) between perceptual hashes that counts (0 = identical "
                 "hashes). Default: 4 for phash, 6 for phash-pixels and phash-knn (thumbnails or embeddings confirm those).",
        ),
        index: str = typer.Option("auto", "--index", help="knn search: flat (exact, O(n^2)), ivf (k-means cells, --nprobe probed), auto (flat up to 30,000 samples)."),
        nlist: Optional[int] = typer.Option(None, "--nlist", help="ivf: number of cells. Default: sqrt(samples)."),
        nprobe: Optional[int] = typer.Option(None, "--nprobe", help="ivf: cells probed per sample (more: higher recall, slower). Default: 4 at --threshold >= 0.95, 6 at >= 0.9, else 10."),
        against: Optional[Path] = typer.Option(
            None, "--against",
            help="Decontaminate against an evaluation set: .npy image embeddings (same model), or a folder of "
                 "images or .tar shards. Pool samples within --threshold of it get contaminated=true, keep=false.",
        ),
        seed: int = typer.Option(0, "--seed", help="Seed for k-means sampling, so reruns give the same groups."),
        max_group: Optional[int] = typer.Option(
            None, "--max-group",
            help="Runaway-group guard: a group of more samples than this is near pairs chaining look-alikes; "
                 "it is reported and its near pairs are dropped (byte copies stay grouped). "
                 "Default: 1% of the pool, at least 50.",
        ),
        truth: Optional[Path] = typer.Option(
            None, "--truth",
            help="A truth.parquet with known duplicates (the demo pools have one): print pair precision/recall "
                 "at a few thresholds around --threshold, to pick one.",
        ),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dedup/NAME made with other arguments."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    ) -> None:
        """Group duplicates; keep the best of each.

        Finds duplicate groups and keeps one sample per group: writes dedup/NAME/groups.parquet
        (uid, group_id, group_size, keep, method, contaminated) and dedup/NAME/summary.json."""
        from curate.dedup.run import DedupSettings, run_dedup  # imported when the command runs: numpy, pyarrow

        settings = DedupSettings(
            scores=scores, method=method, threshold=threshold, dedup_name=name, keep=keep, clusters=clusters,
            phash_bits=phash_bits, index=index, nlist=nlist, nprobe=nprobe,
            against=str(against) if against else None, seed=seed, max_group=max_group, overwrite=overwrite,
            progress=not quiet,
        )
        if truth is not None and not truth.is_file():
            raise UserError(f"--truth {truth} does not exist; give the demo pool's truth.parquet")
        embedder = None
        if against is not None:
            from curate.score.embed import folder_embedder  # the scores tag's model: torch, open_clip

            embedder = folder_embedder(pool, scores, against)
        summary = run_dedup(pool, settings, embed_images=embedder)
        out = Pool(pool).dedup_dir(summary["name"])
        if summary["skipped"]:
            typer.echo(f"{out}: up to date (same arguments and inputs); nothing to do")
        else:
            _report(out, summary)
        for group in summary.get("oversized_groups", []):
            action = ("its near pairs were dropped (byte copies stay grouped)" if group["split"]
                      else "kept as one group")
            typer.echo(f"warning: a duplicate group of {group['size']} samples (joined by "
                       f"{', '.join(group['methods'])}) is over --max-group {summary['max_group']}: {action}. "
                       "Near pairs chain look-alikes: raise --threshold or lower --phash-bits", err=True)
        if truth is not None:
            from curate.truth.dedup import format_threshold_table, pair_quality, threshold_table  # numpy, pyarrow

            typer.echo(pair_quality(Pool(pool).dedup_groups(summary["name"]), truth)["text"])
            typer.echo(format_threshold_table(threshold_table(pool, settings, truth)))


def _report(out: str, summary: dict) -> None:
    """One line: samples, groups and pairs per method, kept and removed."""
    methods = ", ".join(f"{m} {v['pairs']} pairs" for m, v in summary["per_method"].items())
    typer.echo(
        f"{out}: {summary['samples']} samples, {summary['groups']} duplicate groups ({methods}); "
        f"kept {summary['kept']}, removed {summary['removed_duplicates']} duplicates"
        + (f" and {summary['contaminated']} contaminated" if summary["args"]["against"] else "")
        + f" in {summary['seconds']['total']:.1f} s"
    )
