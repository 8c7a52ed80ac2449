"""Pairs of samples whose image embeddings have cosine similarity >= a threshold.

Three searches, all on L2-normalised vectors (inner product = cosine):

- flat: exact. FAISS IndexFlatIP range search, queries streamed shard by shard. Costs
  n^2 dot products, so `auto` takes it only for small pools.
- ivf (the knn method on big pools): FAISS spherical k-means cells; every sample is
  stored in its nearest cell and probes its `nprobe` nearest cells, exactly IVF search
  semantics. Rather than FAISS's per-query IVF scan (about 10x slower than BLAS on this
  CPU, measured), the queries are bucketed by the cell they probe and each bucket is one
  matrix product against that cell's members (the idea of faiss.contrib.big_batch_search,
  which only returns k-NN; dedup needs every pair above a threshold, i.e. range search).
- semdedup (SemDeDup, Abbas et al. 2023): spherical k-means into K clusters, then all
  pairs above the threshold within each cluster (one cell, no extra probes).

A pair is reported once per direction that finds it; DuplicateGraph removes repeats.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from curate.dedup.scored_pool import ScoredPool, gather_rows, iter_embedding_batches

# Pools up to this size are searched exactly: ~30k^2 dot products is a few seconds on 2 cores.
FLAT_MAX = 30_000
# float16 storage and float32 sums move cosines by ~1e-4; identical images must still
# meet a threshold of 1.0.
SLACK = 2e-4
QUERY_TILE = 4096
BASE_TILE = 8192


@dataclass(frozen=True)
class SearchPlan:
    """Which index a search uses and its parameters (recorded in summary.json)."""

    kind: str  # "flat" or "ivf"
    nlist: int = 1
    nprobe: int = 1
    gpu: bool = False

    def as_dict(self) -> dict:
        return {"index": self.kind, "nlist": self.nlist, "nprobe": self.nprobe, "gpu": self.gpu}


def default_nlist(n: int) -> int:
    """sqrt(n) cells balances the three costs (k-means ~ nlist^2, assignment ~ n*nlist,
    search ~ nprobe*n^2/nlist); 1,000,000 samples -> 1000 cells of ~1000."""
    return int(min(65536, max(1, round(math.sqrt(n)))))


def default_nprobe(threshold: float) -> int:
    """Cells probed per sample. Both members of a pair query, so a pair is missed only when
    neither lies in one of the other's nearest cells. Measured on clustered, anisotropic
    vectors (a narrow cone with tight clusters, like real CLIP embeddings; 50k rows, 224
    cells, exact flat search as truth): recall at cosine 0.95 was 0.94 / 0.996 / 1.0 with
    1 / 2 / 3 probes; at 0.90 it was 0.72 / 0.947 / 0.988 / 0.9975 / 0.9997 with 1 / 2 / 3 /
    4 / 6. Random vectors would pass with 1 probe, so they are no guide. Lower thresholds
    reach further across cell borders and get more probes."""
    if threshold >= 0.95:
        return 4
    if threshold >= 0.9:
        return 6
    return 10


def gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def choose_plan(n: int, threshold: float, index: str = "auto", nlist: int | None = None,
                nprobe: int | None = None) -> SearchPlan:
    """flat for small pools, IVF for big ones, unless `index` says otherwise."""
    kind = index if index != "auto" else ("flat" if n <= FLAT_MAX else "ivf")
    gpu = gpu_available()
    if kind == "flat":
        return SearchPlan("flat", gpu=gpu)
    cells = min(nlist or default_nlist(n), n)
    return SearchPlan("ivf", nlist=cells, nprobe=min(nprobe or default_nprobe(threshold), cells), gpu=gpu)


def _bar(total: int, desc: str, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=" rows" if "search" in desc or "assign" in desc else "", disable=not progress, leave=False)


def flat_pairs(scored: ScoredPool, dim: int, threshold: float, gpu: bool = False, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exact: every pair with cosine >= threshold, by FAISS flat inner-product search."""
    import faiss

    index = faiss.IndexFlatIP(dim)
    for _, x in iter_embedding_batches(scored):
        index.add(x)
    if gpu:
        index = faiss.index_cpu_to_all_gpus(index)
    out_a, out_b = [], []
    with _bar(scored.size, "flat search", progress) as bar:
        for start, x in iter_embedding_batches(scored, batch=4096):
            q, hits = _range(index, x, threshold, gpu)
            out_a.append(q + start)
            out_b.append(hits)
            bar.update(len(x))
    return np.concatenate(out_a), np.concatenate(out_b)


def _range(index, x: np.ndarray, threshold: float, gpu: bool) -> tuple[np.ndarray, np.ndarray]:
    """(query row, base id) of every base vector with inner product >= threshold."""
    radius = threshold - SLACK
    if not gpu:
        lims, sims, ids = index.range_search(x, radius)
        rows = np.repeat(np.arange(len(x)), np.diff(lims).astype(np.int64))
        return rows, ids.astype(np.int64)
    # FAISS GPU indexes have no range search: k-NN with k doubled until every query's
    # k-th neighbour falls below the threshold.
    k, todo = 64, np.arange(len(x))
    rows, ids = [], []
    while todo.size:
        k = min(k, index.ntotal)
        sims, found = index.search(x[todo], k)
        hit = sims >= radius
        full = hit[:, -1] & (k < index.ntotal)
        done = ~full
        r, c = np.nonzero(hit & done[:, None])
        rows.append(todo[r])
        ids.append(found[r, c].astype(np.int64))
        todo, k = todo[full], k * 4
    return np.concatenate(rows), np.concatenate(ids)


