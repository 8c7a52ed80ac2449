"""Benchmark `curate score` against a naive scoring loop and the decode-only ceiling.

    nice python bench/score.py [--size 10000] [--image-size 64] [--model micro-vit-32,tiny-vit-32]
                               [--batch-size 256] [--rounds 3] [--threads N] [--dir DIR]

Builds a demo pool of --size rows (generated, served on 127.0.0.1, downloaded by
`curate download` at --image-size), saves each --model with random weights, then measures
images/s on the same tars, same model, same batch size, CPU, one table per model:

  micro-vit-32    meant to cost less CPU time per image than decoding: the regime of a
                  GPU, where the pipeline, not the model, decides
  tiny-vit-32     meant to cost several times more than decoding on a CPU: the model
                  decides, and on a 2-core machine it shares the cores with the workers
                  (the CPU ms/img of "decode ceiling" and "model ceiling" show where each
                  model really falls on the machine at hand)

  curate score    curate.score.run.score_pool, ScoreSettings(progress=False), default workers
  naive loop      main process only: tar -> PIL decode -> open_clip preprocess -> tokenizer
                  -> model, batch by batch, under torch.inference_mode (no hashes, no files)
  naive, same cols  the naive loop computing curate's per-row columns too (sha256, phash,
                  token counts: reader.decode_chunk) in the main process: shows what the
                  workers buy for the same work
  decode ceiling  the same DataLoader (reader.ChunkedShards, same preprocess, tokenizer and
                  worker count) with no model: the fastest curate score could go
  model ceiling   the model alone on batches decoded beforehand (untimed): when it is below
                  the decode ceiling, the model, not the pipeline, bounds curate score

Each figure comes from a fresh process (started from a small launcher, bench/measure.py,
so its peak RSS is its own and not the driver's) that first makes a
warm-up pass over one shard in the same mode (imports, lazy init, page cache), then times
a full pass over the pool. Model loading is excluded from all of them; starting the
DataLoader workers is included in the two modes that have workers, because every real
run pays it (the naive loops have no workers to start). curate score's time is its own
ScoreResult.seconds: from after the model loads until the last shard's files are renamed
into place. Modes alternate for --rounds rounds (the order rotates each round) and the
median is printed, with each round's ratio, which keeps the ratios meaningful on a busy
machine; CPU ms/img (user + sys of the process and its workers) is steadier than wall time
when other jobs share the cores. Peak RSS is the main process's, and the largest worker's.
Goals (issue 4): curate/naive >= 1.5, curate/decode ceiling >= 0.9. On a CPU the
workers and the model share the cores, so no pipeline can beat cores / (decode + model
CPU ms per image); that "shared-core bound" is printed too, with curate's share of it.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# OMP_WAIT_POLICY as the `curate` command sets it, for every mode alike (it is read when torch loads)
for _name, _value in (("NO_ALBUMENTATIONS_UPDATE", "1"), ("WANDB_MODE", "disabled"), ("HF_HUB_OFFLINE", "1"),
                      ("OMP_WAIT_POLICY", "PASSIVE")):
    os.environ.setdefault(_name, _value)

from curate.score.run import default_workers  # noqa: E402 - after the path and the environment are set
from measure import run_child  # noqa: E402 - bench/measure.py (the script's folder is on the path)

MODES = ("curate", "naive", "naive-cols", "decode", "model")
LABELS = {
    "curate": "curate score",
    "naive": "naive loop",
    "naive-cols": "naive, same columns",
    "decode": "decode ceiling",
    "model": "model ceiling",
}


# ---------------------------------------------------------------- pool and model


def build_pool(work: Path, size: int, image_size: int, samples_per_shard: int) -> Path:
    """A downloaded demo pool under work/pool, reused when the same arguments made it."""
    from curate.demo import make_demo_pool
    from curate.download.run import DownloadSettings, download_pool
    from curate.serve import start_server

    pool, stamp = work / "pool", work / "pool.args.json"
    wanted = {"size": size, "image_size": image_size, "samples_per_shard": samples_per_shard}
    if pool.is_dir() and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return pool
    shutil.rmtree(pool, ignore_errors=True)
    demo = work / "demo"
    shutil.rmtree(demo, ignore_errors=True)
    demo.mkdir(parents=True)
    started = time.perf_counter()
    with start_server(demo, port=0) as server:
        make_demo_pool(demo, size=size, seed=0, base_url=server.url)
        settings = DownloadSettings(image_size=image_size, threads=16, samples_per_shard=samples_per_shard,
                                    allow_private=True)
        download_pool(demo / "metadata.parquet", pool, preset="laion", settings=settings)
    stamp.write_text(json.dumps(wanted))
    print(f"pool: {size} rows downloaded at {image_size}px in {time.perf_counter() - started:.0f} s", flush=True)
    return pool


def save_random_model(model: str, path: Path) -> Path:
    import open_clip
    import torch

    from zoo.models import register_model_configs

    register_model_configs()
    torch.manual_seed(0)
    torch.save(open_clip.create_model(model).state_dict(), path)
    return path


def warmup_pool(pool: Path, warm: Path) -> Path:
    """A pool holding only the first shard (symlinks), for the warm-up passes."""
    from shards.layout import Pool

    source, target = Pool(pool), Pool(warm)
    first = source.finished_shards()[0]
    target.shards_dir.mkdir(parents=True, exist_ok=True)
    for name in ("shard_tar", "shard_parquet", "shard_stats"):
        link = getattr(target, name)(first)
        if not link.exists():
            link.symlink_to(getattr(source, name)(first))
    return warm


# ---------------------------------------------------------------- the measured passes (child side)


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the DataLoader workers)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def tars_of(pool: Path) -> list[Path]:
    from shards.layout import Pool

    return [Pool(pool).shard_tar(s) for s in Pool(pool).finished_shards()]


def pass_curate(pool: Path, args, tag: str) -> int:
    from curate.score.run import ScoreSettings, score_pool

    settings = ScoreSettings(batch_size=args.batch_size, workers=args.workers, progress=False)
    result = score_pool(pool, model=args.model, pretrained=str(args.weights), tag=tag, settings=settings)
    pass_curate.seconds = result.seconds  # its own clock: after model load, until the last rename
    return result.rows


def pass_naive(pool: Path, args, seed) -> int:
    """What one would write first: everything in the main process, batch by batch."""
    import io

    import torch
    from PIL import Image

    from shards.reader import iter_tar_samples

    def flush(images, captions):
        with torch.inference_mode():
            image = torch.nn.functional.normalize(seed.model.encode_image(torch.stack(images)), dim=-1)
            text = torch.nn.functional.normalize(seed.model.encode_text(seed.tokenizer(captions)), dim=-1)
            return (image * text).sum(-1)

    rows, images, captions, scores = 0, [], [], []
    for tar in tars_of(pool):
        for _, sample in iter_tar_samples(tar):
            rows += 1
            try:
                with Image.open(io.BytesIO(sample["jpg"])) as img:
                    images.append(seed.preprocess(img.convert("RGB")))
            except Exception:  # noqa: BLE001 - the naive loop skips what it cannot decode
                continue
            captions.append(sample["txt"].decode("utf-8", "replace"))
            if len(images) == args.batch_size:
                scores.append(flush(images, captions))
                images, captions = [], []
        if images:  # batches stay within a shard, like curate's chunks
            scores.append(flush(images, captions))
            images, captions = [], []
    return rows


def pass_naive_cols(pool: Path, args, seed) -> int:
    """The naive loop producing curate's per-row columns (reader.decode_chunk) in the main process."""
    import torch

    from curate.score.batched import SplitPreprocess
    from curate.score.reader import decode_chunk
    from shards.reader import iter_tar_samples

    preprocess = SplitPreprocess(seed.preprocess)

    def flush(samples):
        decoded = decode_chunk(samples, preprocess, seed.tokenizer)
        if decoded["images"] is None:
            return None
        with torch.inference_mode():
            image = torch.nn.functional.normalize(seed.model.encode_image(decoded["images"]), dim=-1)
            text = torch.nn.functional.normalize(seed.model.encode_text(decoded["texts"][decoded["ok"]]), dim=-1)
            return (image * text).sum(-1)

    rows, samples = 0, []
    for tar in tars_of(pool):
        for _, sample in iter_tar_samples(tar):
            rows += 1
            samples.append(sample)
            if len(samples) == args.batch_size:
                flush(samples)
                samples = []
        if samples:
            flush(samples)
            samples = []
    return rows


