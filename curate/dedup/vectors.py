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

Memory: IVF and semdedup never hold the n x dim vectors. Rows are assigned to cells in one
streamed pass (n x nprobe cell ids); the cells are then searched in batches, each batch
gathering only the rows its cells hold or are probed by (about BATCH_ROWS rows, float32)
from the memory-mapped shards. On a GPU (gpu_available) k-means runs there, and the IVF
search is a FAISS IVFFlat index on the GPU: the same cells and probes, searched as k-NN with
k grown until every row's k-th neighbour falls below the threshold (ivf_index_pairs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from clikit.errors import UserError
from curate.dedup.scored_pool import ScoredPool, gather_rows, iter_embedding_batches

# Pools up to this size are searched exactly: ~30k^2 dot products is a few seconds on 2 cores.
FLAT_MAX = 30_000
# float16 storage and float32 sums move cosines by ~1e-4; identical images must still
# meet a threshold of 1.0.
SLACK = 2e-4
QUERY_TILE = 4096
BASE_TILE = 8192
# Rows gathered (float32) for one batch of cells: 1M x 512 is 2 GiB.
BATCH_ROWS = 1 << 20
# A tile with more pairs than this many per row and column is a clique (spanning_stars).
DENSE_TILE = 16
# FAISS GPU indexes return at most this many neighbours per query.
GPU_MAX_K = 2048


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
    """The one GPU decision: FAISS sees a GPU (faiss-gpu installed on a machine that has one;
    faiss-gpu on a CPU-only machine reports 0, faiss-cpu always does)."""
    import faiss

    if not hasattr(faiss, "get_num_gpus"):  # faiss/ left as an empty package by a second wheel's removal
        raise UserError("the faiss package is broken (faiss-cpu and faiss-gpu share it: both were installed and one "
                        "removed); reinstall one: pip uninstall -y faiss-cpu faiss-gpu && pip install faiss-cpu "
                        "(or faiss-gpu==1.15.1 on a GPU machine)")
    return faiss.get_num_gpus() > 0


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
    return range_by_knn(index, x, radius, GPU_MAX_K)[:2]


def range_by_knn(index, x: np.ndarray, radius: float, max_k: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Range search as k-NN (FAISS GPU indexes have no range search): k multiplied by 4
    until every query's k-th neighbour falls below `radius`. Returns (query row, base id,
    rows cut off at `max_k` neighbours: a clique of more copies than a GPU returns, which
    keeps its max_k nearest pairs)."""
    k, todo = 64, np.arange(len(x))
    rows, ids, cut = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], 0
    while todo.size:
        k = min(k, index.ntotal, max_k or index.ntotal)
        sims, found = index.search(x[todo], k)
        hit = (sims >= radius) & (found >= 0)
        full = hit[:, -1] & (k < index.ntotal)
        last = max_k is not None and k >= max_k
        done = ~full | last
        cut += int((full & done).sum())
        r, c = np.nonzero(hit & done[:, None])
        rows.append(todo[r])
        ids.append(found[r, c].astype(np.int64))
        todo, k = todo[~done], k * 4
    return np.concatenate(rows), np.concatenate(ids), cut


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


def _assign(scored: ScoredPool, kmeans, nprobe: int, progress: bool) -> np.ndarray:
    """Each row's `nprobe` nearest cells, nearest first, in one streamed pass (what an IVF
    index's coarse quantizer computes); int32: 10M rows x 4 probes is 160 MB."""
    n = scored.size
    probes = np.empty((n, nprobe), dtype=np.int32)
    with _bar(n, "assign to cells", progress) as bar:
        for start, x in iter_embedding_batches(scored):
            probes[start : start + len(x)] = kmeans.index.search(x, nprobe)[1]
            bar.update(len(x))
    return probes


