"""`curate score` on a real downloaded pool with a tiny open_clip model."""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from clikit.errors import UserError
from curate.truth.scoring import roc_auc
from curate.score.run import ScoreSettings, score_pool

MODEL = "tiny-vit-32"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    import open_clip

    from zoo.models import register_model_configs

    register_model_configs()
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(open_clip.create_model(MODEL).state_dict(), path)
    return path


def _settings(**kw) -> ScoreSettings:
    return ScoreSettings(**{"batch_size": 32, "workers": 1, "progress": False, **kw})


def _tar_images(pool: Path, shard: str) -> dict[str, bytes]:
    with tarfile.open(pool / "shards" / f"{shard}.tar") as tar:
        return {m.name.split(".")[0]: tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".jpg")}


def test_scores_every_downloaded_sample_once_with_consistent_embeddings(pool_copy, weights):
    result = score_pool(pool_copy, model=MODEL, pretrained=str(weights), tag="t", settings=_settings(text_embeddings=True))
    shards = sorted(p.stem for p in (pool_copy / "shards").glob("*.tar"))
    assert result.shards_scored == len(shards) and result.tag == "t"
    info = json.loads((pool_copy / "scores/t/model.json").read_text())
    assert info["model"] == MODEL and info["dim"] == result.dim
    for shard in shards:
        downloaded = pq.read_table(pool_copy / "shards" / f"{shard}.parquet").to_pylist()
        expected = {r["key"]: r["uid"] for r in downloaded if r["status"] == "success"}
        scores = pq.read_table(pool_copy / "scores/t" / f"{shard}.parquet").to_pylist()
        assert {r["key"]: r["uid"] for r in scores} == expected
        image = np.load(pool_copy / "embeddings/t" / f"{shard}.npy")
        text = np.load(pool_copy / "embeddings/t" / f"{shard}.text.npy")
        assert image.dtype == np.float16 and image.shape == (len(scores), result.dim) == text.shape
        np.testing.assert_allclose(np.linalg.norm(image.astype(np.float32), axis=1), 1.0, atol=2e-3)
        cosine = (image.astype(np.float32) * text.astype(np.float32)).sum(axis=1)
        np.testing.assert_allclose([r["clip_score"] for r in scores], cosine, atol=3e-3)
        images = _tar_images(pool_copy, shard)
        for row in scores:
            assert row["image_sha256"] == hashlib.sha256(images[row["key"]]).hexdigest()
            assert row["width"] == row["height"] == 64  # downloaded at --image-size 64 with border
            assert row["caption_tokens"] >= 3 and row["caption_truncated"] is False
            assert 0 <= row["phash"] < 2**64


