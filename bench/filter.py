"""Benchmark `curate filter --top 40%` against pandas doing the same job, and `curate export`
against a tar-to-tar copy of the same members.

Filter: a --rows scores table (uid, clip_score, caption_len, width, height) in --files
parquet shards; with --dedup also a dedup run (dedup/bench/groups.parquet: uid, keep, one
row in ten not kept). The job, for both sides:
  - read the scores (uid, clip_score); with --dedup keep only the uids the dedup run keeps
  - keep the k = round(40% x scored rows) best by clip_score, ties at the cut broken by
    uid ascending (the top-k cut of queries/shared/top_k.sql)
  - drop duplicate uids, sort, and write both outputs of a subset: a parquet of the sorted
    uids and DataComp's .npy (sorted (high, low) uint64 pairs)
`curate filter POOL --top 40% --name bench [--dedup bench]` does it through DuckDB; the
pandas side (pandas_filter below) with pandas (pyarrow-backed strings), numpy for the
cut and the hex decoding. After every round both outputs are compared: the same uids in
the same order in the parquet files and the same .npy arrays, or the bench stops.

Export: a pool of real JPEG shards and a subset of every scored sample (`curate filter
--top 100%`), exported by `curate export`, against a plain tar-to-tar copy of the same
members (picked by pool key, the key list made untimed beforehand; no manifest, no json
rewrite, no hashing); MB/s over the same bytes for both (the exported samples' payload),
the sample counts of both outputs compared.

Every side of every measure runs in a fresh process, reaped with wait4, so its CPU seconds
and peak RSS (ru_maxrss) are its own. Filter sides are timed from process start to exit (the
whole command, as a user runs it); export sides by the child's own clock around the job
(imports left out of both). Each round runs both sides once, the order alternating; the
tables show the median over --rounds rounds and each round's ratio. Outputs of the previous
round are deleted before each run, untimed.

    nice python bench/filter.py [--rows 20000000] [--rounds 3] [--dedup] [--work /tmp/clipcurate-bench]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from measure import median, rotated, run_child  # noqa: E402 - bench/measure.py (the script's folder is on the path)

SHARE = 0.4


def make_scores(pool: Path, rows: int, files: int, dedup: bool) -> None:
    """rows random samples over `files` parquet shards under pool/scores/bench/, and with
    `dedup` a dedup run dedup/bench/groups.parquet keeping nine rows in ten."""
    import duckdb

    directory = pool / "scores" / "bench"
    marker = directory / "rows.json"
    if not (marker.is_file() and json.loads(marker.read_text()) == {"rows": rows, "files": files}):
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(pool / "dedup", ignore_errors=True)
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
    groups = pool / "dedup" / "bench" / "groups.parquet"
    if dedup and not groups.is_file():
        import duckdb

        groups.parent.mkdir(parents=True, exist_ok=True)
        duckdb.connect().execute(
            f"""COPY (SELECT uid, hash(uid) % 10 <> 0 AS keep FROM read_parquet('{directory}/*.parquet'))
                TO '{groups}' (FORMAT parquet)"""
        )
    elif not dedup:
        shutil.rmtree(pool / "dedup", ignore_errors=True)


def pandas_filter(pool: Path, out: Path, dedup: bool) -> None:
    """The pandas way to the same subset: out.parquet (sorted uids) and out.npy (pairs)."""
    import numpy as np
    import pandas as pd

    files = sorted((pool / "scores" / "bench").glob("*.parquet"))
    frame = pd.concat([pd.read_parquet(f, columns=["uid", "clip_score"], dtype_backend="pyarrow") for f in files],
                      ignore_index=True)
    if dedup:
        groups = pd.read_parquet(pool / "dedup" / "bench" / "groups.parquet", columns=["uid", "keep"],
                                 dtype_backend="pyarrow")
        frame = frame[frame["uid"].isin(groups.loc[groups["keep"], "uid"])]
    scores = frame["clip_score"].dropna()
    n = len(scores)
    k = min(n, max(1, math.floor(SHARE * n + 0.5)))  # DuckDB's round: half away from zero
    values = scores.to_numpy(dtype=scores.dtype.numpy_dtype)
    cut = np.partition(values, n - k)[n - k]  # the k-th largest score
    above = frame.loc[frame["clip_score"] > cut, "uid"]
    tied = frame.loc[frame["clip_score"] == cut, "uid"].sort_values().head(k - len(above))
    uids = pd.concat([above, tied]).drop_duplicates().sort_values(ignore_index=True)
    pd.DataFrame({"uid": uids}).to_parquet(out.with_suffix(".parquet"), index=False)
    raw = np.frombuffer(bytes.fromhex(uids.str.cat()), dtype=">u8").reshape(-1, 2)  # 32 hex -> 2 x uint64
    pairs = np.empty(len(raw), np.dtype("u8,u8"))
    pairs["f0"], pairs["f1"] = raw[:, 0], raw[:, 1]
    with open(out.with_suffix(".npy"), "wb") as handle:
        np.save(handle, pairs)


def check_same(pool: Path, theirs: Path) -> int:
    """Both sides selected the same uids: parquet columns equal, .npy arrays equal."""
    import numpy as np
    import pyarrow.parquet as pq

    ours_uid = pq.read_table(pool / "subsets" / "bench.parquet", columns=["uid"]).column("uid").combine_chunks()
    their_uid = pq.read_table(theirs.with_suffix(".parquet"), columns=["uid"]).column("uid").combine_chunks()
    ours_npy, their_npy = np.load(pool / "subsets" / "bench.npy"), np.load(theirs.with_suffix(".npy"))
    same_uid = len(ours_uid) == len(their_uid) and ours_uid.cast(their_uid.type).equals(their_uid)
    same_npy = ours_npy.shape == their_npy.shape and bool((ours_npy == their_npy).all())
    if not (same_uid and same_npy):
        raise SystemExit(f"CHECK FAILED: curate filter kept {len(ours_uid):,} uids, pandas {len(their_uid):,}; "
                         f"same parquet uids: {same_uid}, same .npy: {same_npy}")
    return len(ours_uid)


def bench_filter(work: Path, args) -> None:
    pool = work / "pool"
    t = time.perf_counter()
    make_scores(pool, args.rows, args.files, args.dedup)
    print(f"scores table: {args.rows:,} rows in {args.files} parquet files"
          f"{', dedup run keeping 9 in 10' if args.dedup else ''} ({time.perf_counter() - t:.1f} s to make or reuse)",
          flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    theirs_out = work / "pandas-subset"
    commands = {
        "curate": [sys.executable, "-m", "curate", "filter", str(pool), "--top", "40%", "--name", "bench"]
        + (["--dedup", "bench"] if args.dedup else []),
        "pandas": [sys.executable, str(Path(__file__).resolve()), "--pandas-child", str(pool), str(theirs_out)]
        + (["--dedup"] if args.dedup else []),
    }
    outputs = {"curate": [pool / "subsets" / "bench.parquet", pool / "subsets" / "bench.npy"],
               "pandas": [theirs_out.with_suffix(".parquet"), theirs_out.with_suffix(".npy")]}
    runs: dict[str, list] = {"curate": [], "pandas": []}
    kept = None
    for r in range(args.rounds):
        for side in rotated(("curate", "pandas"), r):
            for old in outputs[side]:  # each side writes new files: unlinking the last round's is not the job
                old.unlink(missing_ok=True)
            runs[side].append(run_child(commands[side], env=env))
            print(f"  round {r + 1} {side:7s} wall {runs[side][-1].wall_s:6.2f} s", flush=True)
        kept = check_same(pool, theirs_out)
        print(f"  round {r + 1} check: both outputs hold the same {kept:,} uids (parquet and .npy identical)",
              flush=True)
    print(f"{'':26}{'wall s':>9}{'cpu s':>9}{'peak MiB':>10}{'rows/s':>14}{'kept':>12}   each round (wall s)")
    for label, side in (("curate filter --top 40%", "curate"), ("pandas (baseline)", "pandas")):
        rs = runs[side]
        wall = median(c.wall_s for c in rs)
        print(f"{label:26}{wall:>9.2f}{median(c.cpu_s for c in rs):>9.2f}{max(c.peak_mb for c in rs):>10.0f}"
              f"{args.rows / wall:>14,.0f}{kept:>12,}   " + ", ".join(f"{c.wall_s:.2f}" for c in rs))
    ours, theirs = runs["curate"], runs["pandas"]
    each = ", ".join(f"{t.wall_s / o.wall_s:.2f}" for o, t in zip(ours, theirs))
    print(f"speed-up {median(c.wall_s for c in theirs) / median(c.wall_s for c in ours):.2f}x wall "
          f"(each round: {each}), {median(c.cpu_s for c in theirs) / median(c.cpu_s for c in ours):.2f}x cpu "
          f"(goal >= 10x); memory {max(c.peak_mb for c in ours) / max(c.peak_mb for c in theirs):.2f} of pandas' peak")
    print("(wall: process start to exit, median of the rounds; cpu s: user + system of the process, all threads; "
          "peak MiB: its ru_maxrss, largest of the rounds)")


def export_child(side: str, pool: Path, out: Path, per_shard: int) -> None:
    """One export side in this process; prints JSON with the job's seconds and sample count."""
    shutil.rmtree(out, ignore_errors=True)
    if side == "curate":
        from curate.export import export_subset

        t = time.perf_counter()
        result = export_subset(pool, "all", out, samples_per_shard=per_shard)
        seconds, count = time.perf_counter() - t, result.count
        written = result.bytes
    else:  # the subset's members copied tar to tar by key: no manifest, no json rewrite, no hashing
        keys = set(json.loads((pool.parent / "export-keys.json").read_text()))
        out.mkdir(parents=True)
        t = time.perf_counter()
        for source in sorted((pool / "shards").glob("*.tar")):
            with tarfile.open(source) as src, tarfile.open(out / source.name, "w") as dst:
                for member in src:
                    if member.name.split(".", 1)[0] in keys:
                        dst.addfile(member, src.extractfile(member))
        seconds = time.perf_counter() - t
        written = sum(p.stat().st_size for p in out.glob("*.tar"))
        count = 0
        for tar in out.glob("*.tar"):
            with tarfile.open(tar) as handle:
                count += len({m.name.split(".", 1)[0] for m in handle if m.isfile()})
    print(json.dumps({"seconds": seconds, "count": count, "bytes": written}))


