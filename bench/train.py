"""Training throughput on CPU: the same model config, batch size and shards for every side.

  1. `train run` (clip) vs open_clip's own loop (open_clip_train.main)    goal >= 1.0x
  2. `train run --strategy flip --patch-drop 0.5` vs clip                   goal >= 1.6x
  3. the data loader alone vs the model's consumption (clip)                goal >= 2x
  4. `train run` (clip) as 2 torchrun processes (W=2) vs 1 (W=1), the same global batch:
     what DDP costs or gains on this machine (each process --threads, --workers; on 2 shared
     cores W=2 mostly measures the all-reduce and the contention)

Every side runs in its own process (reaped with wait4, so its CPU seconds and peak RSS are
its own) and yields one time per step: open_clip_train.main logs every step
(`--log-every-n-steps 1`: each "Batch (t)" line is that step's rate, data wait included),
`train run` writes a metrics.jsonl line per step (`--log-every 1`: samples/s of a one-step
window, data wait included), and the loader alone times each `next()` on a batch. The same
statistic is taken for every side: the first --warmup-steps steps are left out, the next N
steps are kept (N the same for every run: the fewest any run has), and samples/s is the
batch size over the median of those step times (the mean rate over the same N steps is
printed too). Each round runs every side once, the order rotated round by round; the table
shows the median over --rounds rounds, each round's figure and each round's ratio, so the
ratios stay meaningful when other work loads the shared cores. Also printed: whole-process
CPU seconds (start-up included, data workers included), peak RSS of the largest process of
each side, and the FLOPs per step each `train run` measured (torch.utils.flop_counter,
forward + backward; written to its config.yaml), so FLIP's speed-up can be read against its
measured, not assumed, saving.

The model is tiny-vit-64 for every side: a ViT at 64 px with patch 4 (256 patch tokens,
width 128, 4 blocks) and a narrow text tower (width 64, 2 blocks, 16-token context). At
real sizes the image tower is most of a CLIP step, which is why FLIP's patch drop pays
2-3x; in tiny-vit-32 the text tower (its 49408-row token embedding with a dense gradient)
and the optimiser were a large share of the step and capped what FLIP could save (see
docs/design.md, Training). The FLOPs printed here show the image tower's share.

    nice python bench/train.py [--samples 2560] [--batch-size 64] [--rounds 3] [--warmup-steps 5]
                               [--model tiny-vit-64] [--data DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # shapes_data: the drawn-shapes shards the train tests use
ENV = dict(os.environ, WANDB_MODE="disabled", HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1")

from measure import median, rotated, run_child  # noqa: E402 - bench/measure.py (the script's folder is on the path)

SIDES = ("open_clip", "clip", "flip", "loader", "clip-w2")
LABELS = {
    "open_clip": "open_clip_train.main (baseline)",
    "clip": "train run --strategy clip",
    "flip": "train run --strategy flip --patch-drop 0.5",
    "loader": "data loader alone",
    "clip-w2": "train run --strategy clip, torchrun W=2",
}
TORCHRUN_2 = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
OPEN_CLIP_RATE = re.compile(r"Batch \(t\): [0-9.]+, ([0-9.eE+-]+)/s,")


def ours(data: str, out: Path, args, strategy: str, launcher: tuple[str, ...] = ()) -> dict:
    """Per-step seconds, process figures and the measured FLOPs per step of one `train run`
    (launcher: torchrun's arguments, for more than one process; samples/s is the global batch's)."""
    cmd = [sys.executable, *launcher, "-m", "train", "run", "--data", data, "--out", str(out), "--model", args.model,
           "--samples", str(args.samples), "--batch-size", str(args.batch_size), "--workers", str(args.workers),
           "--threads", str(args.threads), "--opt", "adamw", "--strategy", strategy, "--log-every", "1",
           "--no-progress"]
    child = run_child(cmd, env=ENV, cwd=ROOT)
    import yaml

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows]
    if steps != list(range(steps[0], steps[0] + len(steps))):
        raise SystemExit(f"train run --log-every 1 did not log every step: {steps}")
    flops = int(yaml.safe_load((out / "config.yaml").read_text())["flops_per_step"])
    shutil.rmtree(out, ignore_errors=True)
    return {"step_s": [args.batch_size / r["samples/s"] for r in rows], "wall_s": child.wall_s,
            "cpu_s": child.cpu_s, "peak_mb": child.peak_mb, "flops": flops}


def open_clip_loop(tars: list[str], logs: Path, args) -> dict:
    """Per-step seconds and process figures of open_clip_train.main on the same shards."""
    pattern = f"{os.path.dirname(tars[0])}/{{{Path(tars[0]).stem}..{Path(tars[-1]).stem}}}.tar"
    code = ("import sys, zoo.models as m; m.register_model_configs(); "
            "from open_clip_train.main import main; main(sys.argv[1:])")
    cmd = [sys.executable, "-c", code, "--train-data", pattern, "--dataset-type", "webdataset",
           "--train-num-samples", str(args.samples), "--model", args.model, "--batch-size", str(args.batch_size),
           "--epochs", "1", "--workers", str(args.workers), "--device", "cpu", "--precision", "fp32", "--lr", "1e-3",
           "--warmup", "10", "--logs", str(logs), "--name", "oc", "--save-frequency", "0", "--report-to", "",
           "--log-every-n-steps", "1", "--seed", "0"]
    child = run_child(cmd, env=dict(ENV, OMP_NUM_THREADS=str(args.threads)), cwd=ROOT, check=False)
    log = "".join(p.read_text() for p in logs.rglob("out.log")) if logs.exists() else ""
    # out.log holds what the console got; read it, else the console itself
    rates = [float(x) for x in OPEN_CLIP_RATE.findall(log or child.stdout + child.stderr)]
    shutil.rmtree(logs, ignore_errors=True)
    if not rates:
        print((child.stdout + child.stderr + log)[-3000:], file=sys.stderr)
        raise SystemExit("open_clip_train.main logged no step; see its output above")
    return {"step_s": [args.batch_size / r for r in rates], "wall_s": child.wall_s, "cpu_s": child.cpu_s,
            "peak_mb": child.peak_mb, "flops": None}


def loader_alone(data: str, args) -> dict:
    """Per-batch seconds of the training data loader with no model behind it, in a child."""
    steps = max(args.warmup_steps + 5, args.samples // args.batch_size)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--loader-child", "--data", data, "--model", args.model,
           "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--threads", str(args.threads),
           "--samples", str(steps * args.batch_size)]
    child = run_child(cmd, env=ENV, cwd=ROOT)
    return {"step_s": json.loads(child.stdout.strip().splitlines()[-1]), "wall_s": child.wall_s,
            "cpu_s": child.cpu_s, "peak_mb": child.peak_mb, "flops": None}


def loader_child(args) -> None:
    """In the child: time each batch of make_loader (the first one includes worker start-up,
    as a training run's first step does; the warm-up rule leaves it out)."""
    import torch

    from train.data import StreamConfig, make_loader
    from train.sources import resolve_shards
    from zoo.models import create_model, image_size

    torch.set_num_threads(args.threads)
    model, _, _, tok = create_model(args.model)
    cfg = StreamConfig(shards=resolve_shards(args.data), batch_size=args.batch_size, image_size=image_size(model),
                       context_length=int(getattr(tok, "context_length", 77)), tokenizer=tok,
                       num_workers=args.workers)
    it = iter(make_loader(cfg))
    times = []
    for _ in range(args.samples // args.batch_size):
        start = time.perf_counter()
        next(it)
        times.append(time.perf_counter() - start)
    print(json.dumps(times))


def steady(step_s: list[float], warmup: int, n: int, batch: int) -> tuple[float, float]:
    """(batch / median step time, samples / summed time) over steps warmup .. warmup + n."""
    kept = step_s[warmup:warmup + n]
    return batch / median(kept), batch * len(kept) / sum(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="directory of .tar shards (default: generate 2000 shape samples)")
    parser.add_argument("--model", default="tiny-vit-64",
                        help="same config for every side; default: a vision-dominated tiny ViT (see above)")
    parser.add_argument("--samples", type=int, default=2560, help="samples each training run trains on")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs every side once, order rotated")
    parser.add_argument("--warmup-steps", type=int, default=5, help="first steps of each run left out")
    parser.add_argument("--loader-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loader_child:
        loader_child(args)
        return

    from shapes_data import make_shape_shards
    from train.sources import resolve_shards

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        data = args.data or str(work / "data")
        if not args.data:
            make_shape_shards(data, 2000, per_shard=500, size=64)
        tars = resolve_shards(data)
        print(f"model {args.model}, batch {args.batch_size}, {args.samples} samples per run, workers {args.workers}, "
              f"threads {args.threads}, shards {len(tars)} in {data}; {args.rounds} round(s), "
              f"{args.warmup_steps} warm-up step(s) left out; {os.cpu_count()} CPU cores, "
              f"load average {os.getloadavg()[0]:.1f} at start", flush=True)

        runs: dict[str, list[dict]] = {side: [] for side in SIDES}
        for r in range(args.rounds):
            for side in rotated(SIDES, r):
                if side == "open_clip":
                    result = open_clip_loop(tars, work / f"oc-{r}", args)
                elif side == "loader":
                    result = loader_alone(data, args)
                elif side == "clip-w2":
                    result = ours(data, work / f"{side}-{r}", args, "clip", tuple(TORCHRUN_2))
                else:
                    result = ours(data, work / f"{side}-{r}", args, side)
                runs[side].append(result)
                print(f"  round {r + 1} {LABELS[side]:44s} {len(result['step_s']):3d} steps, "
                      f"median step {median(result['step_s'][args.warmup_steps:] or result['step_s']):.3f} s, "
                      f"wall {result['wall_s']:.0f} s", flush=True)
        report(runs, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(runs: dict[str, list[dict]], args) -> None:
    w, batch = args.warmup_steps, args.batch_size
    n = min(len(run["step_s"]) for rs in runs.values() for run in rs) - w
    if n < 3:
        raise SystemExit(f"too few steps after {w} warm-up steps ({n}); raise --samples or lower --warmup-steps")
    for rs in runs.values():
        for run in rs:
            run["rate"], run["mean_rate"] = steady(run["step_s"], w, n, batch)
    rate = {side: median(run["rate"] for run in rs) for side, rs in runs.items()}
    print()
    print(f"steps {w + 1}..{w + n} of every run (same {n} steps each side); samples/s = batch / median step time; "
          f"median of {args.rounds} round(s); load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'side':44s} {'samples/s':>10s} {'mean-rate':>10s} {'proc cpu s':>11s} {'wall s':>7s} {'peak MiB':>9s}"
          f"   each round (samples/s)")
    for side, rs in runs.items():
        flops = rs[0]["flops"]
        print(f"{LABELS[side]:44s} {rate[side]:10.1f} {median(r['mean_rate'] for r in rs):10.1f} "
              f"{median(r['cpu_s'] for r in rs):11.0f} {median(r['wall_s'] for r in rs):7.0f} "
              f"{max(r['peak_mb'] for r in rs):9.0f}   " + ", ".join(f"{r['rate']:.1f}" for r in rs)
              + (f"   measured {flops / 1e9:.1f} GFLOPs/step" if flops else ""))

    def ratio(a: str, b: str) -> str:
        each = ", ".join(f"{x['rate'] / y['rate']:.2f}" for x, y in zip(runs[a], runs[b]))
        return f"{rate[a] / rate[b]:5.2f}x  (each round: {each})"

    cpu = {side: median(r["cpu_s"] for r in rs) for side, rs in runs.items()}
    fl = {side: runs[side][0]["flops"] for side in ("clip", "flip")}
    print()
    print(f"ratio train run / open_clip loop : {ratio('clip', 'open_clip')}  goal >= 1.0x")
    print(f"ratio flip / clip                : {ratio('flip', 'clip')}  goal >= 1.6x; "
          f"process CPU s clip / flip {cpu['clip'] / cpu['flip']:.2f}x; "
          f"measured FLOPs/step clip / flip {fl['clip'] / fl['flip']:.2f}x")
    print(f"ratio loader / consumption (clip): {ratio('loader', 'clip')}  goal >= 2x")
    print(f"ratio W=2 / W=1 (clip)           : {ratio('clip-w2', 'clip')}  no goal: {os.cpu_count()} cores shared by "
          f"2 x ({args.threads} threads + {args.workers} workers); process CPU s W=2 / W=1 "
          f"{cpu['clip-w2'] / cpu['clip']:.2f}x")
    print("(proc cpu s: user + system CPU of each side's whole process tree, start-up and data workers included; "
          "peak MiB: ru_maxrss of its largest process)")


if __name__ == "__main__":
    main()
