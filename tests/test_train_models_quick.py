"""The quickstart's model config (tiny-resnet-64): registered, built at its size, and it learns.

Real parts: real shards of drawn shapes, real open_clip model, real training steps."""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json

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
    model = open_clip.create_model(name, pretrained=str(out / "final.pt"))
    assert model.visual.image_size in (64, (64, 64))