def bench_export(work: Path, per_shard: int, shards: int, rounds: int) -> None:
    from curate.filter.run import run_filter
    from poolfactory import make_pool

    pool = work / "export-pool"
    shutil.rmtree(pool, ignore_errors=True)
    make_pool(pool, shards=shards, per_shard=per_shard, side=(160, 320), failed_every=10**9)
    run_filter(pool, "all", top="100%")  # every scored sample (the pool has one with a null score)
    # the subset's members, by pool key, for the tar copy (chosen untimed: the copy only copies)
    import pyarrow.parquet as pq

    subset = set(pq.read_table(pool / "subsets" / "all.parquet").column("uid").to_pylist())
    keys = [k for f in sorted((pool / "shards").glob("*.parquet"))
            for k, u in zip(*pq.read_table(f, columns=["key", "uid"]).to_pydict().values()) if u in subset]
    (work / "export-keys.json").write_text(json.dumps(keys))
    # MB/s over the same bytes for both: the exported samples' payload (member contents).
    # Output sizes differ (the copy keeps the source's PAX headers, the export rewrites the
    # json), so dividing each by its own output size would compare different amounts of work.
    payload, wanted = 0, set(keys)
    for source in sorted((pool / "shards").glob("*.tar")):
        with tarfile.open(source) as src:
            payload += sum(m.size for m in src if m.isfile() and m.name.split(".", 1)[0] in wanted)
    mb = payload / 1e6
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs: dict[str, list] = {"curate": [], "tar": []}
    for r in range(rounds):
        for side in rotated(("curate", "tar"), r):
            child = run_child([sys.executable, str(Path(__file__).resolve()), "--export-child", side, str(pool),
                               str(work / f"export-{side}"), str(per_shard)], env=env)
            runs[side].append((child, json.loads(child.stdout.strip().splitlines()[-1])))
    counts = {side: {job["count"] for _, job in rs} for side, rs in runs.items()}
    if counts["curate"] != counts["tar"] or len(counts["curate"]) != 1:
        raise SystemExit(f"CHECK FAILED: export and tar copy wrote different sample counts: {counts}")
    count = counts["curate"].pop()
    written = {side: rs[0][1]["bytes"] for side, rs in runs.items()}
    print(f"export: {count:,} samples in both outputs, {mb:.1f} MB of sample payload; curate export wrote "
          f"{written['curate'] / 1e6:.1f} MB, the tar copy {written['tar'] / 1e6:.1f} MB")
    print(f"{'':24}{'job s':>9}{'MB/s':>9}{'cpu s':>9}{'peak MiB':>10}   each round (MB/s)")
    sec = {side: median(job["seconds"] for _, job in rs) for side, rs in runs.items()}
    for label, side in (("curate export", "curate"), ("tar copy (baseline)", "tar")):
        rs = runs[side]
        print(f"{label:24}{sec[side]:>9.2f}{mb / sec[side]:>9.1f}{median(c.cpu_s for c, _ in rs):>9.2f}"
              f"{max(c.peak_mb for c, _ in rs):>10.0f}   " + ", ".join(f"{mb / job['seconds']:.1f}" for _, job in rs))
    each = ", ".join(f"{t['seconds'] / o['seconds']:.2f}" for (_, o), (_, t) in zip(runs["curate"], runs["tar"]))
    print(f"export throughput {sec['tar'] / sec['curate']:.2f}x a plain tar copy's (each round: {each}); "
          f"median of {rounds} round(s)")
    print("(job s: the child's own clock around the job, imports left out; cpu s and peak MiB: the whole child "
          "process, start-up included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--dedup", action="store_true", help="filter with a dedup run (--dedup bench) on both sides")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs both sides once, order alternating")
    parser.add_argument("--work", type=Path, default=Path("/tmp/clipcurate-bench"))
    parser.add_argument("--export-samples", type=int, default=4000, help="samples in the export benchmark pool")
    parser.add_argument("--skip-filter", action="store_true")
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument("--pandas-child", nargs=2, metavar=("POOL", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--export-child", nargs=4, metavar=("SIDE", "POOL", "OUT", "PER_SHARD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pandas_child:
        pandas_filter(Path(args.pandas_child[0]), Path(args.pandas_child[1]), args.dedup)
        return
    if args.export_child:
        side, pool, out, per_shard = args.export_child
        export_child(side, Path(pool), Path(out), int(per_shard))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at start", flush=True)
    if not args.skip_filter:
        bench_filter(args.work, args)
    if not args.skip_export:
        bench_export(args.work, per_shard=args.export_samples // 4, shards=4, rounds=args.rounds)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
