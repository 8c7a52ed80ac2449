"""phash-pixels: perceptual-hash candidates confirmed by the pictures' own pixels.

phash-knn confirms a hash candidate with the seed model's image embeddings, so it is only
as good as that model at telling a copy from a look-alike, and no single cosine bar holds
across models: on the real demo pool (pool seed 1) a scratch seed CLIP puts different
products of one class and colour above the cosines of true copies, and a LiT seed
(ImageNet towers) puts recoloured or cropped copies as low as 0.55 while rating differently
coloured ankle boots alike; with the measured bar phash-knn reached near-pair precision /
recall 0.96 / 0.86 with the first seed and 0.76 / 0.88 with the second.

A copy (re-encoded, resized, cropped by a few pixels, brightness or saturation nudged)
keeps its picture; a look-alike does not. So the candidate pair is confirmed by two cheap
comparisons of thumbnails that `curate score` stores (curate.score.batched):
- the 16x16 greyscale thumbnails' correlation (mean removed, unit length: brightness and
  contrast changes drop out) must reach `threshold` (default 0.98) at `max_bits`, falling
  linearly to RELIEF lower for identical hashes;
- the 4x4 mean colour grids must agree: mean CIELAB distance per cell at most
  COLOUR_MAX (a tinted look-alike with the same shape fails here).
Measured on candidate pairs (phash <= 6 bits) of the demo pools, before grouping: real
pool, copies' correlation >= 0.98 in 99% of pairs, look-alikes' median 0.86 (99th
percentile 0.977); shapes pool, copies >= 0.965. Copies' colour distance <= 11, differently
tinted look-alikes 25 (median). Pair precision / recall with the defaults over six pools
(shapes 400 and 2x 2,000 rows, real 3x 4,000): >= 0.958 / >= 0.971; a flat 0.98 bar
missed shapes copies (recall 0.905 on 400 rows). Neither signal depends on the seed model.

A flat thumbnail (no variation: a blank or single-colour picture) has no correlation; two
flat thumbnails count as correlated (1.0) and the colour grid decides.
"""
from __future__ import annotations

import numpy as np

from curate.dedup.phash_knn import confirmed_candidates, cosine_bar
from curate.dedup.scored_pool import ScoredPool
from shards.storage import read_parquet

PIXEL_COLUMNS = ("pixels", "colours")
COLOUR_MAX = 12.0  # mean CIELAB delta E per cell of the 4x4 colour grid
FLAT_STD = 1.0  # grey levels: a thumbnail flatter than this has no shape to correlate
SLACK = 1e-6  # float32 rounding of a dot product of unit vectors
# How much lower the correlation bar is for identical hashes than at `max_bits`: drawn
# shapes cropped by a pixel keep their hash within 2 bits but lose sharp edges to the shift
# (correlation 0.97); the closer the hashes, the less the pixels must prove.
RELIEF = 0.02


def _read_pixel_columns(scored: ScoredPool, positions: np.ndarray) -> tuple[list[bytes], list[bytes]]:
    pixels, colours = [], []
    bounds = np.asarray(scored.offsets + (scored.size,))
    for k, shard in enumerate(scored.shards):
        lo, hi = np.searchsorted(positions, [bounds[k], bounds[k + 1]])
        if hi > lo:
            table = read_parquet(scored.scores_path(shard), columns=list(PIXEL_COLUMNS))
            take = (positions[lo:hi] - bounds[k]).tolist()
            pixels += table.column("pixels").take(take).to_pylist()
            colours += table.column("colours").take(take).to_pylist()
    return pixels, colours


def pixel_vectors(raw: list[bytes]) -> np.ndarray:
    """Unit, mean-removed 16x16 thumbnails (float32, one row each); a flat thumbnail gets
    the constant unit vector, orthogonal to every mean-removed one and equal to its kind."""
    grey = np.frombuffer(b"".join(raw), dtype=np.uint8).reshape(len(raw), -1).astype(np.float32)
    centred = grey - grey.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    flat = (norms[:, 0] / np.sqrt(grey.shape[1])) < FLAT_STD
    vectors = centred / np.where(norms > 0, norms, 1.0)
    vectors[flat] = 1.0 / np.sqrt(grey.shape[1])
    return vectors


def lab_grids(raw: list[bytes]) -> np.ndarray:
    """CIELAB (D65) of the 4x4 sRGB colour grids: (N, 16, 3) float32."""
    import kornia
    import torch

    rgb = np.frombuffer(b"".join(raw), dtype=np.uint8).reshape(len(raw), 4, 4, 3)
    tensor = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    return kornia.color.rgb_to_lab(tensor).permute(0, 2, 3, 1).reshape(len(raw), 16, 3).numpy()


def phash_pixels_pairs(scored: ScoredPool, phash: np.ndarray, valid: np.ndarray, max_bits: int,
                       threshold: float, progress: bool = False) -> tuple[tuple[np.ndarray, np.ndarray], dict]:
    """Row pairs whose phashes differ in at most `max_bits` bits, whose grey thumbnails
    correlate at `threshold` or more and whose colour grids are within COLOUR_MAX.
    Also {"candidates", "confirmed", "colour_rejected"} for the summary."""
    grids: dict[str, np.ndarray] = {}

    def vectors_of(rows: np.ndarray) -> np.ndarray:
        pixels, colours = _read_pixel_columns(scored, rows)
        grids["rows"], grids["lab"] = rows, lab_grids(colours)
        return pixel_vectors(pixels)

    (a, b), counts = confirmed_candidates(phash, valid, max_bits, vectors_of,
                                          lambda bits: cosine_bar(bits, max_bits, threshold, RELIEF) - SLACK,
                                          "phash-pixels confirm", progress)
    if a.size:
        rows, lab = grids["rows"], grids["lab"]
        distance = np.linalg.norm(lab[np.searchsorted(rows, a)] - lab[np.searchsorted(rows, b)], axis=2).mean(axis=1)
        same_colour = distance <= COLOUR_MAX
        counts["colour_rejected"] = int((~same_colour).sum())
        a, b = a[same_colour], b[same_colour]
        counts["confirmed"] = int(a.size)
    return (a, b), counts