def pass_decode(pool: Path, args, seed) -> int:
    """curate score's DataLoader with nothing behind it."""
    import torch

    from curate.score.reader import ChunkedShards, ShardJob

    jobs = [ShardJob(t.stem, str(t)) for t in tars_of(pool)]
    dataset = ChunkedShards(jobs, args.batch_size, seed.preprocess, seed.tokenizer)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=args.workers, persistent_workers=False,
        prefetch_factor=4 if args.workers else None,
    )
    return sum(len(item["rows"]) for item in loader if not item["end"])


def pass_model(pool: Path, args, seed) -> int:
    """The model alone, on every batch of the pool decoded before the clock starts."""
    import torch

    from curate.score.reader import ChunkedShards, ShardJob

    chunks = [c for c in ChunkedShards([ShardJob(t.stem, str(t)) for t in tars_of(pool)], args.batch_size,
                                       seed.preprocess, seed.tokenizer) if not c["end"]]
    started, cpu_before = time.perf_counter(), cpu_seconds()
    with torch.inference_mode():
        for chunk in chunks:  # like curate: text for every row, image for the decodable ones
            text = torch.nn.functional.normalize(seed.model.encode_text(chunk["texts"]), dim=-1)
            if chunk["images"] is not None:
                image = torch.nn.functional.normalize(seed.model.encode_image(chunk["images"]), dim=-1)
                (image * text[chunk["ok"]]).sum(-1)
    pass_model.seconds, pass_model.cpu_seconds = time.perf_counter() - started, cpu_seconds() - cpu_before
    return sum(len(c["rows"]) for c in chunks)


