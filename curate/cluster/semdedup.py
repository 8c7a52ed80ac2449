"""SemDeDup (Abbas et al. 2023): within each k-means cluster, members are ranked (SemDeDup's
default keeps the "hard" ones: farthest from the centroid first, ties by uid) and each gets
its highest cosine to a member ranked before it. SemDeDup drops a member whose similarity
is above 1 - eps; the semdedup recipe applies that bar in SQL, so any eps is a parameter
and no rerun. The first-ranked member of a cluster has no earlier member (NaN: always kept).

Work per cluster is (size^2)/2 dot products, in tiles. The vectors are never held whole:
consecutive clusters are taken in batches of about `batch_rows` members (a cluster larger
than that is a batch of its own), each batch's rows gathered from the memory-mapped shards
(curate.dedup.scored_pool.gather_rows, as dedup's cell search does), so memory stays at
one batch (1M x 512 float32 is 2 GiB) and a tile.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.dedup.vectors import BATCH_ROWS, cell_batches

TILE = 2048


def uid_rank(uid: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Each row's position in uid order (Arrow's sort of the UTF-8 bytes: code point order,
    as Python compares str; equal uids keep row order), without a Python str per uid."""
    return pc.rank(uid, sort_keys="ascending", tiebreaker="first").to_numpy()


def rank_order(cluster: np.ndarray, centroid_similarity: np.ndarray, rank_uid: np.ndarray) -> np.ndarray:
    """Rows ordered by cluster, then farthest from the centroid first, then uid (failed rows last)."""
    key_cluster = np.where(cluster < 0, np.iinfo(cluster.dtype).max, cluster)
    return np.lexsort((rank_uid, centroid_similarity, key_cluster))


def earlier_similarity(vectors: np.ndarray, members: np.ndarray) -> np.ndarray:
    """For the members of one cluster (rows of `vectors`, in rank order): each one's highest
    cosine to an earlier member."""
    s = len(members)
    best = np.full(s, -np.inf, dtype=np.float32)
    for q0 in range(0, s, TILE):
        q = vectors[members[q0:q0 + TILE]]
        for b0 in range(0, min(q0 + TILE, s), TILE):  # only earlier (or the same) tiles hold earlier members
            sims = q @ vectors[members[b0:b0 + TILE]].T
            rows = np.arange(q0, q0 + len(q))[:, None]
            cols = np.arange(b0, b0 + sims.shape[1])[None, :]
            sims[cols >= rows] = -np.inf
            np.maximum(best[q0:q0 + len(q)], sims.max(axis=1), out=best[q0:q0 + len(q)])
    best[best == -np.inf] = np.nan
    return best


def semdedup_similarity(rows_of: Callable[[np.ndarray], np.ndarray], cluster: np.ndarray,
                        centroid_similarity: np.ndarray, rank_uid: np.ndarray,
                        batch_rows: int = BATCH_ROWS) -> np.ndarray:
    """Each row's highest cosine to an earlier-ranked member of its cluster (NaN: first, or failed).

    `rows_of(sorted positions)` gives those rows as float32 unit vectors (gather_rows);
    it is asked for one batch of clusters at a time.
    """
    out = np.full(len(cluster), np.nan, dtype=np.float32)
    order = rank_order(cluster, centroid_similarity, rank_uid)
    ranked = order[: np.count_nonzero(cluster >= 0)]  # failed rows sort last and are in no cluster
    if not ranked.size:
        return out
    lims = np.concatenate([[0], np.cumsum(np.bincount(cluster[ranked]))])
    for c0, c1 in cell_batches(np.diff(lims), batch_rows):
        needed = np.sort(ranked[lims[c0]:lims[c1]])
        vectors = rows_of(needed)
        for c in range(c0, c1):
            members = ranked[lims[c]:lims[c + 1]]
            if members.size:
                out[members] = earlier_similarity(vectors, np.searchsorted(needed, members))
        del vectors
    return out
