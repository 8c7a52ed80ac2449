"""`curate export`: shard sets that webdataset and open_clip's own training script read."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from clihelp import ROOT, run_curate
from clikit.errors import UserError
from curate.export import export_subset
from curate.filter.run import run_filter
from curate.verify import verify_shardset
from poolfactory import make_pool
from shards.manifest import read_manifest


@pytest.fixture
def pool(tmp_path):
    fp = make_pool(tmp_path / "pool", shards=3, per_shard=12)
    run_filter(fp.path, "top", top="60%")
    return fp


def _pool_images(pool):
    """uid -> (ext, bytes) read straight from the pool's img2dataset tars."""
    images = {}
    by_key = {(s.shard, s.key): s for s in pool.ok}
    for shard in sorted({s.shard for s in pool.ok}):
        with tarfile.open(pool.path / "shards" / f"{shard}.tar") as tar:
            for member in tar:
                key, ext = member.name.split(".", 1)
                if ext in ("jpg", "png"):
                    images[by_key[(shard, key)].uid] = (ext, tar.extractfile(member).read())
    return images


def _read_set(out):
    urls = sorted(str(p) for p in out.glob("*.tar"))
    return list(wds.WebDataset(urls, shardshuffle=False))


def test_export_writes_a_complete_readable_shard_set(pool, tmp_path):
    out = tmp_path / "set"
    result = export_subset(pool.path, "top", out, samples_per_shard=4)
    wanted = pq.read_table(pool.path / "subsets/top.parquet").column("uid").to_pylist()
    samples = _read_set(out)
    assert sorted(s["__key__"] for s in samples) == wanted == sorted(set(wanted))
    images = _pool_images(pool)
    truth = pool.by_uid()
    for sample in samples:
        uid = sample["__key__"]
        ext, data = images[uid]
        assert sample[ext] == data  # image bytes copied unchanged, extension kept
        assert sample["txt"].decode() == truth[uid].caption
        meta = json.loads(sample["json"])
        assert meta["url"] == truth[uid].url and meta["scores"]["seed"] == pytest.approx(truth[uid].clip_score)
    manifest = read_manifest(out)
    assert manifest["count"] == len(wanted) == result.count
    assert [s["name"] for s in manifest["shards"]] == [f"{i:06d}.tar" for i in range(result.shards)]
    assert [s["count"] for s in manifest["shards"]][:-1] == [4] * (result.shards - 1)
    assert manifest["subset"]["params"]["fraction"] == 0.6 and "ORDER BY" in manifest["subset"]["sql"]
    assert manifest["seed_model"]["tag"] == "seed" and manifest["source_pool"] == str(pool.path.resolve())
    assert manifest["tool"]["name"] == "clipcurate"
    assert json.loads((out / "sizes.json").read_text()) == {s["name"]: s["count"] for s in manifest["shards"]}
    assert verify_shardset(out).ok
    assert sorted(os.listdir(out)) == sorted([s["name"] for s in manifest["shards"]] + ["manifest.json", "sizes.json"])


def test_shuffle_is_seeded_and_same_subset_gives_same_bytes(pool, tmp_path):
    a = export_subset(pool.path, "top", tmp_path / "a", samples_per_shard=5, shuffle=True, seed=3)
    b = export_subset(pool.path, "top", tmp_path / "b", samples_per_shard=5, shuffle=True, seed=3)
    c = export_subset(pool.path, "top", tmp_path / "c", samples_per_shard=5, shuffle=True, seed=4)
    plain = export_subset(pool.path, "top", tmp_path / "d", samples_per_shard=5)
    assert [s["sha256"] for s in a.manifest["shards"]] == [s["sha256"] for s in b.manifest["shards"]]
    assert a.count == c.count == plain.count > 5
    order = lambda out: [s["__key__"] for s in _read_set(out)]
    assert order(tmp_path / "a") != order(tmp_path / "c")
    assert sorted(order(tmp_path / "a")) == sorted(order(tmp_path / "d"))
    truth = pool.by_uid()
    pool_order = [(truth[u].shard, truth[u].key) for u in order(tmp_path / "d")]
    assert pool_order == sorted(pool_order)


