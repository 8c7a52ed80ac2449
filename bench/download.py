"""Benchmark: `curate download` vs raw `img2dataset.download` on the same demo input.

    python bench/download.py [--size 2000] [--rounds 2]

Generates a demo pool of --size rows, serves it on 127.0.0.1, then alternates raw
img2dataset and curate download (same image size, processes, threads, shard size) for
--rounds rounds, printing samples/s of each, their ratio and peak memory. The ratio is
the figure to watch (goal: curate within 5% of raw img2dataset); absolute rates depend
on the machine.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

SETTINGS = dict(image_size=256, processes=2, threads=32, samples_per_shard=500)


def run_raw(metadata: Path, out: Path) -> float:
    import img2dataset

    started = time.perf_counter()
    img2dataset.download(
        url_list=str(metadata), input_format="parquet", url_col="URL", caption_col="TEXT",
        output_format="webdataset", output_folder=str(out), image_size=SETTINGS["image_size"],
        processes_count=SETTINGS["processes"], thread_count=SETTINGS["threads"],
        number_sample_per_shard=SETTINGS["samples_per_shard"], min_image_size=32,
    )
    return time.perf_counter() - started


def run_curate(metadata: Path, out: Path) -> float:
    from curate.download.run import DownloadSettings, download_pool

    settings = DownloadSettings(allow_private=True, **SETTINGS)
    started = time.perf_counter()
    download_pool(metadata, out, preset="laion", settings=settings)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from curate.demo import make_demo_pool
    from curate.serve import start_server

    work = Path(tempfile.mkdtemp(prefix="bench-download-"))
    try:
        demo = work / "demo"
        demo.mkdir()
        with start_server(demo, port=0) as server:
            make_demo_pool(demo, size=args.size, seed=0, base_url=server.url)
            metadata = demo / "metadata.parquet"
            times: dict[str, list[float]] = {"img2dataset": [], "curate download": []}
            for r in range(args.rounds):
                for name, fn in (("img2dataset", run_raw), ("curate download", run_curate)):
                    out = work / f"{name.replace(' ', '_')}-{r}"
                    times[name].append(fn(metadata, out))
                    shutil.rmtree(out)
        rates = {name: args.size / statistics.median(ts) for name, ts in times.items()}
        peak_children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        peak_self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"demo input: {args.size} rows, settings {SETTINGS}, {args.rounds} rounds (median)")
        for name, rate in rates.items():
            print(f"  {name:<16} {rate:8.1f} samples/s   runs: {', '.join(f'{t:.1f}s' for t in times[name])}")
        ratio = rates["curate download"] / rates["img2dataset"]
        print(f"  ratio curate/img2dataset: {ratio:.3f}  (goal: >= 0.95)")
        print(f"  peak RSS: main process {peak_self_mb:.0f} MB, largest worker {peak_children_mb:.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
