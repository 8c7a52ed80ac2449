"""The quickstart's model config (tiny-resnet-64): registered, built at its size, and it learns;
`train models`: listed from the configs, measured on request.

Real parts: real shards of drawn shapes, real open_clip model, real training steps."""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from pathlib import Path

import torch

from pipeline.quickstart import QuickstartConfig


def test_quickstart_model_is_registered_and_sized():
    from zoo.models import all_model_names, create_model, image_size, project_model_names

    name = QuickstartConfig().model
    assert name in project_model_names() and name in all_model_names()
    model, _, val_pre, tokenizer = create_model(name)
    assert image_size(model) == 64
    assert int(tokenizer.context_length) == 24  # demo captions are at most 22 tokens
    with torch.no_grad():
        feats = model.encode_image(torch.zeros(2, 3, 64, 64), normalize=True)
        text = model.encode_text(tokenizer(["a red circle", "two blue stars on a plain background"]), normalize=True)
    assert feats.shape == text.shape == (2, 64)


def test_quickstart_model_trains_and_loss_falls(tmp_path):
    import open_clip

    from train.loop import TrainConfig, run_training
    from zoo.models import register_model_configs
    from shapes_data import make_shape_shards

    make_shape_shards(tmp_path / "data", 64, per_shard=64, size=64)
    name = QuickstartConfig().model
    out = tmp_path / "run"
    summary = run_training(TrainConfig(
        data=str(tmp_path / "data"), out=str(out), model=name, samples="512", batch_size=32, lr=1e-2,
        workers=0, threads=1, log_every=1, progress=False,
    ))
    assert summary["step"] == 16 and summary["samples"] == 512
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4  # it learns something in 16 steps
    register_model_configs()  # open_clip called directly knows the project's names once registered
    model = open_clip.create_model(name, pretrained=str(out / "final.pt"))
    assert model.visual.image_size in (64, (64, 64))


def test_train_models_lists_the_project_models_with_their_real_size_and_flops():
    """`train models --project --json`: each project config with the parameter count of the
    model built for real (on the CPU, not the meta device the command uses) and training
    FLOPs per sample of about 3x one sample's forward pass counted here (backward costs
    two forwards; a bit less where the input needs no gradient, a bit more for attention,
    whose backward recomputes the scores), so a per-batch or a forward-only count fails."""
    import subprocess
    import sys
    from pathlib import Path

    import open_clip
    from torch.utils.flop_counter import FlopCounterMode

    from zoo.models import image_size, project_model_names, register_model_configs

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "train", "models", "--project", "--json"], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert sorted(rows) == sorted(project_model_names())
    register_model_configs()
    for name in ("micro-vit-32", "tiny-resnet-64"):
        model = open_clip.create_model(name, pretrained=None)
        size = image_size(model)
        context = open_clip.get_model_config(name)["text_cfg"]["context_length"]
        assert rows[name]["params"] == sum(p.numel() for p in model.parameters())
        assert rows[name]["image_size"] == size
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.zeros(1, 3, size, size), torch.zeros(1, context, dtype=torch.long))
        ratio = rows[name]["train_flops_per_sample"] / counter.get_total_flops()
        assert 2.5 < ratio < 3.5, (name, ratio)


def test_model_configs_read_from_the_json_files_are_open_clips_own():
    """`train models` lists from zoo.models.model_configs() without importing open_clip; the known
    answer is open_clip itself once the project's configs are registered: the same names in the
    same order, and each config as open_clip.get_model_config returns it."""
    import open_clip

    from zoo.models import model_configs, register_model_configs

    register_model_configs()
    configs = model_configs()
    assert list(configs) == open_clip.list_models()
    assert all(configs[name] == open_clip.get_model_config(name) for name in configs)


def _train_models(cache: Path, *args: str) -> list[dict]:
    """`train models ARGS --json` in a fresh process with its cache under `cache`; a listing
    without ARGS must leave torch unimported (no model built)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = ("import sys; from train.cli import app; app(['models', *sys.argv[1:], '--json'], standalone_mode=False);"
            "assert sys.argv[1:] or 'torch' not in sys.modules, 'the listing imported torch'")
    env = dict(os.environ, XDG_CACHE_HOME=str(cache), PYTHONPATH=str(root))
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=root, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_train_models_lists_from_configs_and_measures_only_on_request(tmp_path):
    """The listing reads configs (no model built, torch not even imported); a name given is
    measured and its figures kept in the user's cache, so the next listing shows them; a
    damaged cache counts as empty."""
    from zoo.models import model_configs, project_model_names

    rows = _train_models(tmp_path)
    assert [r["name"] for r in rows] == list(model_configs())
    by_name = {r["name"]: r for r in rows}
    assert all(r["params"] is None and r["train_flops_per_sample"] is None for r in rows)
    assert by_name["tiny-eva02-32"]["vision"] == "timm:clipcurate_eva02_tiny_32"
    assert by_name["tiny-resnet-64"]["vision"] == "resnet" and by_name["tiny-resnet-64"]["image_size"] == 64
    assert by_name["ViT-B-32"]["vision"] == "vit" and by_name["ViT-B-32"]["embed_dim"] == 512
    assert by_name["roberta-ViT-B-32"]["text"] == "hf:roberta-base"

    measured = _train_models(tmp_path, "micro-vit-32")
    assert [r["name"] for r in measured] == ["micro-vit-32"] and measured[0]["train_flops_per_sample"] > 0
    cached = {r["name"]: r for r in _train_models(tmp_path)}
    assert cached["micro-vit-32"] == measured[0]
    assert all(cached[n]["params"] is None for n in project_model_names() if n != "micro-vit-32")

    (tmp_path / "clipcurate" / "models.json").write_text("{not json")
    assert all(r["params"] is None for r in _train_models(tmp_path))
