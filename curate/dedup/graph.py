"""Duplicate pairs from every method, joined into groups (connected components).

Pairs are kept as canonical (low, high) global positions, two int64 columns (a key packed
as low * n + high would overflow int64 past ~3e9 samples). When a pool has huge cliques
(thousands of copies of one placeholder image) the pair list could outgrow memory, so
past a limit it is replaced by a spanning forest with the same components: the groups
stay exact, only the per-method pair counts become lower bounds.
"""
from __future__ import annotations

import numpy as np

from curate.dedup.methods import METHOD_ORDER  # a sample's method code is its position here


class DuplicateGraph:
    """Collects pairs per method over n samples; `components()` gives the groups."""

    def __init__(self, n: int, max_pairs: int = 20_000_000) -> None:
        self.n = n
        self.max_pairs = max_pairs
        self._pending: dict[str, list[np.ndarray]] = {}
        self._pairs: dict[str, np.ndarray] = {}  # method -> unique (low, high) rows, sorted
        self._forest: list[np.ndarray] = []  # (low, high) rows standing for compacted pairs
        self.pair_counts: dict[str, int] = {}
        self.counts_exact = True
        # The first method (in the order run) that joined each sample; -1 for none.
        self.method_of = np.full(n, -1, dtype=np.int8)
        self._pending_size = 0

    def add(self, a: np.ndarray, b: np.ndarray, method: str) -> None:
        """Add pairs (a[i], b[i]) found by `method`; self pairs and repeats are dropped."""
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        keep = a != b
        a, b = a[keep], b[keep]
        if a.size == 0:
            self.pair_counts.setdefault(method, 0)
            return
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        code = METHOD_ORDER.index(method)
        for side in (lo, hi):
            unset = self.method_of[side] < 0
            self.method_of[side[unset]] = code
        self._pending.setdefault(method, []).append(np.stack([lo, hi], axis=1))
        self._pending_size += lo.size
        if self._pending_size > self.max_pairs // 4:
            self._flush()

    def _flush(self) -> None:
        for method, chunks in self._pending.items():
            old = self._pairs.get(method, _NO_PAIRS)
            self._pairs[method] = unique_pairs(np.concatenate([old, *chunks]))
        self._pending.clear()
        self._pending_size = 0
        for method, pairs in self._pairs.items():
            self.pair_counts[method] = max(self.pair_counts.get(method, 0), len(pairs))
        if sum(map(len, self._pairs.values())) + sum(map(len, self._forest)) > self.max_pairs:
            self._compact()

    def _compact(self) -> None:
        """Replace all pairs by a star per component: same groups, far fewer pairs."""
        labels = self._labels(np.concatenate([*self._pairs.values(), *self._forest]))
        self._pairs = {m: _NO_PAIRS for m in self._pairs}
        self._forest = [_star_edges(labels, self.n)]
        self.counts_exact = False

    def _labels(self, pairs: np.ndarray) -> np.ndarray:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        lo, hi = pairs[:, 0], pairs[:, 1]
        graph = coo_matrix((np.ones(lo.size, dtype=np.int8), (lo, hi)), shape=(self.n, self.n))
        return connected_components(graph, directed=False)[1]

    def components(self) -> np.ndarray:
        """Component label per sample (labels are arbitrary ints; singletons get their own)."""
        self._flush()
        return self._labels(np.concatenate([_NO_PAIRS, *self._pairs.values(), *self._forest]))

    def split_oversized(self, labels: np.ndarray, limit: int) -> tuple[np.ndarray, list[dict]]:
        """Guard against runaway groups: near pairs chain look-alikes (A~B~C...) into one
        giant component. A component over `limit` samples loses its near-method pairs
        (byte copies stay grouped); returns the new labels and one report per such group."""
        sizes = np.bincount(labels)
        big = np.flatnonzero(sizes > limit)
        if big.size == 0:
            return labels, []
        self._flush()
        near = [m for m in self._pairs if m != "exact"]
        reports = []
        for label in big:
            members = labels == label
            joined_by = sorted({METHOD_ORDER[c] for c in np.unique(self.method_of[members]) if c >= 0})
            reports.append({"size": int(sizes[label]), "methods": joined_by,
                            "split": bool(near) and self.counts_exact and joined_by != ["exact"]})
        if not near or not self.counts_exact:
            return labels, reports  # nothing to drop, or pairs were compacted (only groups known)
        in_big = np.isin(labels, big)
        for method in near:
            pairs = self._pairs[method]
            self._pairs[method] = pairs[~in_big[pairs[:, 0]]]
        return self.components(), reports

    def pairs(self, method: str) -> tuple[np.ndarray, np.ndarray]:
        """The (low, high) pairs stored for a method (empty after compaction)."""
        self._flush()
        pairs = self._pairs.get(method, _NO_PAIRS)
        return pairs[:, 0], pairs[:, 1]


_NO_PAIRS = np.zeros((0, 2), np.int64)


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """(m, 2) int64 rows in (low, high) order with repeats dropped: what np.unique did for
    packed keys, without packing."""
    if len(pairs) < 2:
        return pairs
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    fresh = np.ones(len(pairs), dtype=bool)
    fresh[1:] = (pairs[1:, 0] != pairs[:-1, 0]) | (pairs[1:, 1] != pairs[:-1, 1])
    return pairs[fresh]


def _star_edges(labels: np.ndarray, n: int) -> np.ndarray:
    """(low, high) edges linking every sample to the first sample of its component."""
    first = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))
    root = first[labels]
    members = np.flatnonzero(root != np.arange(n))
    return np.stack([root[members], members], axis=1)


def group_ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group_id, group_size) per sample: a group's id is its first member's global position."""
    n = labels.size
    first = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))
    sizes = np.bincount(labels)
    return first[labels], sizes[labels].astype(np.int64)
