"""Benchmark: `curate download` vs raw `img2dataset.download`, same input, same settings.

    python bench/download.py [--size 6000] [--rounds 3] [--inputs real,shapes]

For each input (the real-image demo pool, `curate demo-pool --source real`, and the
drawn-shapes one), generates a demo pool of --size rows, serves it on 127.0.0.1, and
runs both tools --rounds times, the order rotated each round. Both get the same
settings (SETTINGS: image size, resize mode, processes, threads, shard size, minimum
size and the same maximum image area: curate refuses an oversized image from its
header, img2dataset after decoding it; timeout, retries, encoding). Each run is a fresh
process (bench/measure.py), so its wall time, CPU time and peak RSS (the largest single
process: the main one or a worker) are its own. Printed: the median samples/s of each,
the ratio curate/img2dataset (goal >= 0.95) and each side's median peak memory. Both
outputs are checked to hold the same number of successful samples.

The demo pools include their faults (404s, slow responses of 1.5 s, truncated, tiny and
huge images), which cost both tools the same.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from measure import median, rotated, run_child  # noqa: E402 - bench/measure.py (the script's folder is on the path)

# img2dataset's own argument names; curate's DownloadSettings gets the same values.
SETTINGS = dict(image_size=64, resize_mode="border", processes_count=2, thread_count=32,
                number_sample_per_shard=1000, min_image_size=32, max_image_area=50_000_000,
                timeout=10, retries=0, encode_format="jpg")
SIDES = ("img2dataset", "curate download")


def child(side: str, metadata: str, out: str) -> None:
    """One measured run (in its own process: img2dataset spawns workers from it)."""
    if side == "curate download":
        from curate.download.run import DownloadSettings, download_pool

        settings = DownloadSettings(
            image_size=SETTINGS["image_size"], resize_mode=SETTINGS["resize_mode"],
            processes=SETTINGS["processes_count"], threads=SETTINGS["thread_count"],
            samples_per_shard=SETTINGS["number_sample_per_shard"], min_image_size=SETTINGS["min_image_size"],
            max_pixels=SETTINGS["max_image_area"], timeout=SETTINGS["timeout"], retries=SETTINGS["retries"],
            encode_format=SETTINGS["encode_format"], allow_private=True)
        download_pool(Path(metadata), Path(out), preset="laion", settings=settings)
    else:
        import img2dataset

        img2dataset.download(url_list=metadata, input_format="parquet", url_col="URL", caption_col="TEXT",
                             output_format="webdataset", output_folder=out, incremental_mode="incremental",
                             **SETTINGS)


def successes(out: Path, side: str) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder = out / "shards" if side == "curate download" else out
    tables = [pq.read_table(p, columns=["status"]) for p in sorted(folder.glob("*.parquet"))]
    return sum(pc.sum(pc.equal(t["status"], "success")).as_py() or 0 for t in tables)


def bench_input(source: str, work: Path, size: int, rounds: int) -> None:
    from curate.demo import make_demo_pool
    from curate.serve import start_server

    demo = work / f"demo-{source}"
    demo.mkdir()
    with start_server(demo, port=0) as server:
        make_demo_pool(demo, size=size, seed=0, base_url=server.url, source=source)
        metadata = demo / "metadata.parquet"
        runs: dict[str, list] = {side: [] for side in SIDES}
        kept: dict[str, set[int]] = {side: set() for side in SIDES}
        for r in range(rounds):
            for side in rotated(SIDES, r):
                out = work / f"out-{source}-{side.replace(' ', '_')}"
                shutil.rmtree(out, ignore_errors=True)
                runs[side].append(run_child([sys.executable, __file__, "--child", side, str(metadata), str(out)],
                                            env={**os.environ, "PYTHONPATH": str(ROOT)}))
                kept[side].add(successes(out, side))
                shutil.rmtree(out)
    rates = {side: size / median(c.wall_s for c in runs[side]) for side in SIDES}
    print(f"\n{source} input: {size} rows, {rounds} rounds (median), settings {json.dumps(SETTINGS)}")
    print(f"  {'tool':<16} {'samples/s':>10} {'wall s (runs)':<28} {'CPU s':>7} {'peak MiB':>9} {'ok':>6}")
    for side in SIDES:
        walls = ", ".join(f"{c.wall_s:.1f}" for c in runs[side])
        print(f"  {side:<16} {rates[side]:10.1f} {walls:<28} {median(c.cpu_s for c in runs[side]):7.1f} "
              f"{median(c.peak_mb for c in runs[side]):9.0f} {'/'.join(map(str, sorted(kept[side]))):>6}")
    print(f"  ratio curate/img2dataset: {rates['curate download'] / rates['img2dataset']:.3f}  (goal: >= 0.95)")
    if kept["img2dataset"] != kept["curate download"]:
        print(f"  note: successful samples differ: {kept}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=6000, help="rows per demo pool")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inputs", default="real,shapes", help="demo pool sources, comma-separated")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-download-"))
    try:
        for source in args.inputs.split(","):
            bench_input(source, work, args.size, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
