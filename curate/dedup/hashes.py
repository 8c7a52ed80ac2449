"""Pair finders on per-image hashes: identical bytes (sha256) and near perceptual hashes."""
from __future__ import annotations

from itertools import combinations
from math import comb

import numpy as np

MAX_PHASH_BITS = 12
# Up to this many distinct hashes FAISS multi-index hashing is quick (a demo pool: ms). Past
# it, its hash-map probes dominate (6 bits: 250k hashes ~60 s, 1M ~400 s, 10M hours here),
# and the hashes are searched by sorting on blocks instead (block_sorted_pairs: 10M in minutes).
MULTIHASH_MAX = 50_000


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


def near_hash_values(values: np.ndarray, max_bits: int, flips: int | None = None,
                     blocks: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(i, j), i < j, over distinct 64-bit hashes `values` that differ in 1..max_bits bits.

    Up to MULTIHASH_MAX hashes, FAISS multi-index hashing: split the 64 bits into chunks and
    probe each chunk's bucket and its few-bit flips (_multihash_plan; `flips` forces a plan,
    for tests); above, block_sorted_pairs (`blocks` forces it, for tests). Both verify the
    full 64-bit distance, so only true pairs are returned, and both return all of them.
    """
    empty = np.zeros(0, np.int64)
    if max_bits == 0 or values.size < 2:
        return empty, empty
    if blocks is not None or (flips is None and values.size > MULTIHASH_MAX):
        return block_sorted_pairs(values, max_bits, blocks)
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


def _block_plan(max_bits: int, n: int) -> int:
    """Blocks B for block_sorted_pairs with the least expected work: C(B, B - max_bits)
    sorts of n keys, each key (B - max_bits) blocks of >= 64 // B bits, each sort's runs
    holding about n^2 / 2^(key bits + 1) candidate pairs (uniform hashes). 10M hashes at 6
    bits: 10 blocks, 210 sorts of 24-28-bit keys."""
    best = None
    for blocks in range(max_bits + 1, 33):
        agree = blocks - max_bits
        cost = comb(blocks, agree) * (n + n * n / 2.0 ** ((64 // blocks) * agree + 1))
        if best is None or cost < best[0]:
            best = (cost, blocks)
    return best[1]


def _pairs_in_runs(starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (p, q), p < q, of positions inside each run [starts[k], starts[k] + sizes[k])."""
    position = np.repeat(starts, sizes) + np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    later = np.repeat(starts + sizes, sizes) - position - 1  # partners after each position in its run
    p = np.repeat(position, later)
    q = p + 1 + np.arange(int(later.sum())) - np.repeat(np.cumsum(later) - later, later)
    return p, q


def block_sorted_pairs(values: np.ndarray, max_bits: int, blocks: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """near_hash_values by the pigeonhole on blocks (Manku et al., WWW 2007, simhash
    near-duplicates): split the 64 bits into B blocks; two hashes within max_bits bits agree
    exactly on at least B - max_bits blocks. So for every choice of that many blocks, sorting
    the hashes by those blocks' bits puts each such pair in one run of equal keys; the pairs
    inside runs are verified on all 64 bits. Work: C(B, B - max_bits) numpy sorts of n keys
    (_block_plan), no per-hash Python or hash-map step."""
    n = values.size
    blocks = blocks or _block_plan(max_bits, n)
    widths = [64 // blocks + (1 if k < 64 % blocks else 0) for k in range(blocks)]
    offsets = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.uint64)
    v = np.asarray(values, dtype=np.uint64)
    row_bits = max(1, (n - 1).bit_length())
    rows = np.arange(n, dtype=np.uint64)
    out_i, out_j = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for chosen in combinations(range(blocks), blocks - max_bits):
        key = np.zeros(n, dtype=np.uint64)
        key_bits = 0
        for blk in chosen:
            key = (key << np.uint64(widths[blk])) | ((v >> offsets[blk]) & np.uint64((1 << widths[blk]) - 1))
            key_bits += widths[blk]
        if key_bits + row_bits <= 64:  # key and row in one word: np.sort, no argsort
            packed = (key << np.uint64(row_bits)) | rows
            packed.sort()
            key, order = packed >> np.uint64(row_bits), (packed & np.uint64((1 << row_bits) - 1)).astype(np.int64)
        else:
            order = np.argsort(key, kind="stable")
            key = key[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        sizes = np.diff(np.r_[starts, n])
        shared = sizes > 1
        if not shared.any():
            continue
        p, q = _pairs_in_runs(starts[shared], sizes[shared])
        i, j = order[p], order[q]
        near = np.bitwise_count(v[i] ^ v[j]) <= max_bits
        i, j = i[near], j[near]
        out_i.append(np.minimum(i, j))
        out_j.append(np.maximum(i, j))
    i, j = np.concatenate(out_i), np.concatenate(out_j)
    packed = np.unique(i * n + j)  # a pair agreeing on several block sets is found by each; n^2 < 2^63
    return packed // n, packed % n


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
