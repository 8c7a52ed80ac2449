"""`curate download INPUT POOL`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def download(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="URL list: .parquet, .csv, .tsv, .jsonl, or a folder of them.")],
    pool: Annotated[str, typer.Argument(help="Pool folder to create, or an earlier one to resume; or a URL (s3://BUCKET/POOL, any fsspec protocol).")],
    preset: Annotated[Optional[str], typer.Option(help="Column names of a known pool: laion (URL, TEXT) or coyo (url, text).")] = None,
    url_col: Annotated[Optional[str], typer.Option(help="URL column (overrides the preset).")] = None,
    caption_col: Annotated[Optional[str], typer.Option(help="Caption column (overrides the preset).")] = None,
    image_size: Annotated[int, typer.Option(help="Resize images to this size (see --resize-mode).")] = 256,
    resize_mode: Annotated[str, typer.Option(help="no, border, keep_ratio, keep_ratio_largest or center_crop.")] = "border",
    processes: Annotated[int, typer.Option(help="Download processes.")] = 1,
    threads: Annotated[int, typer.Option(help="Download threads per process.")] = 32,
    samples_per_shard: Annotated[int, typer.Option(help="Samples per output shard (the unit of resume).")] = 1000,
    min_image_size: Annotated[int, typer.Option(help="Refuse images whose smaller side is below this (px).")] = 32,
    max_pixels: Annotated[float, typer.Option(help="Refuse images over this many pixels, judged from the header, never decoded.")] = 50_000_000,
    timeout: Annotated[int, typer.Option(help="Seconds to wait for one URL.")] = 10,
    retries: Annotated[int, typer.Option(help="Extra attempts per URL.")] = 0,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Fetch again only the samples whose status is a failure.")] = False,
    allow_private: Annotated[bool, typer.Option("--allow-private", help="Allow loopback/private/link-local hosts (demo pools and tests).")] = False,
    distributor: Annotated[str, typer.Option(help="img2dataset's distributor: multiprocessing (this machine), pyspark or ray (a cluster).")] = "multiprocessing",
    spark_master: Annotated[Optional[str], typer.Option(help="pyspark: the Spark master URL (spark://HOST:7077, yarn, ...). Default local[--processes].")] = None,
    ray_address: Annotated[Optional[str], typer.Option(help="ray: the cluster's address (HOST:PORT, or RAY_ADDRESS). Default: a new local cluster of --processes CPUs.")] = None,
) -> None:
    """Download a URL list into a pool with img2dataset, resumably."""
    from curate.download.run import DownloadSettings, download_pool  # imported when the command runs: pyarrow

    settings = DownloadSettings(
        image_size=image_size, resize_mode=resize_mode, processes=processes, threads=threads,
        samples_per_shard=samples_per_shard, min_image_size=min_image_size, max_pixels=max_pixels,
        timeout=timeout, retries=retries, allow_private=allow_private,
        distributor=distributor, spark_master=spark_master, ray_address=ray_address,
    )
    result = download_pool(
        input_path, pool, preset=preset, url_col=url_col, caption_col=caption_col,
        settings=settings, retry_failed=retry_failed,
    )
    rate = result.input_rows / result.seconds if result.seconds > 0 else 0.0
    typer.echo(
        f"{result.pool}: {result.success}/{result.input_rows} samples downloaded "
        f"({result.failed} failed) in {result.shards} shards; {result.fetched_shards} fetched now, "
        f"{result.seconds:.1f}s, {rate:.0f} rows/s"
    )
    if result.failures_by_reason:
        typer.echo("failures: " + ", ".join(f"{k} {v}" for k, v in result.failures_by_reason.items()))


def register(app: typer.Typer) -> None:
    app.command("download")(download)
