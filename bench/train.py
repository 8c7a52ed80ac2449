"""Training throughput on CPU, one run, same model config, batch and shards:

  1. `train run` (clip) vs open_clip's own loop (open_clip_train.main)    goal >= 1.0x
  2. `train run --strategy flip --patch-drop 0.5` vs clip                   goal >= 1.6x
  3. the data loader alone vs the model's consumption (clip)                goal >= 2x

Prints samples/s and peak memory (max RSS) for each, the ratios, the whole-process CPU
seconds of each training run (start-up included; a check on wall-clock rates when others
load the shared cores), and the FLOPs per step that
each `train run` measured (torch.utils.flop_counter, forward + backward; written to its
config.yaml), so FLIP's speed-up can be read against its measured, not assumed, saving.

The model is tiny-vit-64 for all three comparisons (open_clip_train.main, clip, flip and the
loader build the same config): a ViT at 64 px with patch 4 (256 patch tokens, width 128,
4 blocks) and a narrow text tower (width 64, 2 blocks, 16-token context). At real sizes the
image tower is most of a CLIP step, which is why FLIP's patch drop pays 2-3x. tiny-vit-32
(64 tokens) is not like that: per step on this CPU (1 thread, batch 64, CPU time) its image
tower was 390 ms of 552 ms, while the text tower (49408 x 128 token embedding with a dense
gradient) took ~92 ms and AdamW over its 7.6M parameters (6.3M of them that embedding)
~65 ms; FLIP halved only the image part (390 -> 192 ms), so a FLIP step still cost 64% of a
CLIP step (1.55x at best, 1.40x measured with the loader worker sharing the two cores).
In tiny-vit-64 the image tower is 98% of the measured FLOPs (78.0 of 78.6 GFLOPs per step),
and FLIP's step measures 40.0 GFLOPs (attention over 129 instead of 257 tokens).

    nice python bench/train.py [--samples 2560] [--batch-size 64] [--model tiny-vit-64] [--data DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # shapes_data: the drawn-shapes shards the train tests use
ENV = dict(os.environ, WANDB_MODE="disabled", HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1")


def cpu_s_children() -> float:
    """User + system CPU seconds of the finished child processes (their own children included):
    unlike wall time it barely moves when others load the shared cores."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def peak_mb_children() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def steady_rate(metrics: Path) -> float:
    """Mean samples/s over logged windows, the first (warm-up) window left out."""
    rows = [json.loads(l) for l in metrics.read_text().splitlines()]
    rows = rows[1:] if len(rows) > 1 else rows
    return sum(r["samples/s"] for r in rows) / len(rows)


def ours(data: str, out: Path, args, strategy: str) -> tuple[float, float, int]:
    """samples/s, wall seconds and the measured FLOPs per step of one `train run`."""
    cmd = [sys.executable, "-m", "train", "run", "--data", data, "--out", str(out), "--model", args.model,
           "--samples", str(args.samples), "--batch-size", str(args.batch_size), "--workers", str(args.workers),
           "--threads", str(args.threads), "--opt", "adamw", "--strategy", strategy, "--log-every", "5", "--no-progress"]
    before = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=ENV, check=True, capture_output=True)
    wall = time.perf_counter() - before
    import yaml

    flops = int(yaml.safe_load((out / "config.yaml").read_text())["flops_per_step"])
    return steady_rate(out / "metrics.jsonl"), wall, flops


