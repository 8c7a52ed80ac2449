"""`train run --accum-steps K`: the gradient of K micro-batches is that of the whole batch
(open_clip's accumulation, with its temperature counted once and its randomness replayed), end to
end it trains the weights of one big batch, and what it cannot do is refused in one line."""
from __future__ import annotations

import pytest
import torch

from clikit.errors import UserError
from test_train_run import COMMON, kill9_at_step_4_and_resume, train_cli, weights
from train.accumulate import accumulated_backward, draw_seeds, replayed_rng
from train.loop import TrainConfig, run_training
from train.strategies import StrategyModule
from zoo.models import create_model, image_size

# Per-tensor relative error ||a - b|| / ||b|| of gradients (and of weights after training) that
# accumulation may add: float32 summation order only (measured ~1e-6; a wrong temperature
# gradient is 3.0, patch drops drawn anew in the second pass ~1).
TOLERANCE = 1e-5
# The same for the weights after 3 AdamW steps: Adam divides each gradient by its own RMS, so a
# tensor whose steps are tiny next to the rounding (the value biases, zero at init) carries that
# rounding into its steps (measured 5.8e-6 on an Intel CPU, 1.4e-5 on an AMD EPYC whose BLAS sums
# in another order; the last micro-batch left out of the gradient gives 1.1).
WEIGHT_TOLERANCE = 1e-4
BATCH, K = 32, 4


def relative_errors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    assert a.keys() == b.keys()
    return {n: float((a[n] - b[n]).norm() / b[n].norm().clamp_min(1e-30)) for n in a}


def gradients(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    module.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("name", ["clip", "flip"])
def test_four_micro_batches_of_8_give_the_gradient_of_one_batch_of_32(name):
    """One batch of 32 against 4 x 8 accumulated, every parameter's gradient within TOLERANCE.
    flip drops patches at random: the reference draws each 8 rows' drop from the seed the
    accumulation gives them (else the two would drop different patches by construction)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_model("micro-vit-32", patch_dropout=0.5 if name == "flip" else 0.0)[0]
    size = image_size(model)
    module = StrategyModule(model, name, size, (0.5,) * 3, (0.25,) * 3)
    module.train()
    data = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (BATCH, 3, size, size), dtype=torch.uint8, generator=data)
    texts = torch.randint(1, 1000, (BATCH, model.context_length), generator=data)
    cpu = torch.device("cpu")

    torch.manual_seed(7)
    seeds = draw_seeds(K)
    outputs = []
    for im, tx, seed in zip(images.chunk(K), texts.chunk(K), seeds):
        with replayed_rng(seed, cpu):
            outputs.append(module(im, tx, features_only=True))
    image_f, text_f = torch.cat([o[0] for o in outputs]), torch.cat([o[1] for o in outputs])
    whole = module.clip_loss(image_f, text_f, outputs[0][2])
    whole.backward()
    reference = gradients(module)
    if name == "clip":  # no randomness: the plain forward of the batch is the same objective
        loss, _ = module(images, texts)
        loss.backward()
        assert max(relative_errors(gradients(module), reference).values()) <= TOLERANCE

    torch.manual_seed(7)
    loss = accumulated_backward(lambda im, tx: module(im, tx, features_only=True), module.clip_loss,
                                images, texts, K, cpu)
    errors = relative_errors(gradients(module), reference)
    assert float(loss) == pytest.approx(float(whole.detach()), rel=1e-6)
    assert errors["model.logit_scale"] <= TOLERANCE  # counted once, not K times
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE, (worst, errors[worst])
    assert len(errors) == len(list(module.parameters()))  # every parameter got a gradient


def without_key_biases(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights less the attention key biases: their exact gradient is 0 (softmax ignores a
    constant per query), so Adam turns the ~1e-10 rounding noise either run has into full-size
    steps of random sign (measured relative differences 0.3-0.9, at norms ~1e-5)."""
    kept = {}
    for name, value in state.items():
        if name.endswith("attn.in_proj_bias"):
            q, _, v = value.chunk(3)
            kept[name + "[q]"], kept[name + "[v]"] = q, v
        else:
            kept[name] = value
    return kept


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from shapes_data import make_shape_shards

    root = tmp_path_factory.mktemp("shapes")
    make_shape_shards(root / "data", 96, per_shard=48)
    return root


def test_train_run_with_accumulation_trains_the_weights_of_one_big_batch(shapes, tmp_path):
    """The same 3 steps of 32 samples, with and without --accum-steps 4: the same FLOPs per step
    (a step is still the global batch) and weights within WEIGHT_TOLERANCE per tensor, but for the
    key biases (see without_key_biases)."""
    args = ["--data", str(shapes / "data"), "--samples", "96", *COMMON, "--batch-size", "32", "--opt", "adamw",
            "--workers", "0"]
    train_cli("run", "--out", str(tmp_path / "one"), *args)
    train_cli("run", "--out", str(tmp_path / "accum"), *args, "--accum-steps", "4")
    import yaml

    one, accum = (yaml.safe_load((tmp_path / n / "config.yaml").read_text()) for n in ("one", "accum"))
    assert accum["accum_steps"] == 4 and accum["flops_per_step"] == one["flops_per_step"]
    a, b = (without_key_biases(weights(tmp_path / n / "final.pt")) for n in ("accum", "one"))
    errors = relative_errors(a, b)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= WEIGHT_TOLERANCE, (worst, errors[worst])


def test_flip_with_accumulation_killed_and_resumed_is_bitwise_identical(shapes, tmp_path):
    """The micro-batches' seeds come from the RNG a checkpoint holds: a flip run with
    --accum-steps 2 killed after step 4 and resumed drops the same patches as one never stopped."""
    args = ["--data", str(shapes / "data"), "--samples", "96", "--checkpoint-every", "2", *COMMON,
            "--strategy", "flip", "--accum-steps", "2", "--batch-size", "12"]
    train_cli("run", "--out", str(tmp_path / "alone"), *args)
    kill9_at_step_4_and_resume(tmp_path / "killed", args)
    a, b = weights(tmp_path / "alone" / "final.pt"), weights(tmp_path / "killed" / "final.pt")
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []


def test_what_accumulation_cannot_do_is_refused(shapes, tmp_path):
    data = str(shapes / "data")
    cases = [
        (dict(accum_steps=0), "at least 1"),
        (dict(accum_steps=2, strategy="slip"), "does not apply to strategy slip"),
        (dict(accum_steps=3), "must divide each process's batch of 16"),
        (dict(accum_steps=2, model="tiny-resnet-32"), "BatchNorm"),
    ]
    for kwargs, needle in cases:
        cfg = TrainConfig(data=data, out=str(tmp_path / "r"), samples="64", batch_size=16, workers=0,
                          progress=False, threads=1, **kwargs)
        with pytest.raises(UserError, match=needle):
            run_training(cfg)
    assert not (tmp_path / "r" / "final.pt").exists()
    proc = train_cli("run", "--data", data, "--out", str(tmp_path / "r"), "--samples", "64", *COMMON,
                     "--accum-steps", "3", check=False)
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(err) == 1 and "--accum-steps 3" in err[0], proc.stderr
