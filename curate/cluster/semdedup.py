"""SemDeDup (Abbas et al. 2023): within each k-means cluster, members are ranked (SemDeDup's
default keeps the "hard" ones: farthest from the centroid first, ties by uid) and each gets
its highest cosine to a member ranked before it. SemDeDup drops a member whose similarity
is above 1 - eps; the semdedup recipe applies that bar in SQL, so any eps is a parameter
and no rerun. The first-ranked member of a cluster has no earlier member (NaN: always kept).

Work per cluster is (size^2)/2 dot products, in tiles, so memory stays at one tile.
"""
from __future__ import annotations

import numpy as np

TILE = 2048


def rank_order(cluster: np.ndarray, centroid_similarity: np.ndarray, uid: np.ndarray) -> np.ndarray:
    """Rows ordered by cluster, then farthest from the centroid first, then uid (failed rows last)."""
    by_uid = np.argsort(uid, kind="stable")
    rank_uid = np.empty(len(uid), dtype=np.int64)
    rank_uid[by_uid] = np.arange(len(uid))
    key_cluster = np.where(cluster < 0, np.iinfo(np.int64).max, cluster)
    return np.lexsort((rank_uid, centroid_similarity, key_cluster))


def earlier_similarity(vectors: np.ndarray, members: np.ndarray) -> np.ndarray:
    """For members (rows in rank order) of one cluster: each one's highest cosine to an earlier member."""
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


def semdedup_similarity(vectors: np.ndarray, cluster: np.ndarray, centroid_similarity: np.ndarray,
                        uid: np.ndarray) -> np.ndarray:
    """Each row's highest cosine to an earlier-ranked member of its cluster (NaN: first, or failed)."""
    out = np.full(len(cluster), np.nan, dtype=np.float32)
    order = rank_order(cluster, centroid_similarity, uid)
    ordered = cluster[order]
    bounds = np.flatnonzero(np.diff(ordered)) + 1
    for members in np.split(order, bounds):
        if len(members) and cluster[members[0]] >= 0:
            out[members] = earlier_similarity(vectors, members)
    return out