def child(args) -> None:
    """One mode in this process: warm up on one shard, then time the full pool; prints JSON."""
    import torch

    from curate.score.seed_model import load_seed_model

    if args.threads and args.child == "curate":
        torch.set_num_threads(args.threads)
    pool = args.pool
    warm = warmup_pool(pool, Path(tempfile.mkdtemp(prefix="score-warm-", dir=args.pool.parent)))
    try:
        if args.child == "curate":
            pass_curate(warm, args, tag="warmup")
            cpu_before = cpu_seconds()
            rows = pass_curate(pool, args, tag=args.tag)
            seconds = pass_curate.seconds
        else:
            seed = load_seed_model(args.model, str(args.weights), None)
            run = {"naive": pass_naive, "naive-cols": pass_naive_cols, "decode": pass_decode,
                   "model": pass_model}[args.child]
            run(warm, args, seed)
            cpu_before = cpu_seconds()
            started = time.perf_counter()
            rows = run(pool, args, seed)
            seconds = time.perf_counter() - started
            if args.child == "model":  # decoding beforehand is not the model's time
                seconds, cpu_before = pass_model.seconds, cpu_seconds() - pass_model.cpu_seconds
    finally:
        shutil.rmtree(warm, ignore_errors=True)
    print(json.dumps({
        "rows": rows, "seconds": seconds, "cpu_seconds": cpu_seconds() - cpu_before, "threads": torch.get_num_threads(),
        "rss_main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))


# ---------------------------------------------------------------- the driver (parent side)


def run_mode(mode: str, pool: Path, weights: Path, args, round_: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--pool", str(pool), "--weights", str(weights),
           "--model", args.model, "--batch-size", str(args.batch_size), "--workers", str(args.workers),
           "--threads", str(args.threads),
           "--tag", f"bench-{round_}"]
    # through bench/measure.py's launcher: forked from this driver (torch loaded), the child's
    # peak RSS would start at the driver's
    child = run_child(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)})
    shutil.rmtree(pool / "scores" / f"bench-{round_}", ignore_errors=True)
    shutil.rmtree(pool / "embeddings" / f"bench-{round_}", ignore_errors=True)
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=10000,
                    help="demo pool rows (about 93%% download); big enough that starting the workers is not the figure")
    ap.add_argument("--image-size", type=int, default=64, help="download image size in pixels")
    ap.add_argument("--samples-per-shard", type=int, default=500, help="download shard size")
    ap.add_argument("--model", default="micro-vit-32,tiny-vit-32",
                    help="open_clip model names (comma list), random weights; each gets its own table")
    ap.add_argument("--batch-size", type=int, default=256, help="curate score's default")
    ap.add_argument("--workers", type=int, default=default_workers(),
                    help="DataLoader workers for curate score and the decode ceiling (default: curate's default)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads in curate score's main process, to try a setting before changing "
                         "curate score (default 0: torch's own default, as curate score runs today)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is printed")
    ap.add_argument("--dir", type=Path, default=None, help="work folder, kept and reused (default: a temporary one)")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--pool", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--tag", default="bench", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-score-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        pool = build_pool(work, args.size, args.image_size, args.samples_per_shard)
        for model in args.model.split(","):
            args.model = model  # the child processes get one model each
            weights = save_random_model(model, work / f"{model}.pt")
            runs: dict[str, list[dict]] = {m: [] for m in MODES}
            for r in range(args.rounds):
                for mode in MODES[r % len(MODES):] + MODES[:r % len(MODES)]:  # rotated: no mode always runs first
                    runs[mode].append(run_mode(mode, pool, weights, args, r))
                    print(f"  {model} round {r + 1} {LABELS[mode]:<20} "
                          f"{runs[mode][-1]['rows'] / runs[mode][-1]['seconds']:7.1f} img/s", flush=True)
            report(runs, args, pool)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


