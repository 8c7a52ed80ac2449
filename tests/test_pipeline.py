"""The stages joined on a real downloaded pool: score -> dedup -> filter -> export -> verify -> train's loader."""
from __future__ import annotations

import json
import math

import pyarrow.parquet as pq
import pytest
import torch

from curate.score.run import ScoreSettings, score_pool
from scored_copy import scored_copy


@pytest.fixture(scope="module")
def curated(pool_dir, tmp_path_factory):
    """A copy of pool_dir scored (tiny random model), deduplicated, filtered to its top 40% and exported."""
    from curate.dedup.run import DedupSettings, run_dedup
    from curate.export import export_subset
    from curate.filter.run import run_filter

    root = tmp_path_factory.mktemp("curated")
    pool = scored_copy(pool_dir, root)
    run_dedup(pool, DedupSettings(scores="seed", method="exact", tag="exact"))
    run_filter(pool, "top40", top="40%", scores="seed", dedup="exact")
    export = export_subset(pool, "top40", root / "shardset", samples_per_shard=37, shuffle=True, seed=1)
    return pool, export.out


def _epoch_uids(data: str, subset=None) -> list[str]:
    """Every sample uid train's loader streams in its first epoch (one slot)."""
    import open_clip

    from train.data import StreamConfig, _slot_items, uid_of_sample
    from train.sources import load_subset_uids, resolve_shards

    cfg = StreamConfig(shards=resolve_shards(data), batch_size=8, image_size=32, context_length=32,
                       tokenizer=open_clip.get_tokenizer("tiny-vit-32"), num_workers=0,
                       subset=load_subset_uids(subset, data) if subset else None)
    uids = []
    for epoch, sample in _slot_items(cfg, 0, 1):
        if epoch > 0:
            break
        uids.append(uid_of_sample(sample))
    return uids


def test_training_on_pool_subset_and_on_export_sees_the_same_samples(curated):
    from curate.verify import verify_shardset

    pool, shardset = curated
    assert verify_shardset(shardset).ok
    subset = set(pq.read_table(pool / "subsets/top40.parquet")["uid"].to_pylist())
    from_pool = _epoch_uids(str(pool), subset="top40")
    from_export = _epoch_uids(str(shardset))
    assert len(from_pool) == len(set(from_pool)) == len(subset)
    assert sorted(from_pool) == sorted(from_export) == sorted(subset)


def test_top_slice_is_the_best_scored_deduplicated_40_percent(curated):
    pool, _ = curated
    scores = {r["uid"]: r["clip_score"] for p in sorted((pool / "scores/seed").glob("0*.parquet"))
              for r in pq.read_table(p).to_pylist() if r["clip_score"] is not None}
    keep = {r["uid"] for r in pq.read_table(pool / "dedup/exact/groups.parquet").to_pylist() if r["keep"]}
    candidates = sorted((u for u in scores if u in keep), key=lambda u: (-scores[u], u))
    k = max(1, math.floor(0.4 * len(candidates) + 0.5))  # DuckDB's round(): half away from zero
    expected = set(candidates[:k])
    assert set(pq.read_table(pool / "subsets/top40.parquet")["uid"].to_pylist()) == expected


def test_decontamination_against_an_image_folder_uses_the_scores_model(curated, tmp_path):
    """Pool images copied into an eval folder are marked contaminated and never kept."""
    import json
    import tarfile

    from curate.dedup.run import DedupSettings, run_dedup
    from curate.score.embed import image_embedder

    pool, _ = curated
    eval_dir = tmp_path / "eval" / "leaked"
    eval_dir.mkdir(parents=True)
    leaked = []
    with tarfile.open(sorted((pool / "shards").glob("*.tar"))[0]) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for name in sorted(members):
            if name.endswith(".jpg") and len(leaked) < 3:
                (eval_dir / name).write_bytes(tar.extractfile(members[name]).read())
                leaked.append(json.loads(tar.extractfile(members[name.replace(".jpg", ".json")]).read())["uid"])
    summary = run_dedup(pool, DedupSettings(scores="seed", method="exact", tag="decontam", against=str(tmp_path / "eval")),
                        embed_images=image_embedder(pool, "seed"))
    rows = {r["uid"]: r for r in pq.read_table(pool / "dedup/decontam/groups.parquet").to_pylist()}
    for uid in leaked:
        assert rows[uid]["contaminated"] and not rows[uid]["keep"]
    assert summary["contaminated"] >= len(leaked)