def test_exact_duplicates_share_sha256_and_phash(demo_dir, pool_copy, weights):
    score_pool(pool_copy, model=MODEL, pretrained=str(weights), tag="t", settings=_settings())
    truth = {r["uid"]: r for r in pq.read_table(demo_dir / "truth.parquet").to_pylist()}
    rows = [r for p in sorted((pool_copy / "scores/t").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    groups: dict[int, list[dict]] = {}
    for row in rows:
        t = truth[row["uid"]]
        if t["dup_group"] is not None and t["kind"] in ("clean", "dup-exact"):
            groups.setdefault(t["dup_group"], []).append(row)
    pairs = [g for g in groups.values() if len(g) > 1]
    assert pairs, "the demo pool has exact duplicates"
    for group in pairs:
        assert len({r["image_sha256"] for r in group}) == 1
        assert len({r["phash"] for r in group}) == 1


def test_undecodable_image_gets_a_null_score_and_a_reason(pool_copy, weights):
    shard_tar = pool_copy / "shards" / "00000.tar"
    with tarfile.open(shard_tar) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    broken_key = next(m.name.split(".")[0] for m, _ in members if m.name.endswith(".jpg"))
    with tarfile.open(shard_tar, "w") as tar:
        for member, data in members:
            if member.name == f"{broken_key}.jpg":
                data = b"\xff\xd8\xff\xe0 not really a jpeg"
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    result = score_pool(pool_copy, model=MODEL, pretrained=str(weights), tag="t", settings=_settings())
    assert result.failures == 1
    rows = {r["key"]: r for r in pq.read_table(pool_copy / "scores/t/00000.parquet").to_pylist()}
    assert rows[broken_key]["clip_score"] is None and "undecodable" in rows[broken_key]["error"]
    assert sum(r["clip_score"] is not None for r in rows.values()) == len(rows) - 1
    index = list(rows).index(broken_key)
    assert not np.load(pool_copy / "embeddings/t/00000.npy")[index].any()


def _score_cmd(pool: Path, weights: Path, tag: str) -> list[str]:
    return [sys.executable, "-m", "curate", "score", str(pool), "--model", MODEL, "--pretrained", str(weights),
            "--tag", tag, "--batch-size", "16", "--workers", "1"]


def test_killed_scoring_resumes_to_byte_identical_files(pool_dir, tmp_path, weights):
    import shutil

    reference, killed = tmp_path / "reference", tmp_path / "killed"
    shutil.copytree(pool_dir, reference)
    shutil.copytree(pool_dir, killed)
    subprocess.run(_score_cmd(reference, weights, "t"), check=True, capture_output=True)
    proc = subprocess.Popen(_score_cmd(killed, weights, "t"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((killed / "scores/t").glob("0*.parquet")):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(p.name for p in (killed / "scores/t").glob("0*.parquet"))
    assert 1 <= len(finished) < len(list((pool_dir / "shards").glob("*.tar"))), "the kill must land part-way"
    resumed = subprocess.run(_score_cmd(killed, weights, "t"), check=True, capture_output=True, text=True)
    assert f"{len(finished)} already done" in resumed.stdout
    for folder in ("scores/t", "embeddings/t"):
        ref_files = sorted(p.name for p in (reference / folder).iterdir())
        assert ref_files == sorted(p.name for p in (killed / folder).iterdir())
        for name in ref_files:
            assert (reference / folder / name).read_bytes() == (killed / folder / name).read_bytes(), name


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # more workers than cores, on purpose
def test_worker_count_does_not_change_a_byte(pool_copy, weights):
    """Whole shards per worker (workers <= shards) and shared-out chunks (more workers
    than shards) compute every row in the same batch: the files are identical."""
    shards = len(list((pool_copy / "shards").glob("*.tar")))
    for workers in (1, 2, shards + 1):
        score_pool(pool_copy, model=MODEL, pretrained=str(weights), tag=f"w{workers}",
                   settings=_settings(workers=workers, text_embeddings=True))
    for folder in ("scores", "embeddings"):
        names = sorted(p.name for p in (pool_copy / folder / "w1").iterdir() if p.name != "model.json")
        assert len(names) >= shards
        for workers in (2, shards + 1):
            for name in names:
                mine = (pool_copy / folder / f"w{workers}" / name).read_bytes()
                assert mine == (pool_copy / folder / "w1" / name).read_bytes(), (workers, folder, name)


def test_torchrun_two_ranks_write_each_shard_once(pool_copy, weights, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "curate", "score", str(pool_copy), "--model", MODEL, "--pretrained", str(weights), "--tag", "d",
           "--batch-size", "32", "--workers", "0"]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    shards = sorted(p.stem for p in (pool_copy / "shards").glob("*.tar"))
    assert sorted(p.stem for p in (pool_copy / "scores/d").glob("0*.parquet")) == shards
    reports = [line for line in out.stdout.splitlines() if line.startswith("scores/d:")]
    assert len(reports) == 2
    assert sum(int(line.split(": ")[1].split(" shards")[0]) for line in reports) == len(shards)
    uids = [u for p in (pool_copy / "scores/d").glob("0*.parquet") for u in pq.read_table(p)["uid"].to_pylist()]
    assert len(uids) == len(set(uids))
    # One rank, same settings: every score and embedding file is the same bytes (chunks are
    # fixed per shard, so which rank scored a shard must not matter).
    one = [sys.executable, "-m", "curate", *cmd[cmd.index("score"):]]
    one[one.index("d")] = "s"
    out = subprocess.run(one, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    for folder in ("scores", "embeddings"):
        two_ranks = {p.name: p.read_bytes() for p in sorted((pool_copy / folder / "d").glob("0*"))}
        one_rank = {p.name: p.read_bytes() for p in sorted((pool_copy / folder / "s").glob("0*"))}
        assert two_ranks and two_ranks.keys() == one_rank.keys()
        assert [n for n in two_ranks if two_ranks[n] != one_rank[n]] == []


def test_bad_model_arguments_are_clear(pool_copy, weights):
    with pytest.raises(UserError, match="unknown model"):
        score_pool(pool_copy, model="no-such-model", pretrained=str(weights))
    with pytest.raises(UserError, match="--pretrained PATH"):
        score_pool(pool_copy, model="ViT-B-32", pretrained="openai")
    with pytest.raises(UserError, match="needs weights"):
        score_pool(pool_copy, model=MODEL)
    with pytest.raises(UserError, match="not a pool folder"):
        score_pool(pool_copy / "nope", model=MODEL, pretrained=str(weights))
    score_pool(pool_copy, model=MODEL, pretrained=str(weights), tag="x", settings=_settings())
    other = weights.parent / "other.pt"
    other.write_bytes(weights.read_bytes())
    with pytest.raises(UserError, match="already holds scores"):
        score_pool(pool_copy, model=MODEL, pretrained=str(other), tag="x", settings=_settings())
    result = subprocess.run([sys.executable, "-m", "curate", "score", str(pool_copy), "--model", "ViT-B-32",
                             "--pretrained", "laion2b_s34b_b79k"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "--pretrained PATH" in result.stderr


def test_roc_auc_matches_its_definition():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 200), rng.normal(0, 1, 300)
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert roc_auc(pos, neg) == pytest.approx(brute)
    assert roc_auc(np.array([2.0, 2.0]), np.array([2.0])) == 0.5


def test_batched_chunk_decoding_equals_the_per_image_reference(pool_dir, weights):
    """decode_chunk's batched phash, ToTensor/Normalize and tokenizer give exactly what
    imagehash.phash, the model's own preprocess and the tokenizer give one by one."""
    import imagehash
    from PIL import Image

    from curate.score.batched import SplitPreprocess
    from curate.score.reader import caption_token_count, decode_chunk
    from shards.reader import iter_tar_samples
    from curate.score.seed_model import load_seed_model

    seed = load_seed_model(MODEL, str(weights), None)
    split = SplitPreprocess(seed.preprocess)
    assert split.head is not None  # open_clip's Compose ends in ToTensor + Normalize: the batched tail is used
    samples = [s for tar in sorted((pool_dir / "shards").glob("*.tar")) for _, s in iter_tar_samples(tar)][:200]
    samples.append({"txt": b"a caption with no image", "json": b'{"uid": "x"}'})
    samples.append({"jpg": b"\xff\xd8 not a jpeg", "txt": b"broken " * 40, "json": b'{"uid": "y"}'})
    decoded = decode_chunk(samples, split, seed.tokenizer)
    reference_images, checked = [], 0
    for sample, row, ok in zip(samples, decoded["rows"], decoded["ok"]):
        assert ok == (row["error"] is None)
        assert row["caption_tokens"] == caption_token_count(seed.tokenizer, row["caption"])
        assert row["caption_truncated"] == (row["caption_tokens"] > seed.tokenizer.context_length)
        if not ok:
            continue
        with Image.open(io.BytesIO(sample["jpg"])) as img:
            rgb = img.convert("RGB")
        assert row["phash"] == int(np.packbits(imagehash.phash(rgb).hash.flatten()).view(">u8")[0])
        reference_images.append(seed.preprocess(rgb))
        checked += 1
    assert checked == 200 and decoded["ok"][-2:] == [False, False]
    assert "undecodable" in decoded["rows"][-1]["error"] and decoded["rows"][-2]["error"] == "no image member"
    assert decoded["rows"][-1]["caption_truncated"] is True
    assert torch.equal(decoded["images"], torch.stack(reference_images))
    assert torch.equal(decoded["texts"], seed.tokenizer([r["caption"] for r in decoded["rows"]]))


def test_split_preprocess_falls_back_to_per_image_for_other_shapes():
    """A greyscale pipeline (2-D arrays) takes the per-image tail, still exactly the preprocess."""
    from PIL import Image
    from torchvision import transforms as T

    from curate.score.batched import SplitPreprocess

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (40, 50), dtype=np.uint8), mode="L") for _ in range(3)]
    preprocess = T.Compose([T.Resize((16, 16)), T.ToTensor(), T.Normalize([0.5], [0.25])])
    split = SplitPreprocess(preprocess)
    assert split.head is not None
    batch = split.finish([split.apply_head(i) for i in images])
    assert batch.shape == (3, 1, 16, 16) and torch.equal(batch, torch.stack([preprocess(i) for i in images]))
    whole = SplitPreprocess(lambda image: torch.zeros(3, 2, 2))  # not a Compose: run as it is
    assert whole.head is None and whole.finish([whole.apply_head(images[0])]).shape == (1, 3, 2, 2)


def test_ranks_share_the_shards_by_size():
    """Largest first to the least-loaded rank: a few big shards do not pile on one rank
    while the other idles (the old every-Nth split gave rank 0 both big ones here)."""
    from curate.score.run import split_by_size

    sizes = {"00000": 900, "00001": 10, "00002": 900, "00003": 10, "00004": 10, "00005": 10}
    split = split_by_size(sizes, 2)
    loads = [sum(sizes[s] for s in shards) for shards in split]
    assert sorted(s for shards in split for s in shards) == sorted(sizes)  # each shard once
    assert max(loads) - min(loads) <= max(sizes.values()) and loads == [920, 920]
    assert split_by_size(sizes, 1) == [sorted(sizes)] and split_by_size({}, 3) == [[], [], []]
