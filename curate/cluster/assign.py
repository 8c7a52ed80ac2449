"""Every scored row's k-means cluster: spherical k-means on a sample of the rows (the
dedup stage's train_centroids, FAISS, seeded), then each row's nearest centroid."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curate.dedup.scored_pool import ScoredPool, iter_embedding_batches
from curate.dedup.vectors import train_centroids


@dataclass
class Assignment:
    """The pool's unit image vectors (float32, rows in scores order) and their clusters."""

    vectors: np.ndarray  # (n, dim); zero rows where the image failed
    centroids: np.ndarray  # (k, dim), unit rows
    cluster: np.ndarray  # int64 (n,), -1 where the image failed
    centroid_similarity: np.ndarray  # float32 (n,), cosine to its centroid (NaN where failed)


def assign_clusters(scored: ScoredPool, dim: int, clusters: int, seed: int, gpu: bool,
                    progress: bool) -> Assignment:
    """k-means into `clusters` cells and every row's nearest one (one float32 copy of the vectors)."""
    kmeans = train_centroids(scored, dim, clusters, seed=seed, gpu=gpu, progress=progress)
    n = scored.size
    vectors = np.empty((n, dim), dtype=np.float32)
    cluster = np.empty(n, dtype=np.int64)
    similarity = np.empty(n, dtype=np.float32)
    for start, x in iter_embedding_batches(scored):
        sims, ids = kmeans.index.search(x, 1)
        vectors[start:start + len(x)] = x
        cluster[start:start + len(x)] = ids[:, 0]
        similarity[start:start + len(x)] = sims[:, 0]
    failed = ~np.any(vectors != 0, axis=1)
    cluster[failed] = -1
    similarity[failed] = np.nan
    return Assignment(vectors, np.ascontiguousarray(kmeans.centroids, dtype=np.float32), cluster, similarity)
