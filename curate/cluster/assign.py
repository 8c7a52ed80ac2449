"""Every scored row's k-means cluster: spherical k-means on a sample of the rows (the
dedup stage's train_centroids, FAISS, seeded), then each row's nearest centroid in one
streamed pass over the memory-mapped embeddings (no n x dim copy is kept)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curate.dedup.scored_pool import ScoredPool, iter_embedding_batches
from curate.dedup.vectors import train_centroids

# Rows searched against the centroids at a time (float32: 32k x 512 is 64 MiB).
ASSIGN_BATCH = 32768


@dataclass
class Assignment:
    """The pool's clusters, rows in scores order: a few bytes a row, no vectors."""

    centroids: np.ndarray  # (k, dim), unit rows
    cluster: np.ndarray  # int32 (n,), -1 where the image failed (a zero vector)
    centroid_similarity: np.ndarray  # float32 (n,), cosine to its centroid (NaN where failed)

    @property
    def failed(self) -> np.ndarray:
        return self.cluster < 0


def assign_clusters(scored: ScoredPool, dim: int, clusters: int, seed: int, gpu: bool,
                    progress: bool, batch_rows: int = ASSIGN_BATCH) -> Assignment:
    """k-means into `clusters` cells and every row's nearest one, `batch_rows` rows at a time."""
    kmeans = train_centroids(scored, dim, clusters, seed=seed, gpu=gpu, progress=progress)
    n = scored.size
    cluster = np.empty(n, dtype=np.int32)
    similarity = np.empty(n, dtype=np.float32)
    for start, x in iter_embedding_batches(scored, batch=batch_rows):
        sims, ids = kmeans.index.search(x, 1)
        failed = ~np.any(x != 0, axis=1)
        cluster[start:start + len(x)] = np.where(failed, -1, ids[:, 0])
        similarity[start:start + len(x)] = np.where(failed, np.float32(np.nan), sims[:, 0])
    return Assignment(np.ascontiguousarray(kmeans.centroids, dtype=np.float32), cluster, similarity)
