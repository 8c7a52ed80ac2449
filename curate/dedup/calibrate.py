"""phash-knn's cosine bar measured on the pool itself (`--threshold auto`, the default).

A cosine means different things under different seed models. On the real demo pool, a seed
CLIP trained from scratch puts an image's nearest neighbour at cosine 0.985 (median) and
different products of one class and colour up to 0.99, while a LiT seed (ImageNet towers)
puts nearest neighbours at 0.835 and recoloured or cropped copies down to 0.75-0.8. No
fixed bar serves both: 0.95 kept near-pair precision at 0.43 with the first and recall at
0.79 with the second.

So the bar comes from hard negatives of the same pool and model: pairs whose hashes are a
little too far apart to be copies (HARD_BITS beyond `max_bits`: a similar layout, rarely
the same picture; 8 of 420 known copy pairs on the real demo pool lie beyond 8 bits). How
high such look-alikes score is what a copy must beat: the bar is their QUANTILE quantile
plus MARGIN. A sample of rows keeps this cheap on large pools.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from curate.dedup.scored_pool import ScoredPool, gather_rows

HARD_BITS = (6, 14)  # hard negatives: hashes max_bits+6 .. max_bits+14 bits apart
QUANTILE = 0.999
MARGIN = 0.02
SAMPLE_ROWS = 2000  # rows whose hard negatives are drawn, against every row of the pool
MAX_PAIRS = 200_000
# Memory bounds on big pools: hash comparisons per chunk (sample rows x pool rows), and the
# hard negatives gathered before the sample stops early (16M pairs: 256 MB). A pool of a
# few thousand rows meets neither: 2,000 x 4,000 comparisons in chunks of 256 rows.
COMPARE_ELEMENTS = 1 << 24
GATHER_LIMIT = 1 << 24
MIN_PAIRS = 200  # fewer hard negatives: too few to measure, the fixed FALLBACK bar is used
FALLBACK = 0.95
MAX_BAR = 0.999


def calibrate_threshold(scored: ScoredPool, phash: np.ndarray, valid: np.ndarray, max_bits: int,
                        seed: int = 0) -> tuple[float, dict[str, Any]]:
    """The cosine bar at `max_bits` for this pool and model, and how it was measured."""
    rows = np.flatnonzero(valid)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(rows, min(SAMPLE_ROWS, rows.size), replace=False))
    lo, hi = max_bits + HARD_BITS[0], max_bits + HARD_BITS[1]
    hashes = phash[rows].astype(np.uint64)
    a_parts, b_parts = [], []
    step = int(min(256, max(1, COMPARE_ELEMENTS // max(1, rows.size))))
    gathered, used = 0, 0
    for start in range(0, sample.size, step):
        if gathered > GATHER_LIMIT:
            break  # enough hard negatives; the rest of the (random) sample is not needed
        chunk = sample[start : start + step]
        bits = np.bitwise_count(phash[chunk].astype(np.uint64)[:, None] ^ hashes[None, :])
        i, j = np.nonzero((bits >= lo) & (bits <= hi))
        a_parts.append(chunk[i])
        b_parts.append(rows[j])
        gathered += i.size
        used += chunk.size
    a, b = np.concatenate([np.zeros(0, np.int64), *a_parts]), np.concatenate([np.zeros(0, np.int64), *b_parts])
    info: dict[str, Any] = {"hard_negative_bits": [lo, hi], "quantile": QUANTILE, "margin": MARGIN,
                            "sample_rows": used, "pairs": int(a.size)}
    if a.size < MIN_PAIRS:
        info["fallback"] = f"fewer than {MIN_PAIRS} hard negatives; fixed bar {FALLBACK}"
        return FALLBACK, info
    if a.size > MAX_PAIRS:
        pick = rng.choice(a.size, MAX_PAIRS, replace=False)
        a, b = a[pick], b[pick]
    needed = np.unique(np.concatenate([a, b]))
    vectors = gather_rows(scored, needed)
    cosines = np.einsum("ij,ij->i", vectors[np.searchsorted(needed, a)], vectors[np.searchsorted(needed, b)])
    tail = float(np.quantile(cosines, QUANTILE))
    info["hard_negative_cosine"] = round(tail, 4)
    return round(min(tail + MARGIN, MAX_BAR), 4), info
