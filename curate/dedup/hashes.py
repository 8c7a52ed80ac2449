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


# hex digit -> value; 255 marks a byte that is not one
_HEX = np.full(256, 255, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


def sha256_keys(column) -> tuple[np.ndarray, np.ndarray]:
    """(n, 4) uint64 keys of a string column of image hashes, and which rows have one.

    A 64-digit hex sha256 (what `curate score` writes) is its own key: its 256 bits, decoded
    in numpy (upper and lower case alike). Any other text keys by its blake2b-256. 32 bytes
    a row instead of the text and a dictionary of it (at 10M rows the text and its
    dictionary encoding held 1.6 GiB).
    """
    import hashlib

    import pyarrow as pa
    import pyarrow.compute as pc

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    arr = arr.cast(pa.large_string())
    valid = pc.is_valid(arr).to_numpy(zero_copy_only=False)
    keys = np.zeros((len(arr), 4), dtype=np.uint64)
    lengths = pc.fill_null(pc.binary_length(arr), 0).to_numpy(zero_copy_only=False)
    hexed = np.flatnonzero(valid & (lengths == 64))
    if hexed.size:
        picked = arr.take(pa.array(hexed))
        offsets = np.frombuffer(picked.buffers()[1], np.int64)[picked.offset : picked.offset + len(picked) + 1]
        text = np.frombuffer(picked.buffers()[2], np.uint8)[offsets[0] : offsets[-1]].reshape(-1, 64)
        digits = _HEX[text]
        ok = (digits != 255).all(axis=1)
        packed = (digits[ok, 0::2] << 4) | digits[ok, 1::2]  # (m, 32) bytes, big-endian quarters
        keys[hexed[ok]] = np.ascontiguousarray(packed).view(">u8").astype(np.uint64)
        other = np.setdiff1d(np.flatnonzero(valid), hexed[ok])
    else:
        other = np.flatnonzero(valid)
    for row, value in zip(other, arr.take(pa.array(other, pa.int64())).to_pylist()):
        keys[row] = np.frombuffer(hashlib.blake2b(value.encode(), digest_size=32).digest(), ">u8")
    return keys, valid


def exact_pairs(keys: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose stored image bytes have the same sha256 (sha256_keys; rows without one never
    match): every row linked to the first row with its key, a star per value."""
    idx = np.flatnonzero(valid)
    if idx.size < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    k = keys[idx]
    order = np.lexsort(k.T[::-1])  # stable: equal keys stay in row order
    k = k[order]
    starts = np.ones(idx.size, dtype=bool)
    starts[1:] = (k[1:] != k[:-1]).any(axis=1)
    first = np.maximum.accumulate(np.where(starts, np.arange(idx.size), 0))
    rows = idx[order]
    dup = ~starts
    return rows[first[dup]].astype(np.int64), rows[dup].astype(np.int64)


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
