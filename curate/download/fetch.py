"""img2dataset's own download(), run with our resizer and writer: the one call that fetches
images, for a download (run.py) and for `--retry-failed` (retry.py)."""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from curate.download.distributors import get_distributor

DEFAULT_MAX_PIXELS = 50_000_000  # larger images are refused from their header, never decoded
RESIZE_MODES = ("no", "border", "keep_ratio", "keep_ratio_largest", "center_crop")


@dataclass
class DownloadSettings:
    image_size: int = 256
    resize_mode: str = "border"
    processes: int = 1
    threads: int = 32
    samples_per_shard: int = 1000
    min_image_size: int = 32
    max_pixels: float = DEFAULT_MAX_PIXELS
    timeout: int = 10
    retries: int = 0
    encode_format: str = "jpg"
    allow_private: bool = False
    # Honour X-Robots-Tag noai and friends for real downloads (img2dataset's default).
    disallowed_header_directives: list[str] | None = None
    # Where img2dataset runs (curate/download/distributors.py): its engine and how to reach a cluster.
    distributor: str = "multiprocessing"
    spark_master: str | None = None
    ray_address: str | None = None

    def img2dataset_kwargs(self) -> dict:
        kwargs = dict(
            image_size=self.image_size,
            resize_mode=self.resize_mode,
            processes_count=self.processes,
            thread_count=self.threads,
            number_sample_per_shard=self.samples_per_shard,
            min_image_size=self.min_image_size,
            max_image_area=self.max_pixels,
            timeout=self.timeout,
            retries=self.retries,
            encode_format=self.encode_format,
            distributor=self.distributor,
        )
        if self.disallowed_header_directives is not None:
            kwargs["disallowed_header_directives"] = self.disallowed_header_directives
        return kwargs


@contextlib.contextmanager
def _guarded_img2dataset(allow_private: bool):
    """Have img2dataset.download build our resizer and writer (the only hooks it offers)."""
    # img2dataset/__init__ rebinds the name `main` to a function: fetch the module itself.
    i2d_main = importlib.import_module("img2dataset.main")

    # Imported here: both subclass img2dataset's classes, and importing img2dataset pulls in
    # torch and albumentations (seconds), which only a download needs.
    from curate.download.guard import GuardedResizer
    from curate.download.writer import PoolShardWriter

    saved = i2d_main.Resizer, i2d_main.WebDatasetSampleWriter
    i2d_main.Resizer = functools.partial(GuardedResizer, allow_private=allow_private)
    i2d_main.WebDatasetSampleWriter = PoolShardWriter
    try:
        yield i2d_main.download
    finally:
        i2d_main.Resizer, i2d_main.WebDatasetSampleWriter = saved


def run_img2dataset(input_parquet: Path, output: Path, extra_columns: list[str], settings: DownloadSettings) -> None:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    distributor = get_distributor(settings.distributor)
    with distributor.session(settings), _guarded_img2dataset(settings.allow_private) as download:
        download(
            url_list=str(input_parquet),
            input_format="parquet",
            url_col="url",
            caption_col="caption",
            output_format="webdataset",
            output_folder=str(output),
            save_additional_columns=["uid", *extra_columns],
            # "overwrite" deletes img2dataset's own temp folder and fails; resume is ours anyway.
            incremental_mode="incremental",
            **settings.img2dataset_kwargs(),
        )
