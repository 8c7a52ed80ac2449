"""The trainer's parts on real data: budget parsing and FLOP measurement, the shard loader
(determinism, resume position, subsets, corrupt images, shard sets), optimiser groups,
strategies, registry and evaluation."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from shapes_data import make_eval_dir, make_shape_shards

    root = tmp_path_factory.mktemp("shapes_parts")
    tars = make_shape_shards(root / "data", 90, per_shard=30, corrupt=2)
    make_eval_dir(root / "eval", per_class=2)
    return root, tars


@pytest.fixture(scope="module")
def tiny():
    from zoo.models import create_model

    torch.manual_seed(0)
    return create_model("tiny-vit-32")


def test_budget_parsing():
    from clikit.errors import UserError
    from train.budget import parse_flops, parse_samples, steps_for_budget

    assert parse_flops("3e14") == 3e14
    assert parse_flops("300T") == 3e14
    assert parse_flops("2.5P") == 2.5e15
    assert parse_samples("1M") == 1_000_000 and parse_samples("50k") == 50_000 and parse_samples("123") == 123
    for bad in ("", "abc", "-1T", "0"):
        with pytest.raises(UserError):
            parse_flops(bad)
    assert steps_for_budget(10e9, 3e9) == 3
    with pytest.raises(UserError, match="smaller than one step"):
        steps_for_budget(1e9, 3e9)


def _stream(shapes, tokenizer, **kw):
    from train.data import StreamConfig
    from train.sources import resolve_shards

    root, _ = shapes
    defaults = dict(shards=resolve_shards(root / "data"), batch_size=8, image_size=32, context_length=32,
                    tokenizer=tokenizer, seed=3, num_workers=2, shuffle_buffer=20)
    defaults.update(kw)
    return StreamConfig(**defaults)


def _take(cfg, n):
    from train.data import make_loader

    it = iter(make_loader(cfg))
    return [next(it) for _ in range(n)]


def test_loader_is_deterministic_and_resumes_exactly(shapes, tiny):
    tokenizer = tiny[3]
    full = _take(_stream(shapes, tokenizer), 14)  # > one epoch (88 readable samples / 8)
    again = _take(_stream(shapes, tokenizer), 14)
    for a, b in zip(full, again):
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["texts"], b["texts"])
    assert sum(b["skipped"] for b in full) >= 2  # corrupt images are skipped and counted
    assert {b["logical"] for b in full} == {0, 1}

    other_seed = _take(_stream(shapes, tokenizer, seed=4), 2)
    assert not torch.equal(other_seed[0]["texts"], full[0]["texts"]) or not torch.equal(other_seed[0]["images"], full[0]["images"])

    # Resume after 5 batches: positions per logical worker, rotation by batches taken.
    positions = [0, 0]
    for batch in full[:5]:
        positions[batch["logical"]] = batch["position"]
    resumed = _take(_stream(shapes, tokenizer, positions=positions, batches_taken=5), 9)
    for a, b in zip(full[5:], resumed):
        assert a["logical"] == b["logical"]
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["texts"], b["texts"])


def test_subset_filter_and_shard_set_and_patterns(shapes, tiny, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import webdataset as wds

    from clikit.errors import UserError
    from train.data import uid_of_sample
    from train.sources import load_subset_uids, resolve_shards

    root, tars = shapes
    uids = [uid_of_sample(s) for s in wds.DataPipeline(wds.SimpleShardList(tars), wds.tarfile_to_samples())]
    keep = set(uids[::3])
    pool = tmp_path / "pool"
    (pool / "subsets").mkdir(parents=True)
    shutil.copytree(root / "data", pool / "shards")
    pq.write_table(pa.table({"uid": sorted(keep)}), pool / "subsets" / "third.parquet")
    assert resolve_shards(pool) == sorted(str(p) for p in (pool / "shards").glob("*.tar"))
    held = load_subset_uids("third", pool)
    assert len(held) == len(keep) and all(u in held for u in keep) and not any(u in held for u in set(uids) - keep)

    samples = list(wds.DataPipeline(wds.SimpleShardList(tars), wds.tarfile_to_samples()))
    kept_captions = {s["txt"].decode() for i, s in enumerate(samples) if uid_of_sample(s) in keep and i >= 2}
    cfg = _stream(shapes, tiny[3], shards=resolve_shards(pool), subset=held, num_workers=0, batch_size=29)
    (batch,) = _take(cfg, 1)  # one epoch of the subset: 30 kept, the corrupt one skipped
    assert batch["skipped"] == 1 and batch["epoch"] == 0 and batch["position"] == 30
    expected = {tuple(t.tolist()) for t in tiny[3](sorted(kept_captions))}
    assert {tuple(t.tolist()) for t in batch["texts"]} == expected

    # a shard set: manifest.json naming its tars
    shardset = tmp_path / "set"
    shardset.mkdir()
    for t in tars:
        shutil.copy(t, shardset / os.path.basename(t).replace("0000", "00000"))
    names = sorted(p.name for p in shardset.glob("*.tar"))
    (shardset / "manifest.json").write_text(json.dumps({"shards": [{"name": n} for n in names]}))
    assert [os.path.basename(p) for p in resolve_shards(shardset)] == names
    pattern = str(root / "data" / "{00000..00002}.tar")
    assert resolve_shards(pattern) == tars
    with pytest.raises(UserError, match="missing"):
        resolve_shards(str(root / "data" / "{00000..00009}.tar"))
    with pytest.raises(UserError, match="empty"):
        load_subset_uids(_empty_subset(tmp_path))
    pq.write_table(pa.table({"uid": sorted(keep) + ["IMG_0001.jpg"]}), tmp_path / "odd.parquet")
    with pytest.raises(UserError, match="1 of its 31 rows are not distinct sample uids"):
        load_subset_uids(tmp_path / "odd.parquet")


def _empty_subset(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"uid": pa.array([], pa.string())}), path)
    return path


def test_param_groups_skip_decay_on_norms_biases_and_logit_scale(tiny):
    from train.optim import make_optimizer, param_groups
    from train.strategies import StrategyModule

    module = StrategyModule(tiny[0], "clip", 32, (0.5,) * 3, (0.25,) * 3)
    groups = param_groups(module, lr=1e-3, weight_decay=0.1, visual_lr=2e-3, text_lr=5e-4)
    names = {n: p for n, p in module.named_parameters()}
    by_id = {id(p): g for g in groups for p in g["params"]}
    assert by_id[id(names["model.logit_scale"])]["weight_decay"] == 0.0
    assert by_id[id(names["model.visual.ln_post.weight"])]["weight_decay"] == 0.0
    assert by_id[id(names["model.visual.transformer.resblocks.0.attn.in_proj_bias"])]["weight_decay"] == 0.0
    assert by_id[id(names["model.visual.transformer.resblocks.0.attn.in_proj_weight"])]["weight_decay"] == 0.1
    assert by_id[id(names["model.visual.conv1.weight"])]["lr"] == 2e-3
    assert by_id[id(names["model.token_embedding.weight"])]["lr"] == 5e-4
    assert sum(len(g["params"]) for g in groups) == len(names)
    from timm.optim import Lamb

    assert isinstance(make_optimizer(module, "lamb", 1e-3, 0.1), Lamb)


def test_optimiser_gets_only_the_trainable_params_of_a_partly_locked_model():
    from train.optim import make_optimizer, param_groups
    from train.strategies import StrategyModule
    from zoo.models import create_model
    from zoo.towers import lock_image

    model, *_ = create_model("tiny-vit-32")
    lock_image(model, unlocked_groups=2)  # open_clip's last two groups: (last block, ln_post), proj
    module = StrategyModule(model, "clip", 32, (0.5,) * 3, (0.25,) * 3)
    groups = param_groups(module, lr=1e-3, weight_decay=0.1)
    grouped = {id(p) for g in groups for p in g["params"]}
    trainable = {n: p for n, p in module.named_parameters() if p.requires_grad}
    assert grouped == {id(p) for p in trainable.values()} and len(trainable) < len(list(module.parameters()))
    assert "model.visual.conv1.weight" not in trainable and "model.visual.proj" in trainable
    decay = {g["name"]: g["weight_decay"] for g in groups}
    assert decay == {"other-no_decay": 0.0, "text": 0.1, "text-no_decay": 0.0, "visual": 0.1, "visual-no_decay": 0.0}
    optimizer = make_optimizer(module, "adamw", 1e-3, 0.1)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trainable)


def test_flip_steps_are_cheaper_and_every_strategy_trains(tiny):
    from train.budget import measure_step_flops
    from zoo.models import create_model
    from train.strategies import StrategyModule, set_patch_drop

    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    costs = {}
    for strategy in ("clip", "flip", "clip-aug", "slip"):
        torch.manual_seed(0)
        model, _, _, tok = create_model("tiny-vit-32", patch_dropout=0.5 if strategy == "flip" else 0.0)
        module = StrategyModule(model, strategy, 32, (0.5,) * 3, (0.25,) * 3)
        texts = tok(["a red circle"] * 8)
        before = {k: v.clone() for k, v in module.state_dict().items()}
        costs[strategy] = measure_step_flops(lambda: module(x, texts)[0], [module])
        assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())  # no trace left
        opt = torch.optim.SGD(module.parameters(), lr=0.1)
        loss, logs = module(x, texts)
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
        assert not torch.equal(before["model.visual.conv1.weight"], module.state_dict()["model.visual.conv1.weight"])
        if strategy == "slip":
            assert "ssl_loss" in logs
        if strategy == "flip":
            set_patch_drop(module, 0.0)
            assert measure_step_flops(lambda: module(x, texts)[0], [module]) == costs["clip"]
    assert costs["flip"] < 0.75 * costs["clip"]
    assert costs["slip"] > 1.5 * costs["clip"]  # two extra image views are paid for


def test_bench_model_is_vision_dominated_so_flip_halves_its_step():
    """tiny-vit-64 (bench/train.py's model): 256 patch tokens and a narrow 16-token text tower,
    so the image tower is nearly the whole measured step and FLIP's 0.5 drop about halves it
    (in tiny-vit-32 the text tower, its 49408-row embedding and the optimiser made a FLIP step
    still cost 64% of a CLIP step in CPU time)."""
    from train.budget import measure_step_flops
    from zoo.models import create_model, image_size, project_model_names
    from train.strategies import StrategyModule, set_patch_drop

    assert "tiny-vit-64" in project_model_names()
    torch.manual_seed(0)
    model, _, _, tok = create_model("tiny-vit-64", patch_dropout=0.5)
    assert image_size(model) == 64 and tok.context_length == 16
    module = StrategyModule(model, "flip", 64, (0.5,) * 3, (0.25,) * 3)
    module.train()
    x = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    texts = tok(["a photo of a red circle"] * 4)
    flip = measure_step_flops(lambda: module(x, texts)[0], [module])
    set_patch_drop(module, 0.0)
    clip = measure_step_flops(lambda: module(x, texts)[0], [module])
    text = measure_step_flops(lambda: model.encode_text(texts).sum(), [module])
    assert model.visual.positional_embedding.shape[0] == 257  # 16 x 16 patches + cls
    assert text < 0.02 * clip  # the image tower is the step
    assert 0.45 * clip < flip < 0.55 * clip  # half the patches: about half the measured FLOPs


def test_registry_all_tiny_models_and_eva_tower():
    import open_clip

    from zoo.models import create_model, project_model_names, register_model_configs

    register_model_configs()
    register_model_configs()  # idempotent
    names = project_model_names()
    assert {"tiny-vit-32", "tiny-eva02-32", "tiny-resnet-32", "tiny-convnext-32"} <= set(names)
    assert set(names) <= set(open_clip.list_models())
    model = create_model("tiny-eva02-32")[0]
    trunk = model.visual.trunk
    assert trunk.rope is not None and "SwiGLU" in type(trunk.blocks[0].mlp).__name__
    assert model.visual.image_size == (32, 32)


def test_evaluate_reports_zero_shot_and_retrieval(shapes, tiny):
    from train.evaluate import evaluate

    root, _ = shapes
    model, _, preprocess, tokenizer = tiny
    results = evaluate(model, preprocess, tokenizer, root / "eval")
    assert results["zeroshot_classes"] == 12 and results["zeroshot_images"] == 24
    assert 0 <= results["zeroshot_top1"] <= results["zeroshot_top5"] <= 1
    assert results["retrieval_pairs"] == 24
    for k in (1, 5, 10):
        assert 0 <= results[f"image_to_text_R@{k}"] <= 1 and 0 <= results[f"text_to_image_R@{k}"] <= 1


def test_a_strategy_is_its_record(monkeypatch):
    """What a strategy does comes from its registry record, never from its name: a new
    record that drops patches and augments gets FLIP's patch dropout, FLIP's config rule
    and clip-aug's augmenter without any other code knowing its name."""
    import dataclasses

    from clikit.errors import UserError
    from train import strategies as S
    from train.config import TrainConfig, validate
    from zoo.towers import build_towers

    with pytest.raises(UserError) as err:
        S.strategy("mae")
    assert str(err.value) == "unknown strategy 'mae'; choose one of: clip, flip, clip-aug, slip"
    monkeypatch.setitem(S.REGISTRY, "flip-aug", S.Strategy("flip-aug", drops_patches=True,
                                                           augmentation=S.clip_augment))
    cfg = TrainConfig(data="x", out="y", model="tiny-vit-32", strategy="flip-aug", samples="8", patch_drop=0.4,
                      unmasked_fraction=0.25)
    validate(cfg)
    with pytest.raises(UserError, match="also needs flops_per_step_unmasked"):
        validate(dataclasses.replace(cfg, flops_per_step=10**6))
    validate(dataclasses.replace(cfg, strategy="clip-aug", flops_per_step=10**6))  # no masked steps: no tail cost
    towers = build_towers(**cfg.tower_arguments())
    assert [m.prob for m in S.patch_dropout_modules(towers.model)] == [0.4]
    assert S.patch_dropout_modules(build_towers(**dataclasses.replace(cfg, strategy="clip-aug").tower_arguments()).model) == []
    module = S.StrategyModule(towers.model, "flip-aug", 32, (0.5,) * 3, (0.25,) * 3)
    assert module.augment is not None and module.slip_head is None
    assert S.StrategyModule(towers.model, "slip", 32, (0.5,) * 3, (0.25,) * 3).slip_head is not None
    assert S.strategy("mim").command == "mim"  # train mim's runs name it; train run does not take it
    with pytest.raises(UserError, match="unknown strategy 'mim'; choose one of: clip, flip, clip-aug, slip"):
        validate(dataclasses.replace(cfg, strategy="mim"))


def test_train_options_are_the_config_fields():
    """`train run`/`train mim` options are generated from TrainConfig/MimConfig: each field made
    with `option` is a flag (its own name, or the one it names) that fills that field; fields
    callers set (world_size, measured FLOPs, keep_checkpoints, slip_scale) are no options."""
    import dataclasses

    import typer
    from typer.testing import CliRunner

    from train.commands.options import config_command
    from train.config import MimConfig, TrainConfig, option

    def parse(cls, *args):
        seen = []
        app = typer.Typer(rich_markup_mode=None)  # as clikit.app makes it: plain text
        app.command()(config_command(cls, seen.append))
        result = CliRunner().invoke(app, list(args))
        return seen[0] if seen else result

    cfg = parse(TrainConfig, "--data", "d", "--out", "o", "--wd", "0.1", "--eval", "e", "--no-progress",
                "--init-vision", "v", "--lock-image", "--unmasked-fraction", "0.25")
    assert (cfg.data, cfg.out, cfg.weight_decay, cfg.eval_dir, cfg.progress, cfg.init_vision, cfg.lock_image,
            cfg.unmasked_fraction) == ("d", "o", 0.1, "e", False, "v", True, 0.25)
    assert dataclasses.replace(cfg, data="-", out="-", weight_decay=0.05, eval_dir=None, progress=True,
                               init_vision=None, lock_image=False, unmasked_fraction=0.0) == TrainConfig("-", "-")
    for not_an_option in ("--world-size", "--flops-per-step", "--keep-checkpoints", "--slip-scale", "--weight-decay"):
        assert "No such option" in parse(TrainConfig, "--data", "d", "--out", "o", not_an_option, "1").output
    assert "Missing option '--out'" in parse(TrainConfig, "--data", "d").output

    mim = parse(MimConfig, "--data", "d", "--out", "o", "--teacher", "t", "--mask-ratio", "0.3")
    assert (type(mim), mim.teacher, mim.mask_ratio, mim.model, mim.strategy) == (MimConfig, "t", 0.3, "tiny-eva02-32",
                                                                                   "mim")
    assert "Missing option '--teacher'" in parse(MimConfig, "--data", "d", "--out", "o").output
    assert "No such option" in parse(MimConfig, "--data", "d", "--out", "o", "--teacher", "t", "--strategy",
                                     "flip").output
    assert "No such option" in parse(MimConfig, "--data", "d", "--out", "o", "--teacher", "t", "--lock-image").output
    mim_help = parse(MimConfig, "--help").output  # its own order and wording
    assert mim_help.index("--teacher") < mim_help.index("--data") and "Global batch size." in mim_help

    @dataclasses.dataclass
    class Wider(TrainConfig):  # a new field with `option` is a new flag, with its help, and nothing else to write
        new_knob: int = option(3, help="A knob only this test has.")

    assert parse(Wider, "--data", "d", "--out", "o", "--new-knob", "5").new_knob == 5
    assert "A knob only this test has." in parse(Wider, "--help").output
    assert "--init-vision" not in parse(TrainConfig, "--help").output  # the old name works, hidden


def test_check_first_shard_reads_a_sample_and_refuses_empty_or_broken_tars(shapes, tmp_path):
    import tarfile

    from clikit.errors import UserError
    from train.sources import check_first_shard

    _, tars = shapes
    check_first_shard(sorted(tars))
    empty = tmp_path / "empty.tar"
    tarfile.open(empty, "w").close()
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(open(sorted(tars)[0], "rb").read()[:700])  # the first header and part of its data
    for path, needle in ((empty, "is empty; check --data"), (junk, "is not a readable tar"),
                         (cut, "is not a readable tar"), (tmp_path / "missing.tar", "is not a readable tar")):
        with pytest.raises(UserError, match=needle):
            check_first_shard([str(path)])


def test_position_embeddings_and_class_tokens_get_no_weight_decay():
    """As timm and open_clip train them: what each tower's no_weight_decay() names (a 2-d or
    3-d position embedding too) is in a no-decay group; the patch embedding still decays."""
    from train.optim import param_groups
    from train.strategies import StrategyModule
    from zoo.models import create_model

    exempt = {
        "tiny-vit-32": ["model.visual.positional_embedding", "model.visual.class_embedding", "model.positional_embedding"],
        "tiny-eva02-32": ["model.visual.trunk.pos_embed", "model.visual.trunk.cls_token",
                          "model.text.positional_embedding"],
    }
    decayed = {"tiny-vit-32": "model.visual.conv1.weight", "tiny-eva02-32": "model.visual.trunk.patch_embed.proj.weight"}
    for name, names in exempt.items():
        module = StrategyModule(create_model(name)[0], "clip", 32, (0.5,) * 3, (0.25,) * 3)
        params = dict(module.named_parameters())
        decay = {id(p): g["weight_decay"] for g in param_groups(module, lr=1e-3, weight_decay=0.1) for p in g["params"]}
        assert [decay[id(params[n])] for n in names] == [0.0] * len(names), name
        assert params[names[0]].ndim >= 2  # the shape rule alone would have decayed it
        assert decay[id(params[decayed[name]])] == 0.1


def test_shards_over_http_and_pipe_give_the_local_samples(shapes):
    """open_clip's shard URLs (an http brace pattern, `pipe:COMMAND`) read through train.data's
    opener give the local shards' samples in order; a missing http shard is named up front."""
    from clikit.errors import UserError
    from curate.serve import start_server
    from train.data import shard_samples, uid_of_sample
    from train.sources import resolve_shards

    root, tars = shapes
    local = [uid_of_sample(s) for s in shard_samples(resolve_shards(root / "data"))]
    assert len(local) == 90
    pattern = "{00000..%05d}.tar" % (len(tars) - 1)
    with start_server(root / "data", port=0) as server:
        assert [uid_of_sample(s) for s in shard_samples(resolve_shards(f"{server.url}/{pattern}"))] == local
        with pytest.raises(UserError, match=rf"1 of {len(tars) + 1} shards are missing \(first: {server.url}/00003.tar\)"):
            resolve_shards("%s/{00000..%05d}.tar" % (server.url, len(tars)))
    assert [uid_of_sample(s) for s in shard_samples(resolve_shards(f"pipe:cat {root / 'data'}/{pattern}"))] == local
