"""Dedup's bounded-memory parts at small sizes (the figures at 10M rows: bench/scale.py):
the streamed IVF search, its FAISS-index twin (the path a GPU takes), pairs stored without
packed keys, and the per-bucket cap that refuses to pair a placeholder flood all-to-all."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.dedup.graph import unique_pairs
from curate.dedup.run import DedupSettings, run_dedup
from curate.dedup.scored_pool import gather_rows, open_scored_pool
from curate.dedup.vectors import _assign, cell_pairs, gpu_available, ivf_index_pairs, range_by_knn, train_centroids
from shards.layout import Pool
from synthetic_embeddings import planted_pool, write_shard


def _canonical(a: np.ndarray, b: np.ndarray) -> set[tuple[int, int]]:
    return {(min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist()) if x != y}


def test_streamed_cell_search_and_the_ivf_index_find_the_same_pairs(tmp_path):
    """cell_pairs gathers a few cells' rows at a time; the answer must not depend on how
    many, and the FAISS IVFFlat search over the same cells and probes (on the GPU when one
    is present: gpu_available) must find the same pairs."""
    pool = tmp_path / "pool"
    planted_pool(pool, 6000, 32, 120, tag="s", shard_rows=2500, clustered=True, cosine=(0.9, 0.99))
    scored = open_scored_pool(pool, "s")
    kmeans = train_centroids(scored, 32, 40, seed=0)
    for nprobe in (1, 3):
        probes = _assign(scored, kmeans, nprobe, False)
        rows_of = lambda rows: gather_rows(scored, rows)  # noqa: E731
        whole = _canonical(*cell_pairs(rows_of, probes, 40, 0.93, batch_rows=10**9))
        assert len(whole) > 120  # the planted pairs and the clusters' close neighbours
        assert _canonical(*cell_pairs(rows_of, probes, 40, 0.93, batch_rows=700)) == whole
        (a, b), cut = ivf_index_pairs(scored, 32, kmeans, nprobe, 0.93, gpu_available())
        assert cut == 0 and _canonical(a, b) == whole


def test_range_search_as_knn_finds_what_range_search_finds():
    """FAISS GPU indexes have no range search: range_by_knn grows k until the k-th neighbour
    falls below the radius (on the GPU when there is one); a clique bigger than max_k keeps
    its max_k nearest pairs and is counted."""
    import faiss

    from synthetic_embeddings import near_copy, random_vectors

    rng = np.random.default_rng(2)
    x = random_vectors(3000, 24, rng, clustered=True)
    x[:300] = near_copy(np.repeat(x[:1], 300, 0), np.full(300, 0.99), rng)  # 300 copies: k must grow past 64
    index = faiss.IndexFlatIP(24)
    index.add(x)
    lims, _, ids = index.range_search(x, 0.9)
    rows = np.repeat(np.arange(3000), np.diff(lims).astype(np.int64))
    searched = index if not gpu_available() else faiss.index_cpu_to_all_gpus(index)
    q, found, cut = range_by_knn(searched, x, 0.9)
    assert cut == 0 and sorted(zip(q.tolist(), found.tolist())) == sorted(zip(rows.tolist(), ids.tolist()))
    q, found, cut = range_by_knn(searched, x, 0.9, max_k=100)
    assert cut >= 300 and np.bincount(q, minlength=3000)[:300].max() == 100


def test_pairs_are_stored_without_packed_keys():
    """Rows past 3.04e9 (where low * n + high overflows int64) keep their pairs exactly."""
    big = 4_000_000_000
    pairs = np.array([[big + 5, big + 9], [3, big + 1], [big + 5, big + 9], [3, 7], [big + 5, big + 2]], np.int64)
    got = unique_pairs(pairs)
    assert got.tolist() == [[3, 7], [3, big + 1], [big + 5, big + 2], [big + 5, big + 9]]


def test_byte_copies_are_found_from_32_byte_keys_as_from_the_sha256_text():
    """Exact dedup keys each row by the 256 bits of its sha256 (not its text and a dictionary
    of it): the same groups as equal text, for hexdigests, other text and nulls alike."""
    import hashlib

    from curate.dedup.hashes import exact_pairs, sha256_keys

    rng = np.random.default_rng(0)
    digests = [hashlib.sha256(f"image-{i}".encode()).hexdigest() for i in range(300)]
    odd = ["not-a-hash", "z" * 64, "abc", hashlib.sha256(b"x").hexdigest()[:32], f"{1:064x}", f"{2:064x}"]
    values = [None if r < 0.05 else (odd[int(r * 1000) % len(odd)] if r < 0.15 else digests[int(r * 1e6) % 300])
              for r in rng.random(3000)]
    chunks = pa.chunked_array([pa.array(values[:1700], pa.string()), pa.array(values[1700:], pa.string())])
    keys, valid = sha256_keys(chunks)
    assert valid.tolist() == [v is not None for v in values]
    digest = hashlib.sha256(b"image-7").digest()
    row = values.index(digests[7])
    assert keys[row].tolist() == [int.from_bytes(digest[i : i + 8], "big") for i in range(0, 32, 8)]
    a, b = exact_pairs(keys, valid)
    first: dict[str, int] = {}
    expected = set()
    for i, v in enumerate(values):
        if v is not None:
            expected.add((first.setdefault(v, i), i))
    assert set(zip(a.tolist(), b.tolist())) == {p for p in expected if p[0] != p[1]}
    assert len(a) > 2000  # the draw repeats values: most rows are copies


def _with_thumbnails(pool, tag: str, shard: int, grey: np.ndarray) -> None:
    path = Pool(pool).scores_parquet(tag, shard)
    table = pq.read_table(path)
    table = table.append_column("pixels", pa.array([row.tobytes() for row in grey], pa.binary(256)))
    table = table.append_column("colours", pa.array([bytes((90, 120, 150)) * 16] * len(grey), pa.binary(48)))
    pq.write_table(table, path)


def test_a_placeholder_flood_is_paired_through_anchors_not_all_pairs(tmp_path):
    """3,000 rows share one phash (over the cap of 2,000): copies of two placeholder pictures,
    interleaved. All pairs would be 4.5M comparisons; the anchors compare each row with 16,
    still make one group per picture, and summary.json records the capped bucket. Rows with
    other hashes are paired as before (a near copy 1 bit away)."""
    from curate.dedup.phash_knn import ANCHORS, MAX_BUCKET

    rng = np.random.default_rng(0)
    flood, n = 3000, 3400
    assert flood > MAX_BUCKET
    pictures = rng.integers(0, 256, (2, 256)).astype(np.uint8)
    grey = rng.integers(0, 256, (n, 256)).astype(np.uint8)
    grey[:flood] = pictures[np.arange(flood) % 2]
    phash = rng.integers(0, 2**63, n, dtype=np.uint64)
    phash[:flood] = 777
    phash[3201] = phash[3200] ^ np.uint64(1)
    grey[3201] = grey[3200]
    pool = tmp_path / "pool"
    vectors = rng.standard_normal((n, 8)).astype(np.float32)
    for k, sl in enumerate((slice(0, 1700), slice(1700, n))):
        write_shard(pool, "s", k, vectors[sl], sl.start, phash=phash[sl])
        _with_thumbnails(pool, "s", k, grey[sl])
    summary = run_dedup(pool, DedupSettings(scores="s", method="phash-pixels", max_group=5000))
    search = summary["search"]["phash-pixels"]
    assert search["max_bucket"] == MAX_BUCKET
    assert search["capped_buckets"] == [{"rows": flood, "anchors": ANCHORS, "unpaired": 0}]
    assert search["candidates"] == ANCHORS * (ANCHORS - 1) // 2 + (flood - ANCHORS) * ANCHORS + 1
    gid = pq.read_table(Pool(pool).dedup_groups("phash-pixels"), columns=["group_id"]).column("group_id").to_numpy()
    assert len(set(gid[0:flood:2])) == 1 and len(set(gid[1:flood:2])) == 1 and gid[0] != gid[1]
    assert gid[3201] == gid[3200] == 3200
    assert summary["groups"] == 3 and summary["duplicate_samples"] == flood + 2


def test_a_flood_of_near_identical_embeddings_is_grouped_by_stars(tmp_path):
    """600 near copies of one vector (a placeholder) among 2,400 random rows: their cells'
    tiles are cliques, which knn's IVF search turns into one star per group instead of
    180k pairs; the groups are exact flat search's, and the pair counts are marked as lower bounds."""
    from synthetic_embeddings import near_copy, random_vectors

    rng = np.random.default_rng(1)
    x = random_vectors(3000, 16, rng)
    flood = np.sort(rng.choice(3000, 600, replace=False))
    x[flood] = near_copy(np.repeat(x[flood[:1]], 600, 0), np.full(600, 0.995), rng)
    pool = tmp_path / "pool"
    write_shard(pool, "s", 0, x[:1500], 0)
    write_shard(pool, "s", 1, x[1500:], 1500)
    ivf = run_dedup(pool, DedupSettings(scores="s", method="knn", index="ivf", nlist=6, nprobe=2, max_group=1000,
                                        tag="ivf"))
    flat = run_dedup(pool, DedupSettings(scores="s", method="knn", index="flat", max_group=1000, tag="flat"))
    groups = {name: pq.read_table(Pool(pool).dedup_groups(name), columns=["group_id"]).column("group_id").to_numpy()
              for name in ("ivf", "flat")}
    assert ivf["search"]["knn"]["dense_tiles"] >= 1 and ivf["pair_counts_exact"] is False
    assert (groups["ivf"] == groups["flat"]).all() and (groups["flat"][flood] == flood[0]).all()
    assert flat["per_method"]["knn"]["pairs"] == 600 * 599 // 2 and ivf["per_method"]["knn"]["pairs"] < 3000