def report(runs: dict[str, list[dict]], args, pool: Path) -> None:
    rows = {m: {r["rows"] for r in rs} for m, rs in runs.items()}
    counts = set().union(*rows.values())
    if len(counts) != 1:
        raise SystemExit(f"the modes saw different numbers of images: {rows}")
    n = counts.pop()
    rate = {m: statistics.median(r["rows"] / r["seconds"] for r in rs) for m, rs in runs.items()}
    print()
    print(f"pool: {n} images in {len(tars_of(pool))} shards at {args.image_size}px; model {args.model} (random weights); "
          f"batch {args.batch_size}; {args.workers} DataLoader worker(s); {os.cpu_count()} CPU cores; "
          f"torch threads in curate's main process: {runs['curate'][0]['threads']}, in the others: "
          f"{runs['naive'][0]['threads']}; median of {args.rounds} round(s)")
    print(f"{'':<22}{'images/s':>10}{'seconds':>9}{'CPU ms/img':>12}{'main MiB':>10}{'worker MiB':>11}"
          "   each round (images/s)")
    for mode in MODES:
        rs = runs[mode]
        worker = f"{max(r['rss_worker_mib'] for r in rs):>11.0f}" if mode in ("curate", "decode") else f"{'-':>11}"
        cpu_ms = statistics.median(1000 * r["cpu_seconds"] / r["rows"] for r in rs)
        print(f"{LABELS[mode]:<22}{rate[mode]:>10.1f}{statistics.median(r['seconds'] for r in rs):>9.2f}{cpu_ms:>12.2f}"
              f"{max(r['rss_main_mib'] for r in rs):>10.0f}{worker}   "
              + ", ".join(f"{r['rows'] / r['seconds']:.1f}" for r in rs))
    print()

    def ratio(a: str, b: str) -> str:
        rounds = ", ".join(f"{y['seconds'] / x['seconds']:.2f}" for x, y in zip(runs[a], runs[b]))
        return f"{rate[a] / rate[b]:.2f}  (each round: {rounds})"

    bound = "model" if rate["model"] < rate["decode"] else "decode"
    print(f"curate / naive loop:          {ratio('curate', 'naive')}  goal >= 1.5")
    print(f"curate / decode ceiling:      {ratio('curate', 'decode')}  goal >= 0.9")
    print(f"curate / naive, same columns: {ratio('curate', 'naive-cols')}")
    print(f"curate / model ceiling:       {ratio('curate', 'model')}")
    print(f"the {'model' if bound == 'model' else 'decoding'} is the slower part here: curate score cannot beat "
          f"min(decode, model) = {rate[bound]:.1f} images/s")
    # On a CPU the model and the workers share the cores, so the best any pipeline can do is
    # all cores busy with exactly the decode + model work: cores / (decode + model CPU time).
    cpu_ms = {m: statistics.median(1000 * r["cpu_seconds"] / r["rows"] for r in runs[m]) for m in ("decode", "model")}
    shared = 1000 * (os.cpu_count() or 1) / (cpu_ms["decode"] + cpu_ms["model"])
    print(f"shared-core bound: {os.cpu_count()} cores / ({cpu_ms['decode']:.2f} + {cpu_ms['model']:.2f} CPU ms/img) = "
          f"{shared:.1f} images/s; curate reaches {rate['curate'] / shared:.2f} of it")
    print()


if __name__ == "__main__":
    main()