def _bucket(cells: np.ndarray, ncells: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ids sorted by cell, and each cell's [lims[c], lims[c+1]) range."""
    order = np.argsort(cells, kind="stable")
    lims = np.concatenate([[0], np.cumsum(np.bincount(cells, minlength=ncells))])
    return order, lims


def cell_batches(weight: np.ndarray, batch_rows: int):
    """Consecutive ranges [c0, c1) of cells whose rows (`weight`, one count per cell) add up
    to about `batch_rows` (a cell larger than that is a batch of its own)."""
    ends = np.cumsum(weight)
    c0, ncells = 0, len(weight)
    while c0 < ncells:
        base = ends[c0 - 1] if c0 else 0
        c1 = max(c0 + 1, int(np.searchsorted(ends, base + batch_rows, side="right")))
        yield c0, min(c1, ncells)
        c0 = c1


def cell_pairs(rows_of: Callable[[np.ndarray], np.ndarray], probes: np.ndarray, ncells: int, threshold: float,
               progress: bool = False, desc: str = "search cells", batch_rows: int = BATCH_ROWS,
               stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs above threshold between each row and the members of the cells it probes.

    A row's home cell is probes[:, 0]. `rows_of(sorted positions)` gives those rows as
    float32 unit vectors (gather_rows: read from the memory-mapped shards); cells are
    searched in batches that gather about `batch_rows` rows each. Work per cell: (rows
    probing it) x (its members), one BLAS product per tile. A tile with more than
    DENSE_TILE pairs per row and column (a flood of near-identical vectors) gives one star
    per group instead of its pairs (spanning_stars), counted in `stats["dense_tiles"]`.
    """
    n, nprobe = probes.shape
    members, mlims = _bucket(probes[:, 0], ncells)
    queries, qlims = _bucket(probes.ravel(), ncells)
    queries //= nprobe  # flat position in probes -> row id
    only_home = nprobe == 1  # queries == members: compute each pair once
    out_a, out_b, dense = [], [], 0
    radius = threshold - SLACK
    with _bar(ncells, desc, progress) as bar:
        for c0, c1 in cell_batches(np.diff(mlims) + np.diff(qlims), batch_rows):
            needed = np.unique(np.concatenate([members[mlims[c0] : mlims[c1]], queries[qlims[c0] : qlims[c1]]]))
            vectors = rows_of(needed)
            for cell in range(c0, c1):
                base_ids = members[mlims[cell] : mlims[cell + 1]]
                query_ids = queries[qlims[cell] : qlims[cell + 1]]
                bar.update(1)
                if base_ids.size == 0 or query_ids.size == 0:
                    continue
                for b0 in range(0, base_ids.size, BASE_TILE):
                    bids = base_ids[b0 : b0 + BASE_TILE]
                    base = vectors[np.searchsorted(needed, bids)]
                    q_from = b0 if only_home else 0  # earlier query tiles already met this base tile
                    for q0 in range(q_from, query_ids.size, QUERY_TILE):
                        qids = query_ids[q0 : q0 + QUERY_TILE]
                        hit = vectors[np.searchsorted(needed, qids)] @ base.T >= radius
                        if np.count_nonzero(hit) > DENSE_TILE * (qids.size + bids.size):
                            a, b = spanning_stars(hit, qids, bids)  # a flood of one picture
                            dense += 1
                        else:
                            r, c = np.nonzero(hit)
                            if only_home:  # one of (i, j) and (j, i): the later row queries
                                keep = q0 + r > b0 + c
                                r, c = r[keep], c[keep]
                            a, b = qids[r], bids[c]
                        out_a.append(a)
                        out_b.append(b)
            del vectors
    if stats is not None and dense:
        stats["dense_tiles"] = dense
    if not out_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_a), np.concatenate(out_b)


def spanning_stars(hit: np.ndarray, qids: np.ndarray, bids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs of a dense tile (hit[i, j]: query qids[i] meets base bids[j]) replaced by
    one star per connected component: the same groups from (rows + columns) pairs instead
    of up to rows x columns (50,000 copies of one placeholder are 1.25e9 pairs)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    q, b = hit.shape
    r, c = np.nonzero(hit)
    graph = coo_matrix((np.ones(r.size, dtype=np.int8), (r, q + c)), shape=(q + b, q + b))
    _, labels = connected_components(graph, directed=False)
    ids = np.concatenate([qids, bids])
    first = np.full(labels.max() + 1, q + b, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(q + b))
    anchor = first[labels]
    linked = np.flatnonzero(anchor != np.arange(q + b))
    return ids[anchor[linked]], ids[linked]


def ivf_index_pairs(scored: ScoredPool, dim: int, kmeans, nprobe: int, threshold: float, gpu: bool,
                    progress: bool = False, desc: str = "search cells") -> tuple[tuple[np.ndarray, np.ndarray], int]:
    """The search of cell_pairs through a FAISS IndexIVFFlat over the same cells (k-means
    centroids) and probes: on the GPU when `gpu`, where FAISS has no range search, so each
    row's k nearest among the members of its `nprobe` cells are taken with k grown until
    the k-th falls below the threshold (range_by_knn). Also returns the rows cut off at
    GPU_MAX_K neighbours (0 on the CPU)."""
    import faiss

    ncells = kmeans.centroids.shape[0]
    quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(np.ascontiguousarray(kmeans.centroids, dtype=np.float32))
    index = faiss.IndexIVFFlat(quantizer, dim, ncells, faiss.METRIC_INNER_PRODUCT)
    if gpu:
        index = faiss.index_cpu_to_all_gpus(index)
    for _, x in iter_embedding_batches(scored):
        index.add(x)  # ids: global positions, in order
    index.nprobe = nprobe
    out_a, out_b, cut = [], [], 0
    radius = threshold - SLACK
    with _bar(scored.size, desc, progress) as bar:
        for start, x in iter_embedding_batches(scored, batch=16384):
            q, hits, c = range_by_knn(index, x, radius, GPU_MAX_K if gpu else None)
            out_a.append(q + start)
            out_b.append(hits)
            cut += c
            bar.update(len(x))
    return (np.concatenate(out_a), np.concatenate(out_b)), cut


def _searched_cells(scored: ScoredPool, dim: int, kmeans, nprobe: int, threshold: float, gpu: bool,
                    progress: bool, desc: str, search: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """Every row against the members of its `nprobe` nearest cells: on the GPU by an IVF
    index, on the CPU by cell_pairs (BLAS per cell: about 10x FAISS's per-query IVF scan here)."""
    ncells = kmeans.centroids.shape[0]
    nprobe = min(nprobe, ncells)
    if gpu:
        pairs, cut = ivf_index_pairs(scored, dim, kmeans, nprobe, threshold, True, progress, desc)
        if cut and search is not None:
            search["gpu_rows_cut_at_k"] = cut
        return pairs
    probes = _assign(scored, kmeans, nprobe, progress)
    return cell_pairs(lambda rows: gather_rows(scored, rows), probes, ncells, threshold, progress, desc, stats=search)


def ivf_pairs(scored: ScoredPool, dim: int, threshold: float, plan: SearchPlan, seed: int = 0,
              progress: bool = False, search: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """IVF range search: cells from spherical k-means, `plan.nprobe` cells probed per row."""
    kmeans = train_centroids(scored, dim, plan.nlist, seed=seed, gpu=plan.gpu, progress=progress)
    return _searched_cells(scored, dim, kmeans, plan.nprobe, threshold, plan.gpu, progress, "search cells", search)


def default_clusters(n: int) -> int:
    """SemDeDup clusters: sqrt(n), the same balance as default_nlist."""
    return default_nlist(n)


def semdedup_pairs(scored: ScoredPool, dim: int, threshold: float, clusters: int, seed: int = 0,
                   gpu: bool = False, progress: bool = False, search: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """SemDeDup: spherical k-means into `clusters`, then pairs above threshold within each."""
    kmeans = train_centroids(scored, dim, clusters, seed=seed, gpu=gpu, progress=progress)
    return _searched_cells(scored, dim, kmeans, 1, threshold, gpu, progress, "search clusters", search)
