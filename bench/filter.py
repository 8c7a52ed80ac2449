"""Benchmark `curate filter --top 40%` against pandas, and `curate export` against a tar copy.

One run prints, for a 20,000,000-row scores table (uid, clip_score, caption_len, width,
height) in parquet shards:
  - wall time and peak RSS of `curate filter POOL --top 40%` (a subprocess)
  - the same for pandas doing the same job (read, quantile, select, write uids)
  - the ratios
and, for a pool of real JPEG shards, export throughput (MB/s) of `curate export` vs a
plain tar-to-tar copy of the same members.

    nice python bench/filter.py [--rows 20000000] [--work /tmp/clipcurate-bench]

Peak memory is ru_maxrss of the child, read with resource.getrusage(RUSAGE_CHILDREN) in a
fresh wrapper process per measurement, so each figure is that run's own.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def make_scores(pool: Path, rows: int, files: int) -> None:
    """rows random samples over `files` parquet shards under pool/scores/bench/."""
    import duckdb

    directory = pool / "scores" / "bench"
    marker = directory / "rows.json"
    if marker.is_file() and json.loads(marker.read_text()) == {"rows": rows, "files": files}:
        return
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    per = rows // files
    con = duckdb.connect()
    for i in range(files):
        con.execute(
            f"""COPY (SELECT md5((range + {i * per})::VARCHAR) AS uid, (random() * 0.4)::FLOAT AS clip_score,
                      (5 + random() * 95)::INT AS caption_len, (64 + random() * 960)::INT AS width,
                      (64 + random() * 960)::INT AS height
                FROM range({per})) TO '{directory / f'{i:05d}.parquet'}' (FORMAT parquet)"""
        )
    (directory / "model.json").write_text(json.dumps({"model": "random", "dim": 0}))
    marker.write_text(json.dumps({"rows": rows, "files": files}))


def pandas_top(pool: Path, out: Path, share: float) -> int:
    """The pandas way: read every shard, quantile, select, write the uids."""
    import pandas as pd

    files = sorted((pool / "scores" / "bench").glob("*.parquet"))
    frame = pd.concat([pd.read_parquet(f, columns=["uid", "clip_score"]) for f in files], ignore_index=True)
    threshold = frame["clip_score"].quantile(1.0 - share)
    kept = frame.loc[frame["clip_score"] >= threshold, ["uid"]]
    kept.to_parquet(out, index=False)
    return len(kept)


def measured(command: list[str]) -> dict:
    """Run command in a fresh wrapper; its wall time and peak RSS (ru_maxrss of its child)."""
    wrapper = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "wall = time.perf_counter() - t\n"
        "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(json.dumps({'rc': done.returncode, 'wall_s': wall, 'cpu_s': usage.ru_utime + usage.ru_stime,\n"
        "                  'peak_mb': usage.ru_maxrss / 1024, 'err': done.stderr[-2000:]}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True, env=env)
    figures = json.loads(result.stdout)
    if figures["rc"] != 0:
        raise SystemExit(f"{command[:4]} failed: {figures['err']}")
    return figures


def bench_filter(work: Path, rows: int, files: int) -> None:
    pool = work / "pool"
    t = time.perf_counter()
    make_scores(pool, rows, files)
    print(f"scores table: {rows:,} rows in {files} parquet files ({time.perf_counter() - t:.1f} s to make or reuse)")
    # Each tool writes a new file: unlinking last run's 400 MB output is not part of the job.
    for old in (pool / "subsets" / "bench.parquet", pool / "subsets" / "bench.npy", work / "pandas.parquet"):
        old.unlink(missing_ok=True)
    ours = measured([sys.executable, "-m", "curate", "filter", str(pool), "--top", "40%", "--name", "bench"])
    theirs = measured([sys.executable, str(Path(__file__).resolve()), "--pandas-baseline", str(pool), str(work / "pandas.parquet")])
    import pyarrow.parquet as pq

    kept_ours = pq.read_metadata(pool / "subsets" / "bench.parquet").num_rows
    kept_pandas = pq.read_metadata(work / "pandas.parquet").num_rows
    print(f"{'':24}{'wall s':>10}{'cpu s':>10}{'peak MB':>10}{'rows/s':>14}{'kept':>12}")
    for label, figures, kept in (("curate filter --top 40%", ours, kept_ours), ("pandas (baseline)", theirs, kept_pandas)):
        print(f"{label:24}{figures['wall_s']:>10.2f}{figures['cpu_s']:>10.2f}{figures['peak_mb']:>10.0f}"
              f"{rows / figures['wall_s']:>14,.0f}{kept:>12,}")
    print(f"speed-up {theirs['wall_s'] / ours['wall_s']:.2f}x wall, {theirs['cpu_s'] / ours['cpu_s']:.2f}x cpu "
          f"(goal >= 10x); memory {ours['peak_mb'] / theirs['peak_mb']:.2f} of pandas' peak")


def bench_export(work: Path, per_shard: int, shards: int) -> None:
    from curate.export import export_subset
    from curate.filter.run import run_filter
    from poolfactory import make_pool

    pool = work / "export-pool"
    shutil.rmtree(pool, ignore_errors=True)
    make_pool(pool, shards=shards, per_shard=per_shard, side=(160, 320), failed_every=10**9)
    run_filter(pool, "all", top="100%")
    out = work / "export-out"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    result = export_subset(pool, "all", out, samples_per_shard=per_shard)
    ours = time.perf_counter() - t

    # baseline: the same members copied tar to tar, no selection, no manifest, no hashing
    copy = work / "tar-copy"
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir()
    t = time.perf_counter()
    copied = 0
    for source in sorted((pool / "shards").glob("*.tar")):
        with tarfile.open(source) as src, tarfile.open(copy / source.name, "w") as dst:
            for member in src:
                dst.addfile(member, src.extractfile(member))
        copied += (copy / source.name).stat().st_size
    theirs = time.perf_counter() - t
    # MB/s over the same bytes for both: the samples' payload (member contents). Output sizes
    # differ (the copy keeps the source's PAX headers, the export rewrites the json), so
    # dividing each by its own output size would compare different amounts of work.
    payload = 0
    for source in sorted((pool / "shards").glob("*.tar")):
        with tarfile.open(source) as src:
            payload += sum(m.size for m in src if m.isfile())
    mb = payload / 1e6
    print(f"export: {result.count:,} samples, {mb:.1f} MB of sample payload, {result.bytes / 1e6:.1f} MB written "
          f"in {result.shards} shards; tar copy wrote {copied / 1e6:.1f} MB")
    print(f"{'curate export':24}{ours:>10.2f} s{mb / ours:>10.1f} MB/s")
    print(f"{'tar copy (baseline)':24}{theirs:>10.2f} s{mb / theirs:>10.1f} MB/s")
    print(f"export throughput {theirs / ours:.2f}x a plain tar copy's")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path("/tmp/clipcurate-bench"))
    parser.add_argument("--export-samples", type=int, default=4000, help="samples in the export benchmark pool")
    parser.add_argument("--skip-filter", action="store_true")
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument("--pandas-baseline", nargs=2, metavar=("POOL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pandas_baseline:
        pandas_top(Path(args.pandas_baseline[0]), Path(args.pandas_baseline[1]), 0.4)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.skip_filter:
        bench_filter(args.work, args.rows, args.files)
    if not args.skip_export:
        bench_export(args.work, per_shard=args.export_samples // 4, shards=4)


if __name__ == "__main__":
    main()
