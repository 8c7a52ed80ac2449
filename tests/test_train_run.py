"""`train run` end to end on real webdataset shards: files, metrics, final.pt through
open_clip, `train eval`, exact resume after kill -9, torchrun with 2 CPU processes."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ENV = dict(os.environ, WANDB_MODE="disabled", HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1",
           OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--model", "tiny-vit-32", "--batch-size", "16", "--workers", "1", "--threads", "1",
          "--no-progress", "--log-every", "1", "--shuffle-buffer", "50"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from shapes_data import make_eval_dir, make_shape_shards

    root = tmp_path_factory.mktemp("shapes")
    make_shape_shards(root / "data", 120, per_shard=40, corrupt=2)
    make_eval_dir(root / "eval", per_class=2)
    return root


def train_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "train", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"train {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def kill9_at_step_4_and_resume(out: Path, args: list[str], command: str = "run") -> None:
    """Start `train COMMAND --out OUT ARGS`, kill -9 it once checkpoints/step_00000004.pt
    exists, then finish it with --resume."""
    proc = subprocess.Popen([sys.executable, "-m", "train", command, "--out", str(out), *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "checkpoints").glob("step_00000004.pt")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "final.pt").exists(), "the run finished before it could be killed"
    train_cli(command, "--out", str(out), "--resume", *args)


def test_evals_jsonl_after_kill9_and_resume_is_the_uninterrupted_runs(shapes, tmp_path):
    """A run evaluated every 2 steps, killed at its step-4 checkpoint and resumed, and one
    resumed after its final eval's line (a kill between that line and summary.json leaves
    the run without summary.json and eval.json): both end with the uninterrupted run's
    evals.jsonl, no line twice, none lost."""
    args = ["--data", str(shapes / "data"), "--samples", "96", "--checkpoint-every", "2",
            "--eval", str(shapes / "eval"), "--eval-every", "2", *COMMON]
    train_cli("run", "--out", str(tmp_path / "whole"), *args)
    whole = (tmp_path / "whole" / "evals.jsonl").read_text()
    assert [json.loads(line)["step"] for line in whole.splitlines()] == [2, 4, 6]
    kill9_at_step_4_and_resume(tmp_path / "killed", args)
    assert (tmp_path / "killed" / "evals.jsonl").read_text() == whole
    late = Path(shutil.copytree(tmp_path / "whole", tmp_path / "late"))
    (late / "summary.json").unlink()
    (late / "eval.json").unlink()
    train_cli("run", "--out", str(late), "--resume", *args)
    assert (late / "evals.jsonl").read_text() == whole
    # No step ran after the resume: summary.json's loss is still the last logged line's, not NaN.
    summaries = [json.loads((tmp_path / run / "summary.json").read_text()) for run in ("whole", "late")]
    for summary in summaries:
        del summary["out"]
    assert summaries[1] == summaries[0]


def test_run_writes_everything_and_final_loads_in_open_clip(shapes, tmp_path):
    out = tmp_path / "run"
    proc = train_cli("run", "--data", str(shapes / "data"), "--out", str(out), "--samples", "64",
                     "--eval", str(shapes / "eval"), *COMMON)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["step"] == 4 and summary["samples"] == 64
    assert summary["flops"] == 4 * summary["flops_per_step"] > 0
    assert summary["skipped"] >= 1  # the corrupt images were skipped and counted
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [1, 2, 3, 4]
    for key in ("step", "samples", "flops", "loss", "lr", "temperature", "samples/s", "data-wait fraction"):
        assert key in lines[-1]
    import yaml

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"] == "tiny-vit-32" and config["samples"] == "64" and config["seed"] == 0
    evals = json.loads((out / "eval.json").read_text())
    assert 0.0 <= evals["zeroshot_top1"] <= evals["zeroshot_top5"] <= 1.0
    assert "image_to_text_R@1" in evals and "text_to_image_R@10" in evals

    # final.pt is an open_clip checkpoint once the project's configs are registered.
    code = ("import zoo.models as m; m.register_model_configs(); import open_clip, torch;"
            f"model = open_clip.create_model('tiny-vit-32', pretrained={str(out / 'final.pt')!r});"
            "print(sum(float(p.double().sum()) for p in model.parameters()))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    expected = sum(float(v.double().sum()) for k, v in weights(out / "final.pt").items()
                   if k not in ("attn_mask",) and v.is_floating_point())
    assert abs(float(loaded.stdout.strip()) - expected) < 1e-3 * max(1.0, abs(expected))

    from zoo.checkpoint import load_model

    model, preprocess, tokenizer, name = load_model(out)
    assert name == "tiny-vit-32" and not model.training

    proc = train_cli("eval", str(out), "--eval", str(shapes / "eval"), "--out", str(tmp_path / "e.json"))
    again = json.loads((tmp_path / "e.json").read_text())
    assert again["zeroshot_top1"] == pytest.approx(evals["zeroshot_top1"])

    # Another folder's figures go to RUN/evals/FOLDER.json: the run's own eval.json stays as training wrote it.
    own = (out / "eval.json").read_bytes()
    other = Path(shutil.copytree(shapes / "eval", tmp_path / "other-eval"))
    train_cli("eval", str(out), "--eval", str(other))
    assert (out / "eval.json").read_bytes() == own
    assert json.loads((out / "evals" / "other-eval.json").read_text())["zeroshot_top1"] == pytest.approx(
        evals["zeroshot_top1"])

    # --retrieval-data alone: the first 50 pairs of the shards, the corrupt images skipped,
    # the same recalls as the library's retrieval() on the same pairs.
    proc = train_cli("eval", str(out), "--retrieval-data", str(shapes / "data"), "--retrieval-limit", "50",
                     "--out", str(tmp_path / "r.json"))
    cli = json.loads((tmp_path / "r.json").read_text())
    assert "zeroshot_top1" not in cli
    from train.evaluate import retrieval, retrieval_pairs

    pairs = retrieval_pairs(None, str(shapes / "data"), 50)
    assert len(pairs) == 50
    direct = retrieval(model, preprocess, tokenizer, pairs, "cpu")
    assert cli["retrieval_pairs"] == direct["retrieval_pairs"] == 48  # the 2 corrupt images skipped
    for key in ("image_to_text_R@1", "image_to_text_R@10", "text_to_image_R@1", "text_to_image_R@5"):
        assert cli[key] == pytest.approx(direct[key]), key


def test_kill9_resume_is_bitwise_identical(shapes, tmp_path):
    args = ["--data", str(shapes / "data"), "--samples", "160", "--checkpoint-every", "2", *COMMON]
    train_cli("run", "--out", str(tmp_path / "alone"), *args)

    out = tmp_path / "killed"
    kill9_at_step_4_and_resume(out, args)

    a, b = torch.load(tmp_path / "alone" / "final.pt", weights_only=True), torch.load(out / "final.pt", weights_only=True)
    assert (a["step"], a["samples"], a["flops"]) == (b["step"], b["samples"], b["flops"]) == (10, 160, a["flops"])
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    steps = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))  # no step logged twice

    # Resuming with a different schedule is refused, naming what changed.
    from clikit.errors import UserError
    from train.loop import TrainConfig, run_training

    cfg = TrainConfig(data=str(shapes / "data"), out=str(out), samples="160", batch_size=16, workers=1,
                      shuffle_buffer=50, lr=5e-4, resume=True, progress=False)
    with pytest.raises(UserError, match="lr"):
        run_training(cfg)


def test_torchrun_two_cpu_processes(shapes, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
           "-m", "train", "run", "--data", str(shapes / "data"), "--out", str(out), "--samples", "64",
           *COMMON, "--workers", "0"]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    assert len(summaries) == 1  # only rank 0 reports
    summary = json.loads(summaries[0])
    assert summary["step"] == 4 and summary["samples"] == 64
    config = __import__("yaml").safe_load((out / "config.yaml").read_text())
    assert config["world_size"] == 2 and config["local_batch"] == 8
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["step"] for l in lines] == [1, 2, 3, 4]
    assert json.loads(lines[-1])["flops"] == 4 * config["flops_per_step"]
    assert (out / "final.pt").is_file()


def test_two_ranks_train_like_one_on_the_same_global_batch(tmp_path):
    """The global-batch contrastive loss (features gathered with their gradient, each rank
    scoring its rows) and DDP's gradient average give the weights of one process that
    sees the whole batch: 3 SGD steps agree within 1e-5 (float32 summation order is the
    only difference), and so do the losses. (The stream itself is split by rank, so whole
    runs at different world sizes see different samples and are not compared.)"""
    script = str(ROOT / "tests" / "ddp_step.py")
    alone, ranks = tmp_path / "alone.pt", tmp_path / "ranks.pt"
    for cmd in ([sys.executable, script, str(alone)],
                [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29541",
                 script, str(ranks)]):
        proc = subprocess.run(cmd, cwd=ROOT, env={**ENV, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = torch.load(alone, weights_only=True), torch.load(ranks, weights_only=True)
    assert b["losses"] == pytest.approx(a["losses"], abs=1e-5)
    assert a["losses"][0] != pytest.approx(a["losses"][-1], abs=1e-3)  # the steps did change the model
    for key, value in a["state_dict"].items():
        assert torch.allclose(value, b["state_dict"][key], atol=1e-5, rtol=0), key


def test_bad_input_is_one_line_and_exit_2(shapes, tmp_path):
    from clikit.errors import UserError
    from train.loop import TrainConfig, run_training

    data = str(shapes / "data")
    (tmp_path / "empty").mkdir()
    cases = [
        (dict(data=str(tmp_path / "missing"), samples="10"), "no such directory"),
        (dict(data=str(tmp_path / "empty"), samples="10"), "no .tar shards"),
        (dict(data=data, samples="10", model="ViT-Nope"), "unknown model"),
        (dict(data=data, samples="10", strategy="mae"), "unknown strategy"),
        (dict(data=data, samples="10", opt="sgd"), "unknown optimiser"),
        (dict(data=data, samples="10", budget="1e15"), "exactly one budget"),
        (dict(data=data, budget="lots"), "not a number"),
        (dict(data=data, budget="1e6"), "smaller than one step"),
        (dict(data=data, samples="8"), "smaller than one step"),
        (dict(data=data, samples="64", strategy="flip", model="tiny-resnet-32"), "no patch tokens"),
        (dict(data=data, samples="64", subset=str(tmp_path / "nope.parquet")), "not found"),
    ]
    for kwargs, needle in cases:
        cfg = TrainConfig(out=str(tmp_path / "r"), batch_size=16, workers=0, progress=False, **kwargs)
        with pytest.raises(UserError, match=needle):
            run_training(cfg)
        assert not (tmp_path / "r" / "final.pt").exists()

    # Through the CLI: one line on stderr, exit status 2, no traceback.
    proc = train_cli("run", *COMMON, "--data", data, "--out", str(tmp_path / "r"), "--budget", "1e6", check=False)
    err = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2 and len(err) == 1 and "smaller than one step" in err[0], proc.stderr

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage" * 10)
    proc = train_cli("eval", str(bad), "--eval", str(shapes / "eval"), check=False)
    assert proc.returncode == 2 and "corrupt" in proc.stderr and "Traceback" not in proc.stderr

    # A checkpoint of another model does not load silently.
    other = tmp_path / "other.pt"
    torch.save({"model_name": "tiny-vit-32", "state_dict": {"visual.proj": torch.zeros(3, 3)}}, other)
    proc = train_cli("eval", str(other), "--eval", str(shapes / "eval"), check=False)
    assert proc.returncode == 2 and "does not match" in proc.stderr and "Traceback" not in proc.stderr