def test_killed_export_never_looks_complete_and_rerun_finishes(pool, tmp_path):
    clean = export_subset(pool.path, "top", tmp_path / "clean", samples_per_shard=3)
    out = tmp_path / "killed"
    calls = []

    def die_after_two_shards(n):
        calls.append(n)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_subset(pool.path, "top", out, samples_per_shard=3, progress=die_after_two_shards)
    assert not (out / "manifest.json").exists() and not (out / "sizes.json").exists()
    assert {p.name for p in out.glob("*.tar")} == {"000000.tar", "000001.tar"}
    with pytest.raises(UserError, match="no manifest"):
        verify_shardset(out)
    with pytest.raises(UserError, match="other options"):
        export_subset(pool.path, "top", out, samples_per_shard=4)
    finished = export_subset(pool.path, "top", out, samples_per_shard=3)
    assert finished.skipped_shards == 2
    assert [s["sha256"] for s in finished.manifest["shards"]] == [s["sha256"] for s in clean.manifest["shards"]]
    assert verify_shardset(out).ok and not (out / ".export-parts").exists()
    run_filter(pool.path, "other", top="10%")
    with pytest.raises(UserError, match="another"):
        export_subset(pool.path, "other", out, samples_per_shard=3)


def test_export_cli_and_missing_subset(pool, tmp_path):
    done = run_curate("export", pool.path, tmp_path / "cli", "--subset", "top", "--samples-per-shard", "5")
    assert done.returncode == 0, done.stderr
    assert "--train-data" in done.stdout and (tmp_path / "cli" / "manifest.json").is_file()
    missing = run_curate("export", pool.path, tmp_path / "x", "--subset", "nope")
    assert missing.returncode == 2 and "available: top" in missing.stderr
    assert run_curate("verify", tmp_path / "cli").returncode == 0


TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def test_open_clip_training_script_trains_on_an_export(pool, tmp_path):
    out = tmp_path / "set"
    result = export_subset(pool.path, "top", out, samples_per_shard=4)
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "clipcurate-test-tiny.json").write_text(json.dumps(TINY_CONFIG))
    logs = tmp_path / "logs"
    launcher = (
        "import sys, open_clip; open_clip.add_model_config(sys.argv[1]); "
        "from open_clip_train.main import main; main(sys.argv[2:])"
    )
    args = [
        "--dataset-type", "webdataset", "--train-data", result.manifest["train_data"],
        "--train-num-samples", "8", "--batch-size", "4", "--epochs", "1", "--workers", "0",
        "--model", "clipcurate-test-tiny", "--device", "cpu", "--precision", "fp32",
        "--lr", "1e-3", "--warmup", "1", "--logs", str(logs), "--name", "one-step",
        "--save-frequency", "1", "--report-to", "", "--seed", "0", "--log-every-n-steps", "1",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", launcher, str(configs), *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (logs / "one-step" / "out.log").read_text()
    assert "Train Epoch: 0" in log and "Loss:" in log
    import torch

    checkpoint = torch.load(logs / "one-step" / "checkpoints" / "epoch_1.pt", map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["state_dict"]


def test_export_of_a_real_img2dataset_download(pool_copy, tmp_path):
    """The lead's real downloaded demo pool, with scores added per the contract."""
    scores_dir = pool_copy / "scores" / "fake"
    scores_dir.mkdir(parents=True)
    total = 0
    for shard in sorted((pool_copy / "shards").glob("[0-9]*.parquet")):
        table = pq.read_table(shard)
        ok = table.filter(pa.compute.equal(table["status"], "success"))
        uids = ok["uid"].to_pylist()
        total += len(uids)
        scores = np.array([int(u[:8], 16) / 2**32 for u in uids], np.float32)
        pq.write_table(pa.table({"uid": uids, "key": ok["key"], "clip_score": scores,
                                 "width": ok["width"].cast(pa.int32()), "height": ok["height"].cast(pa.int32())}),
                       scores_dir / shard.name)
    assert total > 0
    result = run_filter(pool_copy, "top40", top="40%")
    assert result.count == round(0.4 * total)
    out = tmp_path / "set"
    exported = export_subset(pool_copy, "top40", out, samples_per_shard=32, shuffle=True, seed=1)
    assert exported.count == result.count and exported.missing == 0
    assert verify_shardset(out).ok
    keys = [s["__key__"] for s in _read_set(out)]
    assert sorted(keys) == pq.read_table(result.parquet).column("uid").to_pylist()
