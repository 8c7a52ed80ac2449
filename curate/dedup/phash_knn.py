"""phash-knn: perceptual-hash candidates confirmed by the image embeddings.

Each signal alone is fooled. A 64-bit DCT phash sees mostly low frequencies, so different
pictures on the same flat or gradient ground land a few bits apart (on the demo pool,
phash <= 8 bits joins ~560 wrong pairs for 210 right ones). A weak seed model puts
different images of the same class and colour above 0.95 cosine (16 wrong pairs), while
re-encoded, cropped or recoloured copies can fall below it. The two mistakes are nearly
independent, so a pair counts only when both agree: hashes within `max_bits` AND
embedding cosine >= the bar for their distance (demo pool: phash <= 8 and cosine >= 0.9
gives precision and recall above 0.95; either alone stays far below one of them).

The bar falls with the Hamming distance d: `threshold` at d = max_bits, down to
`threshold - RELIEF` for identical hashes, linearly between. The closer two hashes, the
likelier a copy (demo pool: all 144 candidate pairs with identical hashes are copies, 2 of
333 at 7-8 bits), so less embedding agreement is needed; what the embedding must still
rule out near d = 0 is a different picture on the same ground, and those score far lower
(at most 0.6 there), while recoloured copies, which a weak seed model moves most, score
0.82-0.86. With a flat bar of 0.9 those copies were the near pairs missed (recall 0.957);
with the slope recall is 1.0 at precision 0.98 and stays above 0.96 / 0.99 for 6-10 bits
and bars 0.88-0.92 (measured after grouping, with exact).
Those figures came from one seed model on the shapes pool. Another model, or the real demo
pool, moves every cosine: the bar at `max_bits` is therefore measured on the pool by default
(calibrate.py: hard negatives' 99.9th percentile + 0.02), and `threshold` is that value
unless --threshold fixes it.

Candidates are every pair of rows inside one hash value and every pair across two
distinct values within `max_bits` (FAISS multi-index hashing finds the value pairs).
A hash value shared by more than MAX_BUCKET rows (a flood of one placeholder picture:
100k of them would be 5e9 pairs) is not paired all-to-all: its rows are compared with a
few anchors at a time (anchored_pairs), and stand for it in pairs across values only
through those anchors; summary.json records each such bucket (`capped_buckets`).
Only rows that appear in some candidate pair are read from the embeddings. A block of
candidates (rows of hash u x rows of hash v) that is large, such as thousands of blank
images sharing one hash, is one BLAS product; small blocks are batched as row-wise dots.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from curate.dedup.hashes import near_hash_values
from curate.dedup.scored_pool import ScoredPool, gather_rows
from curate.dedup.vectors import SLACK

# How much lower the cosine bar is for identical hashes than at the largest distance.
RELIEF = 0.1
# A block with at least this many candidate pairs is a matrix product, not row-wise dots.
MATMUL_MIN = 1024
# Elements (pairs x dim) per batch of row-wise dots or per matmul tile: ~128 MiB float32.
BATCH_ELEMENTS = 1 << 25
# The per-bucket cap: a hash value shared by more rows is paired through anchors.
MAX_BUCKET = 2000
ANCHORS = 16  # anchors per round
MAX_ROUNDS = 64  # a capped bucket's rows matching none of the 64 x 16 anchors stay unpaired


def candidate_blocks(phash: np.ndarray, valid: np.ndarray, max_bits: int, max_bucket: int = MAX_BUCKET):
    """Rows grouped by hash value and the blocks of candidate pairs between them.

    Returns (order, starts, counts, u, v, bits, capped): `order` lists valid rows sorted by
    hash value, value k's rows are order[starts[k] : starts[k] + counts[k]]; a block (u[i],
    v[i]) is every pair of a row of value u with a row of value v (u == v: pairs inside one
    value), and bits[i] the Hamming distance between the two values. `capped`: the values
    with more than `max_bucket` rows, which get no block inside themselves (anchored_pairs).
    """
    rows = np.flatnonzero(valid)
    values, inverse, counts = np.unique(phash[rows], return_inverse=True, return_counts=True)
    order = rows[np.argsort(inverse, kind="stable")]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    i, j = near_hash_values(values, max_bits)
    same = np.flatnonzero((counts > 1) & (counts <= max_bucket))
    u, v = np.concatenate([same, i]), np.concatenate([same, j])
    capped = np.flatnonzero(counts > max_bucket)
    return order, starts, counts.astype(np.int64), u, v, hamming(values[u], values[v]), capped


def anchored_pairs(vectors: np.ndarray, bar: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Pairs inside one capped bucket (its rows' unit `vectors`, in pool order) in linear
    work: in each round the first ANCHORS rows not yet matched are anchors; every other
    unmatched row is compared with them and pairs with the first one it reaches `bar`
    with; anchors pair with each other. A flood of copies of a few pictures thus forms one
    group per picture, as all pairs would.

    Returns (a, b) as local row numbers, the anchors, the pairs compared and the rows left
    unpaired after MAX_ROUNDS rounds.
    """
    remaining = np.arange(len(vectors))
    out_a, out_b, anchors_all = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    compared = 0
    tile = max(1, BATCH_ELEMENTS // max(1, ANCHORS * vectors.shape[1]))
    for _ in range(MAX_ROUNDS):
        if remaining.size == 0:
            break
        anchors, rest = remaining[:ANCHORS], remaining[ANCHORS:]
        anchors_all.append(anchors)
        base = vectors[anchors]
        i, j = np.nonzero(np.triu(base @ base.T >= bar, 1))
        out_a.append(anchors[i])
        out_b.append(anchors[j])
        matched = np.zeros(rest.size, dtype=bool)
        for t0 in range(0, rest.size, tile):
            chunk = rest[t0 : t0 + tile]
            hit = vectors[chunk] @ base.T >= bar
            m = hit.any(axis=1)
            out_a.append(anchors[hit.argmax(axis=1)[m]])
            out_b.append(chunk[m])
            matched[t0 : t0 + chunk.size] = m
        compared += anchors.size * (anchors.size - 1) // 2 + rest.size * anchors.size
        remaining = rest[~matched]
    return (np.concatenate(out_a), np.concatenate(out_b), np.sort(np.concatenate(anchors_all)), compared,
            int(remaining.size))


def _anchors_only(order: np.ndarray, starts: np.ndarray, counts: np.ndarray,
                  anchors: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """order/starts/counts with each capped value's rows replaced by its anchors (global rows)."""
    pieces, cursor = [], 0
    new_counts = counts.copy()
    for value in sorted(anchors):
        pieces += [order[cursor : starts[value]], anchors[value]]
        cursor = starts[value] + counts[value]
        new_counts[value] = anchors[value].size
    pieces.append(order[cursor:])
    new_starts = np.concatenate([[0], np.cumsum(new_counts)[:-1]]).astype(np.int64)
    return np.concatenate(pieces), new_starts, new_counts


def hamming(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bits that differ between 64-bit hashes, element-wise."""
    diff = np.ascontiguousarray(np.bitwise_xor(x, y).astype("<u8"))
    return np.unpackbits(diff.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1).astype(np.int64)


def cosine_bar(bits: np.ndarray, max_bits: int, threshold: float, relief: float = RELIEF) -> np.ndarray:
    """Similarity a pair of images needs at each Hamming distance: `threshold` at `max_bits`,
    `relief` lower for identical hashes, linearly between (see the module docstring)."""
    closeness = 1.0 - np.asarray(bits, dtype=np.float64) / max_bits if max_bits else np.ones(np.shape(bits))
    return threshold - relief * closeness


def block_pair_count(counts: np.ndarray, u: np.ndarray, v: np.ndarray) -> int:
    """Candidate pairs in the blocks (pairs inside one value counted once)."""
    cu, cv = counts[u], counts[v]
    return int(np.where(u == v, cu * (cu - 1) // 2, cu * cv).sum())


def _expand(order, starts, counts, u, v) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All row pairs of small blocks and the block of each, vectorised (inside one value:
    each pair once)."""
    cu, cv = counts[u], counts[v]
    sizes = cu * cv
    block = np.repeat(np.arange(u.size), sizes)
    t = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    ii, jj = np.divmod(t, cv[block])
    keep = (u[block] != v[block]) | (ii < jj)
    a = order[starts[u][block] + ii]
    b = order[starts[v][block] + jj]
    return a[keep], b[keep], block[keep]


def phash_knn_pairs(scored: ScoredPool, phash: np.ndarray, valid: np.ndarray, max_bits: int,
                    threshold: float, progress: bool = False) -> tuple[tuple[np.ndarray, np.ndarray], dict]:
    """Row pairs whose phashes differ in at most `max_bits` bits and whose image embeddings
    have cosine >= cosine_bar(distance): `threshold` at `max_bits`, RELIEF lower for
    identical hashes. Also {"candidates": ..., "confirmed": ...} for the summary."""
    # SLACK: float16 storage moves cosines by ~1e-4 (as in knn)
    return confirmed_candidates(phash, valid, max_bits, lambda rows: gather_rows(scored, rows),
                                lambda bits: cosine_bar(bits, max_bits, threshold) - SLACK, "phash-knn confirm", progress)


def confirmed_candidates(phash: np.ndarray, valid: np.ndarray, max_bits: int,
                         vectors_of: Callable[[np.ndarray], np.ndarray], bar: Callable[[np.ndarray], np.ndarray],
                         desc: str, progress: bool = False) -> tuple[tuple[np.ndarray, np.ndarray], dict]:
    """Candidate pairs (hashes within `max_bits`) whose vectors' dot product reaches the
    bar for their Hamming distance. `vectors_of(rows)` gives one unit row per sorted global
    row (embeddings for phash-knn, pixel thumbnails for phash-pixels); `bar(bits)` the bar
    per block distance."""
    from tqdm import tqdm

    order, starts, counts, u, v, bits, capped = candidate_blocks(phash, valid, max_bits)
    empty = np.zeros(0, np.int64)
    if block_pair_count(counts, u, v) == 0 and capped.size == 0:
        return (empty, empty), {"candidates": 0, "confirmed": 0, "max_bucket": MAX_BUCKET, "capped_buckets": []}

    involved = np.zeros(counts.size, dtype=bool)
    involved[u] = involved[v] = involved[capped] = True
    needed = np.sort(order[np.repeat(involved, counts)])
    vectors = vectors_of(needed)  # only rows in some candidate pair
    local = lambda rows: np.searchsorted(needed, rows)  # noqa: E731 (global -> row of `vectors`)
    bar_of_block = bar(bits)
    per_batch = max(1024, BATCH_ELEMENTS // max(1, vectors.shape[1]))
    out_a, out_b = [], []

    # capped buckets first: anchors pair their rows, then stand for them in the blocks
    anchors, reports, compared_in_capped = {}, [], 0
    same_bar = float(bar(np.zeros(1, np.int64))[0])
    for value in capped.tolist():
        rows = order[starts[value] : starts[value] + counts[value]]  # pool order (stable sort)
        a, b, kept, compared, unpaired = anchored_pairs(vectors[local(rows)], same_bar)
        out_a.append(rows[a])
        out_b.append(rows[b])
        anchors[value] = rows[kept]
        compared_in_capped += compared
        reports.append({"rows": int(rows.size), "anchors": int(kept.size), "unpaired": unpaired})
    if anchors:
        order, starts, counts = _anchors_only(order, starts, counts, anchors)
    total = block_pair_count(counts, u, v)  # blocks with a capped value pair its anchors only

    sizes = counts[u] * counts[v]
    big = sizes >= MATMUL_MIN
    with tqdm(total=total, desc=desc, unit=" pairs", disable=not progress, leave=False) as progress_bar:
        small = np.flatnonzero(~big)
        blocks_per_batch = max(1, per_batch // max(1, int(sizes[small].max()) if small.size else 1))
        for k in range(0, small.size, blocks_per_batch):
            sel = small[k : k + blocks_per_batch]
            a, b, block = _expand(order, starts, counts, u[sel], v[sel])
            sims = np.einsum("ij,ij->i", vectors[local(a)], vectors[local(b)])
            hit = sims >= bar_of_block[sel][block]
            out_a.append(a[hit])
            out_b.append(b[hit])
            progress_bar.update(a.size)
        for blk in np.flatnonzero(big):
            rows_u = order[starts[u[blk]] : starts[u[blk]] + counts[u[blk]]]
            rows_v = order[starts[v[blk]] : starts[v[blk]] + counts[v[blk]]]
            base = vectors[local(rows_v)]
            tile = max(1, per_batch // rows_v.size)
            for q0 in range(0, rows_u.size, tile):
                sims = vectors[local(rows_u[q0 : q0 + tile])] @ base.T
                hit = sims >= bar_of_block[blk]
                if u[blk] == v[blk]:  # one value: each pair once, no self pairs
                    hit &= np.arange(q0, q0 + sims.shape[0])[:, None] < np.arange(rows_v.size)[None, :]
                r, c = np.nonzero(hit)
                out_a.append(rows_u[q0 + r])
                out_b.append(rows_v[c])
            progress_bar.update(int(sizes[blk]) if u[blk] != v[blk] else int(counts[u[blk]] * (counts[u[blk]] - 1) // 2))
    a, b = np.concatenate([empty, *out_a]), np.concatenate([empty, *out_b])
    return (a, b), {"candidates": total + compared_in_capped, "confirmed": int(a.size), "max_bucket": MAX_BUCKET,
                    "capped_buckets": reports}