def open_clip_loop(tars: list[str], logs: Path, args) -> float:
    pattern = f"{os.path.dirname(tars[0])}/{{{Path(tars[0]).stem}..{Path(tars[-1]).stem}}}.tar"
    code = ("import sys, zoo.models as m; m.register_model_configs(); "
            "from open_clip_train.main import main; main(sys.argv[1:])")
    cmd = [sys.executable, "-c", code, "--train-data", pattern, "--dataset-type", "webdataset",
           "--train-num-samples", str(args.samples), "--model", args.model, "--batch-size", str(args.batch_size),
           "--epochs", "1", "--workers", str(args.workers), "--device", "cpu", "--precision", "fp32", "--lr", "1e-3",
           "--warmup", "10", "--logs", str(logs), "--name", "oc", "--save-frequency", "0", "--report-to", "",
           "--log-every-n-steps", "5", "--seed", "0"]
    env = dict(ENV, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    text = proc.stdout + proc.stderr + "".join(p.read_text() for p in logs.rglob("out.log"))
    rates = [float(x) for x in re.findall(r"Batch \(t\): [0-9.]+, ([0-9.]+)/s,", text)]
    if proc.returncode != 0 or not rates:
        print(text[-3000:], file=sys.stderr)
        raise SystemExit("open_clip_train.main failed; see its log above")
    # same rule as ours: leave out the first (warm-up) log line
    rates = rates[1:] if len(rates) > 1 else rates
    return sum(rates) / len(rates)


def loader_alone(tars: list[str], args) -> float:
    from train.data import StreamConfig, make_loader
    from zoo.models import create_model, image_size

    model, _, _, tok = create_model(args.model)
    cfg = StreamConfig(shards=tars, batch_size=args.batch_size, image_size=image_size(model),
                       context_length=int(getattr(tok, "context_length", 77)), tokenizer=tok,
                       num_workers=args.workers)
    it = iter(make_loader(cfg))
    next(it)  # worker start-up is not throughput
    n_batches = max(5, args.samples // args.batch_size)
    start = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    return n_batches * args.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="directory of .tar shards (default: generate 2000 shape samples)")
    parser.add_argument("--model", default="tiny-vit-64",
                        help="same config for every measure; default: a vision-dominated tiny ViT (see above)")
    parser.add_argument("--samples", type=int, default=2560)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from shapes_data import make_shape_shards
    from train.sources import resolve_shards

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    data = args.data or str(work / "data")
    if not args.data:
        make_shape_shards(data, 2000, per_shard=500, size=64)
    tars = resolve_shards(data)
    print(f"model {args.model}, batch {args.batch_size}, {args.samples} samples, workers {args.workers}, "
          f"threads {args.threads}, shards {len(tars)} in {data}")

    cpu0 = cpu_s_children()
    oc = open_clip_loop(tars, work / "oc_logs", args)
    cpu1 = cpu_s_children()
    oc_mem = peak_mb_children()
    clip, clip_wall, clip_flops = ours(data, work / "clip", args, "clip")
    cpu2 = cpu_s_children()
    clip_mem = peak_mb_children()
    flip, flip_wall, flip_flops = ours(data, work / "flip", args, "flip")
    cpu3 = cpu_s_children()
    oc_cpu, clip_cpu, flip_cpu = cpu1 - cpu0, cpu2 - cpu1, cpu3 - cpu2
    loader = loader_alone(tars, args)
    self_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"{'measure':44s} {'samples/s':>10s}")
    print(f"{'open_clip_train.main (baseline)':44s} {oc:10.1f}   peak RSS so far {oc_mem:.0f} MB, cpu {oc_cpu:.0f}s")
    print(f"{'train run --strategy clip':44s} {clip:10.1f}   peak RSS so far {clip_mem:.0f} MB, wall {clip_wall:.0f}s, cpu {clip_cpu:.0f}s, "
          f"measured {clip_flops / 1e9:.1f} GFLOPs/step")
    print(f"{'train run --strategy flip --patch-drop 0.5':44s} {flip:10.1f}   wall {flip_wall:.0f}s, cpu {flip_cpu:.0f}s, "
          f"measured {flip_flops / 1e9:.1f} GFLOPs/step")
    print(f"{'data loader alone':44s} {loader:10.1f}   bench process peak RSS {self_mem:.0f} MB")
    print(f"ratio train run / open_clip loop : {clip / oc:5.2f}x  (goal >= 1.0x; by process CPU s {oc_cpu / clip_cpu:.2f}x)")
    print(f"ratio flip / clip                : {flip / clip:5.2f}x  (goal >= 1.6x; "
          f"by process CPU s {clip_cpu / flip_cpu:.2f}x; measured FLOPs/step clip / flip {clip_flops / flip_flops:.2f}x)")
    print(f"ratio loader / consumption       : {loader / clip:5.2f}x  (goal >= 2x)")


if __name__ == "__main__":
    main()
