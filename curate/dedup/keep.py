"""Which member of each duplicate group is kept."""
from __future__ import annotations

import numpy as np

KEEP_POLICIES = ("best-score", "first")


def uid_rank(uid) -> np.ndarray:
    """Each row's place in uid order (ties: pool order), from a pyarrow string array: Arrow's
    stable sort compares UTF-8 bytes, which orders as code points do (numpy's str order)."""
    import pyarrow.compute as pc

    rank = np.empty(len(uid), dtype=np.int64)
    rank[pc.sort_indices(uid).to_numpy()] = np.arange(len(uid))
    return rank


def keep_mask(group_id: np.ndarray, uid, clip_score: np.ndarray, policy: str = "best-score",
              eligible: np.ndarray | None = None) -> np.ndarray:
    """True for the one kept sample of each group.

    best-score: the highest clip_score (a sample whose score is null ranks last), ties
    broken by the smaller uid, so dedup never trades a good caption for a worse one.
    first: the first sample in pool order (shard, then row).
    `uid` is a pyarrow string array (ScoreColumns.uid).
    Samples not `eligible` (contaminated) are never kept; a group keeps its best eligible
    member, or none.
    """
    n = group_id.size
    eligible = np.ones(n, dtype=bool) if eligible is None else eligible
    position = np.arange(n)
    if policy == "best-score":
        score = np.where(np.isnan(clip_score), -np.inf, clip_score)
        keys = (position, uid_rank(uid), -score, ~eligible, group_id)
    elif policy == "first":
        keys = (position, ~eligible, group_id)
    else:
        raise ValueError(f"unknown keep policy {policy!r}; use one of {KEEP_POLICIES}")
    order = np.lexsort(keys)  # last key is the primary one
    first_of_group = np.ones(n, dtype=bool)
    first_of_group[1:] = group_id[order][1:] != group_id[order][:-1]
    keep = np.zeros(n, dtype=bool)
    keep[order[first_of_group]] = True
    return keep & eligible