def train_centroids(scored: ScoredPool, dim: int, k: int, seed: int = 0, gpu: bool = False, progress: bool = False):
    """Spherical k-means (FAISS) on a uniform sample of at most 64 rows per centroid."""
    import faiss

    n = scored.size
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, 64 * k), replace=False))
    x = gather_rows(scored, sample)
    x = x[np.linalg.norm(x, axis=1) > 0]  # failed images have zero vectors
    if len(x) < k:
        k = max(1, len(x))
    kmeans = faiss.Kmeans(dim, k, niter=10, spherical=True, seed=seed, gpu=gpu,
                          max_points_per_centroid=64, verbose=False)
    if progress:
        import sys

        print(f"k-means: {k} cells from {len(x)} sampled rows", file=sys.stderr)
    kmeans.train(x)
    return kmeans


def _assign(scored: ScoredPool, dim: int, kmeans, nprobe: int, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """All vectors as one float32 array (what an IVFFlat index would hold) and each row's
    `nprobe` nearest cells, nearest first."""
    n = scored.size
    vectors = np.empty((n, dim), dtype=np.float32)
    probes = np.empty((n, nprobe), dtype=np.int64)
    with _bar(n, "assign to cells", progress) as bar:
        for start, x in iter_embedding_batches(scored):
            vectors[start : start + len(x)] = x
            probes[start : start + len(x)] = kmeans.index.search(x, nprobe)[1]
            bar.update(len(x))
    return vectors, probes


def _bucket(cells: np.ndarray, ncells: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ids sorted by cell, and each cell's [lims[c], lims[c+1]) range."""
    order = np.argsort(cells, kind="stable")
    lims = np.concatenate([[0], np.cumsum(np.bincount(cells, minlength=ncells))])
    return order, lims


def cell_pairs(vectors: np.ndarray, probes: np.ndarray, ncells: int, threshold: float,
               progress: bool = False, desc: str = "search cells") -> tuple[np.ndarray, np.ndarray]:
    """Pairs above threshold between each row and the members of the cells it probes.

    A row's home cell is probes[:, 0]. Work per cell: (rows probing it) x (its members),
    one BLAS product per tile.
    """
    n, nprobe = probes.shape
    members, mlims = _bucket(probes[:, 0], ncells)
    queries, qlims = _bucket(probes.ravel(), ncells)
    queries //= nprobe  # flat position in probes -> row id
    only_home = nprobe == 1  # queries == members: compute each pair once
    out_a, out_b = [], []
    radius = threshold - SLACK
    with _bar(ncells, desc, progress) as bar:
        for cell in range(ncells):
            base_ids = members[mlims[cell] : mlims[cell + 1]]
            query_ids = queries[qlims[cell] : qlims[cell + 1]]
            bar.update(1)
            if base_ids.size == 0 or query_ids.size == 0:
                continue
            for b0 in range(0, base_ids.size, BASE_TILE):
                bids = base_ids[b0 : b0 + BASE_TILE]
                base = vectors[bids]
                q_from = b0 if only_home else 0  # earlier query tiles already met this base tile
                for q0 in range(q_from, query_ids.size, QUERY_TILE):
                    qids = query_ids[q0 : q0 + QUERY_TILE]
                    sims = vectors[qids] @ base.T
                    r, c = np.nonzero(sims >= radius)
                    if only_home:  # one of (i, j) and (j, i): the later row queries
                        keep = q0 + r > b0 + c
                        r, c = r[keep], c[keep]
                    out_a.append(qids[r])
                    out_b.append(bids[c])
    if not out_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_a), np.concatenate(out_b)


def ivf_pairs(scored: ScoredPool, dim: int, threshold: float, plan: SearchPlan, seed: int = 0,
              progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """IVF range search: cells from spherical k-means, `plan.nprobe` cells probed per row."""
    kmeans = train_centroids(scored, dim, plan.nlist, seed=seed, gpu=plan.gpu, progress=progress)
    ncells = kmeans.centroids.shape[0]
    vectors, probes = _assign(scored, dim, kmeans, min(plan.nprobe, ncells), progress)
    return cell_pairs(vectors, probes, ncells, threshold, progress, desc="search cells")


def default_clusters(n: int) -> int:
    """SemDeDup clusters: sqrt(n), the same balance as default_nlist."""
    return default_nlist(n)


def semdedup_pairs(scored: ScoredPool, dim: int, threshold: float, clusters: int, seed: int = 0,
                   gpu: bool = False, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """SemDeDup: spherical k-means into `clusters`, then pairs above threshold within each."""
    kmeans = train_centroids(scored, dim, clusters, seed=seed, gpu=gpu, progress=progress)
    ncells = kmeans.centroids.shape[0]
    vectors, probes = _assign(scored, dim, kmeans, 1, progress)
    return cell_pairs(vectors, probes, ncells, threshold, progress, desc="search clusters")
