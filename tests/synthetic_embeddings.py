"""Scored pools made of vectors, for tests/test_dedup.py and bench/dedup.py (a test fixture,
not part of curate): the exact files `curate score` writes (scores/TAG/NNNNN.parquet,
embeddings/TAG/NNNNN.npy, model.json), with planted near-duplicate pairs whose cosine is
known. Paths come from shards.layout.Pool."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from shards.layout import Pool


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of x scaled to unit length."""
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def random_vectors(n: int, dim: int, rng: np.random.Generator, clustered: bool = False) -> np.ndarray:
    """Unit float32 rows. clustered=True imitates real CLIP embeddings: a narrow cone
    (shared mean direction), a power-law spectrum and many tight clusters, so that cells
    are uneven and neighbours are close, unlike near-orthogonal random vectors."""
    if not clustered:
        return unit_rows(rng.standard_normal((n, dim), dtype=np.float32))
    scale = (np.arange(1, dim + 1, dtype=np.float32) ** -0.6)
    mean = rng.standard_normal(dim).astype(np.float32)
    mean *= 2.0 / np.linalg.norm(mean)
    centers = rng.standard_normal((max(1, n // 50), dim)).astype(np.float32) * scale
    which = rng.integers(0, len(centers), size=n)
    noise = rng.standard_normal((n, dim)).astype(np.float32) * scale * 0.8
    return unit_rows(mean + centers[which] + noise).astype(np.float32)


def near_copy(x: np.ndarray, cosine: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit rows with exactly the given cosine to the rows of x (x unit)."""
    noise = rng.standard_normal(x.shape).astype(np.float32)
    noise -= (noise * x).sum(1, keepdims=True) * x  # orthogonal to x
    noise = unit_rows(noise)
    c = cosine[:, None].astype(np.float32)
    return (c * x + np.sqrt(1 - c * c) * noise).astype(np.float32)


def uid_of(i: int) -> str:
    """The uid of synthetic row i (32 hex characters, as real uids)."""
    return hashlib.sha256(f"synthetic-{i}".encode()).hexdigest()[:32]


def write_shard(pool: Path, tag: str, shard: int, vectors: np.ndarray, start: int,
                clip_score: np.ndarray | None = None, sha256: list | None = None,
                phash: np.ndarray | None = None, uids: list | None = None) -> None:
    """One shard in the column contract of docs/design.md (defaults: distinct hashes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(vectors)
    rows = range(start, start + n)
    uids = uids if uids is not None else [uid_of(i) for i in rows]
    if clip_score is None:
        clip_score = np.random.default_rng(start).uniform(0.1, 0.4, n).astype(np.float32)
    if sha256 is None:
        sha256 = [hashlib.sha256(f"bytes-{i}".encode()).hexdigest() for i in rows]
    if phash is None:
        phash = np.frombuffer(b"".join(hashlib.sha256(f"ph-{i}".encode()).digest()[:8] for i in rows), dtype="<u8").copy()
    table = pa.table({
        "uid": pa.array(uids, pa.string()),
        "key": pa.array([f"{i:09d}" for i in rows], pa.string()),
        "clip_score": pa.array(clip_score, pa.float32()),
        "error": pa.array([None] * n, pa.string()),
        "image_sha256": pa.array(sha256, pa.string()),
        "phash": pa.array(phash, pa.uint64()),
        "width": pa.array(np.full(n, 64), pa.int32()),
        "height": pa.array(np.full(n, 64), pa.int32()),
        "caption_tokens": pa.array(np.full(n, 8), pa.int32()),
        "caption_truncated": pa.array(np.zeros(n, bool), pa.bool_()),
        "image_norm": pa.array(np.ones(n), pa.float32()),
        "text_norm": pa.array(np.ones(n), pa.float32()),
    })
    layout = Pool(pool)
    layout.scores_dir(tag).mkdir(parents=True, exist_ok=True)
    layout.embeddings_dir(tag).mkdir(parents=True, exist_ok=True)
    pq.write_table(table, layout.scores_parquet(tag, shard))
    np.save(layout.image_embeddings(tag, shard), vectors.astype(np.float16))
    model = layout.model_json(tag)
    if not model.exists():
        model.write_text(json.dumps({"model": "synthetic", "weights": "none", "dim": int(vectors.shape[1]), "tag": tag}))


def planted_pool(pool: str | Path, n: int, dim: int, pairs: int, tag: str = "synth", shard_rows: int = 100_000,
                 cosine: tuple[float, float] = (0.97, 0.99), seed: int = 0, clustered: bool = False,
                 progress: bool = False) -> np.ndarray:
    """Write an n-row scored pool with `pairs` planted near-duplicate pairs; returns the
    planted (source, copy) global positions as an int64 (pairs, 2) array.

    Shards are generated one at a time and copies are patched in afterwards through
    writable memory maps, so memory stays at about one shard.
    """
    from tqdm import tqdm

    pool = Path(pool)
    rng = np.random.default_rng(seed)
    picked = rng.choice(n, size=2 * pairs, replace=False)
    planted = np.sort(picked.reshape(pairs, 2), axis=1)
    starts = list(range(0, n, shard_rows))
    for k, start in enumerate(tqdm(starts, desc="write shards", disable=not progress)):
        rows = min(shard_rows, n - start)
        write_shard(pool, tag, k, random_vectors(rows, dim, np.random.default_rng([seed, k]), clustered), start)
    # Patch the copies: read each source, write its near copy over the target row.
    paths = [Pool(pool).image_embeddings(tag, k) for k in range(len(starts))]
    maps = [np.load(p, mmap_mode="r+") for p in paths]
    src, dst = planted[:, 0], planted[:, 1]
    x = np.stack([maps[i // shard_rows][i % shard_rows] for i in src]).astype(np.float32)
    copies = near_copy(unit_rows(x), rng.uniform(*cosine, size=pairs), rng).astype(np.float16)
    for i, row in zip(dst, copies):
        maps[i // shard_rows][i % shard_rows] = row
    for m in maps:
        m.flush()
    del maps
    return planted
