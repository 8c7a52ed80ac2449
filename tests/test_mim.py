"""`train mim` end to end on real shards: a teacher CLIP from `train run`, MIM of a timm EVA
tower that resumes bitwise after kill -9, `train run --init-image MIM_RUN` with FLIP,
--unmasked-fraction and --layer-decay, one-line refusals (exit 2), and a weak-to-strong
plan that reuses finished stages."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_train_run import kill9_at_step_4_and_resume, train_cli

FAST = ["--batch-size", "16", "--workers", "1", "--threads", "1", "--no-progress", "--log-every", "1",
        "--shuffle-buffer", "50"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Shards without the need for captions, an eval folder, and a 4-step teacher CLIP."""
    from shapes_data import make_eval_dir, make_shape_shards

    root = tmp_path_factory.mktemp("mim")
    make_shape_shards(root / "data", 120, per_shard=40, corrupt=1)
    make_eval_dir(root / "eval", per_class=1)
    train_cli("run", "--data", str(root / "data"), "--out", str(root / "teacher"), "--samples", "64", *FAST)
    return root


def test_mim_resumes_bitwise_after_kill9_and_initialises_a_flip_eva_clip(runs, tmp_path):
    args = ["--teacher", str(runs / "teacher"), "--data", str(runs / "data"), "--samples", "128",
            "--checkpoint-every", "2", *FAST]
    proc = train_cli("mim", "--out", str(tmp_path / "alone"), *args)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["step"] == 8 and summary["flops"] == 8 * summary["flops_per_step"] > 0
    killed = tmp_path / "killed"
    kill9_at_step_4_and_resume(killed, args, command="mim")
    a = torch.load(tmp_path / "alone" / "final.pt", weights_only=True)
    b = torch.load(killed / "final.pt", weights_only=True)
    assert (a["step"], a["flops"], a["model_name"]) == (b["step"], b["flops"], "tiny-eva02-32")
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    lines = [json.loads(l) for l in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == list(range(1, 9)) and "temperature" not in lines[0]
    assert lines[-1]["loss"] < lines[0]["loss"]  # the student learns the teacher's features
    ckpt = torch.load(sorted((killed / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    assert set(ckpt["head"]) == {"mask_token", "regress.weight", "regress.bias"}

    # The MIM run initialises an EVA CLIP, trained with FLIP, an unmasked tail and layer decay.
    out = tmp_path / "clip"
    proc = train_cli("run", "--data", str(runs / "data"), "--out", str(out), "--model", "tiny-eva02-32",
                     "--init-image", str(killed), "--strategy", "flip", "--unmasked-fraction", "0.25",
                     "--layer-decay", "0.75", "--samples", "64", *FAST)
    assert f"image tower <- {killed}: 76 loaded, 0 resampled, 0 new" in proc.stderr
    import yaml

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["flops_per_step"] < 0.75 * config["flops_per_step_unmasked"]
    assert (config["total_steps"], config["layer_decay"]) == (4, 0.75)
    init = json.loads((out / "init.json").read_text())
    assert init["image"]["counts"] == {"loaded": 76}


def test_misfits_fail_in_one_line_with_exit_2(runs, tmp_path):
    from zoo.models import create_model

    micro = tmp_path / "micro.pt"  # a ViT teacher with a 4x4 patch grid (patch 8 at 32 px)
    torch.save({"model_name": "micro-vit-32", "state_dict": create_model("micro-vit-32")[0].state_dict()}, micro)
    resnet = tmp_path / "resnet.pt"
    torch.save({"model_name": "tiny-resnet-32", "state_dict": create_model("tiny-resnet-32")[0].state_dict()}, resnet)
    cases = [
        (["--teacher", str(micro)], "the teacher's features do not fit the student: the teacher gives 4x4"),
        (["--teacher", str(runs / "teacher"), "--model", "tiny-resnet-32"], "no patch tokens"),
        (["--teacher", str(resnet)], "the teacher must be a ViT or EVA CLIP"),
        (["--teacher", str(runs / "teacher"), "--mask-ratio", "1.5"], "--mask-ratio"),
    ]
    for extra, needle in cases:
        proc = train_cli("mim", "--data", str(runs / "data"), "--out", str(tmp_path / "r"), "--samples", "32",
                         *FAST, *extra, check=False)
        err = [l for l in proc.stderr.splitlines() if l.strip()]
        assert proc.returncode == 2 and len(err) == 1 and needle in err[0], proc.stderr[-2000:]


def test_weak_to_strong_plan_runs_reuses_and_tabulates(runs, tmp_path):
    from train.weak_to_strong import format_table, run_plan

    plan = tmp_path / "plan.yaml"
    plan.write_text(f"""
data: {runs / 'data'}
eval: {runs / 'eval'}
defaults: {{batch_size: 16, workers: 0, threads: 1, shuffle_buffer: 50, log_every: 1}}
stages:
  - {{name: small, kind: clip, model: tiny-vit-32, samples: 32}}
  - {{name: mim, kind: mim, teacher: small, model: small-eva02-32, samples: 32}}
  - {{name: big, kind: clip, model: small-eva02-32, init_image: mim, init_text: small, samples: 32}}
""")
    rows = run_plan(plan, tmp_path / "w2s", progress=False)
    assert [(r["stage"], r["kind"], r["from"]) for r in rows] == [
        ("small", "clip", ""), ("mim", "mim", "small"), ("big", "clip", "mim text:small")]
    assert all(r["flops"] > 0 for r in rows) and rows[2]["zeroshot_top1"] is not None
    assert rows[1]["zeroshot_top1"] is None
    final = (tmp_path / "w2s" / "seed0" / "big" / "final.pt").stat().st_mtime_ns
    again = run_plan(plan, tmp_path / "w2s", progress=False)  # finished stages are reused, not rerun
    assert again == rows and (tmp_path / "w2s" / "seed0" / "big" / "final.pt").stat().st_mtime_ns == final
    assert json.loads((tmp_path / "w2s" / "table.json").read_text()) == rows
    assert "| big | clip | small-eva02-32 | mim text:small |" in format_table(rows)
    big = json.loads((tmp_path / "w2s" / "seed0" / "big" / "init.json").read_text())
    assert big["image"]["counts"] == {"loaded": 110} and set(big["text"]["counts"]) == {"loaded"}
    plan.write_text("stages: [{name: a, kind: mae}]")
    from clikit.errors import UserError

    with pytest.raises(UserError, match="kind 'mae'"):
        run_plan(plan, tmp_path / "bad")


def test_weak_to_strong_reuses_a_stage_only_for_its_seed_and_options(runs, tmp_path):
    """Another --seed trains its own stages (OUT/seed1/NAME), never relabels seed 0's; a
    finished stage whose options differ from the plan's is refused in one line, not reused."""
    import yaml

    from clikit.errors import UserError
    from train.weak_to_strong import run_plan

    plan = tmp_path / "plan.yaml"
    text = f"""
data: {runs / 'data'}
defaults: {{batch_size: 16, workers: 0, threads: 1, shuffle_buffer: 50, lr: 0.01}}
stages: [{{name: small, kind: clip, model: micro-vit-32, samples: 32}}]
"""
    plan.write_text(text)
    out = tmp_path / "w2s"
    first = run_plan(plan, out, progress=False)
    seed0 = (out / "seed0" / "small" / "final.pt").read_bytes()
    other = run_plan(plan, out, seed=1, progress=False)
    assert first[0]["seed"] == 0 and other[0]["seed"] == 1
    assert yaml.safe_load((out / "seed1" / "small" / "config.yaml").read_text())["seed"] == 1
    assert (out / "seed1" / "small" / "final.pt").read_bytes() != seed0  # trained with seed 1, not seed 0's relabelled
    assert (out / "seed0" / "small" / "final.pt").read_bytes() == seed0
    plan.write_text(text.replace("lr: 0.01", "lr: 0.02"))
    with pytest.raises(UserError, match=r"stage 'small' .* was trained with lr=0.01, the plan now gives lr=0.02") as info:
        run_plan(plan, out, progress=False)
    assert "\n" not in str(info.value)


def test_the_shipped_weak_to_strong_recipe_reads_as_valid_stages(tmp_path):
    """sweeps/weak_to_strong.yaml: every stage is a valid train run / train mim config, the
    MIM arm and its random-init control are the same model at the same CLIP-stage budget."""
    from train.mim import MimConfig
    from train.weak_to_strong import read_plan, stage_config

    plan = read_plan(Path(__file__).resolve().parents[1] / "sweeps" / "weak_to_strong.yaml")
    configs = {s["name"]: stage_config(plan, s, tmp_path, seed=1) for s in plan["stages"]}
    stages = tmp_path / "seed1"  # the --seed's own folder of stages
    assert isinstance(configs["mim"], MimConfig) and configs["mim"].teacher == str(stages / "teacher")
    arm, control = configs["clip-mim"], configs["clip-random"]
    assert arm.init_image == str(stages / "mim") and control.init_image is None
    assert arm.init_text == control.init_text == str(stages / "teacher")  # EVA-CLIP: text from the teacher
    assert (arm.model, arm.budget, arm.lr, arm.seed) == (control.model, control.budget, control.lr, control.seed) == (
        "tiny-eva02-32", "3e12", 0.001, 1)


def test_mim_validation_is_train_runs_plus_its_own():
    """MimConfig.validate is TrainConfig's checks (none restated) plus the teacher and the mask;
    what differs comes from the strategy record (MIM contrasts nothing: a batch of one is fine)."""
    import dataclasses

    from clikit.errors import UserError
    from train.config import TrainConfig, validate
    from train.mim import MimConfig

    mim = MimConfig(data="-", out="-", samples="8", teacher="t.pt", batch_size=1)
    validate(mim)
    with pytest.raises(UserError, match="at least 2 for a contrastive loss"):
        validate(TrainConfig(data="-", out="-", samples="8", batch_size=1))
    cases = [
        (dict(batch_size=0), "--batch-size must be at least 1"),
        (dict(teacher=""), "--teacher is required"),
        (dict(mask_ratio=1.5), "--mask-ratio must be in (0, 1)"),
        (dict(lock_image_unlocked_groups=-1), "--lock-image-unlocked-groups must be >= 0"),  # TrainConfig's
        (dict(init_vision="a.pt", init_image="b.pt"), "give only one of them"),  # TrainConfig's
        (dict(strategy="flip"), "unknown strategy 'flip'; choose one of: mim"),
    ]
    for change, needle in cases:
        with pytest.raises(UserError) as err:
            validate(dataclasses.replace(mim, **change))
        assert needle in str(err.value)