def test_score_with_a_train_run_checkpoint(pool_copy, tmp_path):
    from train.loop import TrainConfig, run_training

    run = tmp_path / "runs" / "seed"
    run_training(TrainConfig(data=str(pool_copy), out=str(run), model="tiny-vit-32", samples="64", batch_size=16,
                             workers=0, progress=False))
    result = score_pool(pool_copy, checkpoint=str(run), settings=ScoreSettings(batch_size=64, workers=0, progress=False))
    assert result.tag == "tiny-vit-32-seed"
    info = json.loads((pool_copy / "scores" / result.tag / "model.json").read_text())
    assert info["source"] == "checkpoint" and info["model"] == "tiny-vit-32"
    scores = [s for p in (pool_copy / "scores" / result.tag).glob("0*.parquet") for s in pq.read_table(p)["clip_score"].to_pylist()]
    assert scores and all(-1.0 <= s <= 1.0 for s in scores)


def test_init_vision_copies_the_image_tower_only(pool_dir, tmp_path):
    from zoo.checkpoint import read_checkpoint
    from train.loop import TrainConfig, run_training

    common = dict(data=str(pool_dir), model="tiny-vit-32", samples="32", batch_size=16, workers=0, progress=False)
    run_training(TrainConfig(out=str(tmp_path / "teacher"), **common))
    # lr 0: the student's weights stay as initialised, so the image tower must be the teacher's exactly
    run_training(TrainConfig(out=str(tmp_path / "student"), init_vision=str(tmp_path / "teacher"), lr=0.0, seed=1, **common))
    teacher = read_checkpoint(tmp_path / "teacher" / "final.pt")["state_dict"]
    student = read_checkpoint(tmp_path / "student" / "final.pt")["state_dict"]
    visual = [k for k in teacher if k.startswith("visual.")]
    assert visual and all(torch.equal(teacher[k], student[k]) for k in visual)
    text = [k for k in teacher if k.startswith("transformer.")]
    assert text and not all(torch.equal(teacher[k], student[k]) for k in text)


def test_default_dedup_finds_the_demo_pools_copies_with_a_random_seed_model(curated, demo_dir):
    """The default method (exact,phash-pixels) judges copies by the thumbnails `curate score`
    stores, not by the seed model: with the random tiny model's scores it still finds the
    demo pool's planted byte and near copies (known from truth.parquet)."""
    from curate.dedup.run import DedupSettings, run_dedup
    from curate.truth.dedup import pair_quality
    from shards.layout import Pool

    pool, _ = curated
    summary = run_dedup(pool, DedupSettings(scores="seed", tag="default-px"))
    assert summary["args"]["method"] == "exact,phash-pixels"
    quality = pair_quality(Pool(pool).dedup_groups("default-px"), demo_dir / "truth.parquet")
    assert quality["exact"]["precision"] == quality["exact"]["recall"] == 1.0
    assert quality["near"]["precision"] >= 0.95 and quality["near"]["recall"] >= 0.95, quality["text"]
    assert summary["search"]["phash-pixels"]["confirmed"] <= summary["search"]["phash-pixels"]["candidates"]


def test_score_rescores_a_shard_written_without_the_pixel_columns(curated, tmp_path):
    """A scores shard from before the thumbnails existed is scored again, not reused."""
    import shutil

    import pyarrow.parquet as pq

    from shards.layout import Pool

    source, _ = curated
    pool = tmp_path / "pool"
    shutil.copytree(source, pool)
    path = sorted(Pool(pool).scores_dir("seed").glob("*.parquet"))[0]
    pq.write_table(pq.read_table(path).drop_columns(["pixels", "colours"]), path)
    result = score_pool(pool, model="tiny-vit-32", pretrained=str(source.parent / "tiny.pt"), tag="seed",
                        settings=ScoreSettings(batch_size=64, workers=1, progress=False))
    assert (result.shards_scored, result.shards_skipped) == (1, len(list(path.parent.glob("*.parquet"))) - 1)
    assert pq.read_table(path).equals(pq.read_table(source / path.relative_to(pool)))
