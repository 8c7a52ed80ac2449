"""`curate cluster` on real files (scores parquet, float16 .npy embeddings, FAISS k-means):
SemDeDup's per-sample similarity, DataComp's image-based targets, and the semdedup and
image_based recipes over them."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from clikit.errors import UserError
from curate.cluster.assign import assign_clusters
from curate.cluster.run import ClusterSettings, run_cluster
from curate.cluster.semdedup import semdedup_similarity, uid_rank
from curate.dedup.scored_pool import gather_rows, open_scored_pool
from curate.filter.run import run_filter
from shards.layout import Pool
from synthetic_embeddings import near_copy, random_vectors, uid_of, write_shard

DIM = 32
N = 400


@pytest.fixture
def pool(tmp_path):
    """400 clustered unit vectors in 2 shards; rows 10~11 and 250~251 are near copies
    (cosine 0.995), row 300's image failed (a zero vector)."""
    rng = np.random.default_rng(5)
    x = random_vectors(N, DIM, rng, clustered=True)
    for src in (10, 250):
        x[src + 1] = near_copy(x[src:src + 1], np.array([0.995]), rng)[0]
    x[300] = 0
    score = rng.uniform(0.1, 0.4, N).astype(np.float32)
    path = tmp_path / "pool"
    for k in range(2):
        write_shard(path, "seed", k, x[200 * k:200 * (k + 1)], 200 * k, clip_score=score[200 * k:200 * (k + 1)])
    return path, x


def _assignments(pool, name="seed") -> dict[str, np.ndarray]:
    table = pq.read_table(Pool(pool).cluster_assignments(name)).to_pydict()
    return {k: np.array(v, dtype=object if k == "uid" else None) for k, v in table.items()}


def test_semdedup_similarity_is_the_best_cosine_to_an_earlier_member(pool):
    path, x = pool
    summary = run_cluster(path, ClusterSettings(scores="seed", clusters=12, progress=False))
    assert summary["clusters"] == 12 and summary["failed_images"] == 1
    a = _assignments(path)
    assert a["uid"].tolist() == [uid_of(i) for i in range(N)]  # one row per scored sample, pool order
    assert a["cluster_id"][300] is None and a["semdedup_similarity"][300] is None
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    for c in set(a["cluster_id"]) - {None}:
        rows = [i for i in range(N) if a["cluster_id"][i] == c]
        # SemDeDup's order: farthest from the centroid first, ties by uid
        rows.sort(key=lambda i: (a["centroid_similarity"][i], a["uid"][i]))
        assert a["semdedup_similarity"][rows[0]] is None
        for j in range(1, len(rows)):
            expected = max(float(unit[rows[j]] @ unit[rows[i]]) for i in range(j))
            assert a["semdedup_similarity"][rows[j]] == pytest.approx(expected, abs=2e-3), (c, j)  # float16 storage
    # the planted copies share a cluster, and the later-ranked one is the near copy
    for src in (10, 250):
        assert a["cluster_id"][src] == a["cluster_id"][src + 1]
        assert max(a["semdedup_similarity"][src], a["semdedup_similarity"][src + 1]) > 0.99


def test_semdedup_recipe_drops_one_of_each_near_pair(pool):
    path, _ = pool
    run_cluster(path, ClusterSettings(scores="seed", clusters=12, progress=False))
    a = _assignments(path)
    kept = set(pq.read_table(run_filter(path, "sd", recipe="semdedup", params={"eps": 0.01}).parquet)["uid"].to_pylist())
    expected = {u for u, s in zip(a["uid"], a["semdedup_similarity"]) if s is None or s <= 1 - 0.01}
    assert kept == expected
    for src in (10, 250):
        assert len(kept & {uid_of(src), uid_of(src + 1)}) == 1
    assert len(kept) >= N - 10  # random vectors have no other duplicates at that bar


