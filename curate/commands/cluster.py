"""`curate cluster POOL --scores TAG`: k-means clusters of the image embeddings (image_based, semdedup)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from shards.layout import Pool


def register(app: typer.Typer) -> None:
    @app.command("cluster")
    def cluster(
        pool: str = typer.Argument(..., help="Pool folder (the one `curate download` wrote), or its URL (s3://BUCKET/POOL)."),
        scores: str = typer.Option(..., "--scores", help="Scoring tag whose image embeddings are clustered (embeddings/TAG)."),
        clusters: Optional[int] = typer.Option(None, "--clusters", help="Number of k-means clusters. Default: sqrt(samples)."),
        near: Optional[Path] = typer.Option(
            None, "--near",
            help="Target images for the image_based recipe (DataComp's image-based filter): an eval suite (its "
                 "task folders' train splits), a task folder, a folder of images or .tar shards, or .npy "
                 "embeddings; embedded with the scores tag's model. Writes target_hits and target_similarity."),
        name: Optional[str] = typer.Option(None, "--name", help="The run's name: writes clusters/NAME/. Default: the scores tag."),
        seed: int = typer.Option(0, "--seed", help="Seed of the k-means sample and initialisation."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing clusters/NAME made with other arguments."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress output."),
    ) -> None:
        """Cluster image embeddings (k-means).

        Writes clusters/NAME/assignments.parquet (uid, cluster_id, centroid_similarity,
        semdedup_similarity, target_hits, target_similarity) and summary.json."""
        from curate.cluster.run import ClusterSettings, run_cluster  # imported when the command runs: faiss, numpy

        settings = ClusterSettings(scores=scores, clusters=clusters, near=str(near) if near else None, name=name,
                                   seed=seed, overwrite=overwrite, progress=not quiet)
        embedder = None
        if near is not None:
            from curate.score.embed import folder_embedder  # the scores tag's model: torch, open_clip

            embedder = folder_embedder(pool, scores, near)
        summary = run_cluster(pool, settings, embed_images=embedder)
        out = Pool(pool).clusters_dir(summary["name"])
        if summary["skipped"]:
            typer.echo(f"{out}: up to date (same arguments and inputs); nothing to do")
            return
        near_text = ""
        if summary["near"]:
            hit = summary["near"]
            near_text = (f"; {hit['images']} target images hit {hit['clusters_hit']} clusters "
                         f"({hit['samples_in_clusters_hit']} samples)")
        typer.echo(f"{out}: {summary['samples']} samples in {summary['clusters']} clusters (largest "
                   f"{summary['largest_cluster']}){near_text}, {summary['seconds']['total']:.1f}s")
