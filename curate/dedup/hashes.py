"""Pair finders on per-image hashes: identical bytes (sha256) and near perceptual hashes."""
from __future__ import annotations

from math import comb

import numpy as np

MAX_PHASH_BITS = 12


def equal_value_pairs(codes: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs linking every row to the first row with the same code: a star per value."""
    idx = np.arange(codes.size) if valid is None else np.flatnonzero(valid)
    if idx.size == 0:
        return idx, idx
    _, first, inverse = np.unique(codes[idx], return_index=True, return_inverse=True)
    anchor = idx[first][inverse]
    dup = anchor != idx
    return anchor[dup], idx[dup]


def exact_pairs(sha256) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose stored image bytes have the same sha256 (nulls never match)."""
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(sha256).combine_chunks()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    valid = pc.is_valid(encoded).to_numpy(zero_copy_only=False)
    codes = np.where(valid, codes, -1).astype(np.int64)
    return equal_value_pairs(codes, valid)


def _multihash_plan(max_bits: int, n: int) -> tuple[int, int]:
    """(chunks, flips) for multi-index hashing with the least expected work.

    With m chunks, a pair within max_bits differs in at most max_bits // m bits in some
    chunk (pigeonhole), so m = max_bits // (flips + 1) + 1 chunks probed with `flips` bit
    flips find every pair. Work per query ~ m x (buckets probed) x (1.15 + entries per
    bucket), the constant measured on FAISS's IndexBinaryMultiHash (probing a bucket
    costs about one verified code). At 8 bits on 180k hashes: 2 flips x 3 chunks of 21
    bits is 3.5x faster than 1 flip x 5 chunks of 12 bits (whose buckets are crowded).
    """
    best = None
    for flips in (1, 2, 3):
        chunks = max_bits // (flips + 1) + 1
        b = 64 // chunks
        probes = sum(comb(b, k) for k in range(flips + 1))
        cost = chunks * probes * (1.15 + n / 2.0**b)
        if best is None or cost < best[0]:
            best = (cost, chunks, flips)
    return best[1], best[2]


def near_hash_values(values: np.ndarray, max_bits: int, flips: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(i, j), i < j, over distinct 64-bit hashes `values` that differ in 1..max_bits bits.

    FAISS multi-index hashing: split the 64 bits into chunks and probe each chunk's bucket
    and its few-bit flips (_multihash_plan; `flips` forces a plan, for tests); verification
    uses the full 64-bit distance, so only true pairs are returned.
    """
    empty = np.zeros(0, np.int64)
    if max_bits == 0 or values.size < 2:
        return empty, empty
    import faiss

    chunks, nflip = _multihash_plan(max_bits, values.size)
    if flips is not None:
        chunks, nflip = max_bits // (flips + 1) + 1, flips
    index = faiss.IndexBinaryMultiHash(64, chunks, 64 // chunks)
    index.nflip = nflip
    codes = np.ascontiguousarray(values.astype("<u8")).view(np.uint8).reshape(-1, 8)
    index.add(codes)
    lims, _, found = index.range_search(codes, max_bits + 1)  # radius is exclusive
    query = np.repeat(np.arange(values.size), np.diff(lims).astype(np.int64))
    found = found.astype(np.int64)
    once = query < found  # each pair is found from both sides; self matches dropped
    return query[once], found[once]


def phash_pairs(phash: np.ndarray, valid: np.ndarray, max_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose 64-bit perceptual hashes differ in at most `max_bits` bits.

    Identical hashes are joined first (a star per hash); the Hamming search then runs on
    distinct hashes only and links one representative row of each.
    """
    a, b = equal_value_pairs(phash, valid)
    rows = np.flatnonzero(valid)
    values, first = np.unique(phash[rows], return_index=True)
    reps = rows[first]  # one row per distinct hash; the others are already joined to it
    i, j = near_hash_values(values, max_bits)
    return np.concatenate([a, reps[i]]), np.concatenate([b, reps[j]])