def test_near_targets_hit_their_nearest_clusters(pool, tmp_path):
    path, x = pool
    targets = near_copy(x[:40] / np.linalg.norm(x[:40], axis=1, keepdims=True), np.full(40, 0.98),
                        np.random.default_rng(1))
    np.save(tmp_path / "targets.npy", targets)
    summary = run_cluster(path, ClusterSettings(scores="seed", clusters=12, near=str(tmp_path / "targets.npy"),
                                                progress=False))
    assert summary["near"]["images"] == 40
    a = _assignments(path)
    centroids = np.load(Pool(path).cluster_centroids("seed"))
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    home = [None if not unit[i].any() else int(np.argmax(centroids @ unit[i])) for i in range(N)]
    assert a["cluster_id"].tolist() == home  # every row in its nearest centroid's cluster
    # DataComp's rule by hand: a cluster is hit when it holds some target's nearest centroid
    nearest = np.argmax(targets @ centroids.T, axis=1)
    hits = np.bincount(nearest, minlength=len(centroids))
    assert [h for h in a["target_hits"]] == [None if c is None else int(hits[c]) for c in home]
    best = (targets @ centroids.T).max(axis=0)
    assert np.allclose([s for s, c in zip(a["target_similarity"], home) if c is not None],
                       [best[c] for c in home if c is not None], atol=1e-5)
    rows_hit = {i for i in range(N) if home[i] is not None and hits[home[i]] > 0}
    assert summary["near"]["clusters_hit"] == int((hits > 0).sum()) < len(centroids)
    kept = pq.read_table(run_filter(path, "ib", recipe="image_based").parquet)["uid"].to_pylist()
    assert kept == sorted(uid_of(i) for i in rows_hit)
    top = run_filter(path, "ib-top", recipe="image_based", params={"fraction": 0.5})
    scores = {r["uid"]: r["clip_score"] for r in pq.read_table(Pool(path).scores_parquet("seed", "00000")).to_pylist()
              + pq.read_table(Pool(path).scores_parquet("seed", "00001")).to_pylist()}
    ranked = sorted(scores, key=lambda u: (-scores[u], u))
    assert set(pq.read_table(top.parquet)["uid"].to_pylist()) == set(kept) & set(ranked[:round(0.5 * len(ranked))])


def test_small_batches_give_the_one_batch_result(pool):
    """Assignment streamed 40 rows at a time and SemDeDup's clusters gathered ~40 rows a
    batch (several batches, a cluster never split) write what one batch writes."""
    path, _ = pool
    whole = run_cluster(path, ClusterSettings(scores="seed", clusters=12, name="whole", progress=False))
    small = run_cluster(path, ClusterSettings(scores="seed", clusters=12, name="small", progress=False), batch_rows=40)
    layout = Pool(path)
    assert pq.read_table(layout.cluster_assignments("small")).equals(pq.read_table(layout.cluster_assignments("whole")))
    assert np.array_equal(np.load(layout.cluster_centroids("small")), np.load(layout.cluster_centroids("whole")))
    same = {k: v for k, v in whole.items() if k not in ("seconds", "name", "args")}
    assert {k: small[k] for k in same} == same
    # what was gathered: every clustered row once, in more than one batch, whole clusters each
    scored = open_scored_pool(path, "seed")
    a = assign_clusters(scored, DIM, 12, seed=0, gpu=False, progress=False)
    asked = []
    semdedup_similarity(lambda rows: asked.append(rows) or gather_rows(scored, rows), a.cluster, a.centroid_similarity,
                        uid_rank(pq.read_table(layout.cluster_assignments("whole"))["uid"]), batch_rows=40)
    assert len(asked) > 3 and max(len(r) for r in asked) < N / 2
    assert np.array_equal(np.sort(np.concatenate(asked)), np.flatnonzero(~a.failed))
    clusters_of = [set(a.cluster[r].tolist()) for r in asked]
    assert sum(map(len, clusters_of)) == len(set().union(*clusters_of)) == 12  # no cluster split over batches


def test_rerun_is_skipped_and_other_arguments_need_overwrite(pool, tmp_path):
    path, _ = pool
    first = run_cluster(path, ClusterSettings(scores="seed", clusters=8, progress=False))
    before = Pool(path).cluster_assignments("seed").read_bytes()
    assert run_cluster(path, ClusterSettings(scores="seed", clusters=8, progress=False))["skipped"]
    with pytest.raises(UserError, match="--overwrite"):
        run_cluster(path, ClusterSettings(scores="seed", clusters=9, progress=False))
    run_cluster(path, ClusterSettings(scores="seed", clusters=8, overwrite=True, seed=0, name="again", progress=False))
    assert Pool(path).cluster_assignments("again").read_bytes() == before  # seeded: the same clusters
    assert not first["skipped"]
    with pytest.raises(UserError, match="--near .* does not exist"):
        run_cluster(path, ClusterSettings(scores="seed", near=str(tmp_path / "nope"), name="n", progress=False))
    with pytest.raises(UserError, match="no scores tag 'other'"):
        run_cluster(path, ClusterSettings(scores="other", progress=False))
