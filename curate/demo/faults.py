"""The faults a real pool has, made on purpose: near duplicates, truncated files, images
below the minimum side or over the pixel limit.
"""
from __future__ import annotations

import io
import random

from PIL import Image, ImageEnhance

from curate.demo.render import encode
from curate.score.batched import phash

MIN_SIDE = 32  # "tiny" images have a side below this (the downloader's minimum)
HUGE_SIDE_RANGE = (9000, 9400)  # both sides: 81-88 Mpx, under PIL's bomb warning
HUGE_MIN_PIXELS = HUGE_SIDE_RANGE[0] ** 2  # every "huge" image has at least this many pixels
# A near duplicate's phash (the scores' column, curate.score.batched.phash) differs from
# its original's by at most this many bits. On flat drawings a few hashes sit on a knife
# edge, where one re-encode can flip a third of the bits; such edits are drawn again.
NEAR_DUP_MAX_PHASH_BITS = 8


def _edit(img: Image.Image, rng: random.Random) -> tuple[Image.Image, str, int, str]:
    edits = rng.sample(("reencode", "resize", "crop", "recolour"), k=rng.choice((1, 2)))
    fmt = "JPEG"
    quality = rng.randint(40, 70)
    if "crop" in edits:
        w, h = img.size
        # A few pixels off the edges, split between both sides: a perceptual hash is
        # sensitive to the picture shifting, far less to its border shrinking.
        dx, dy = max(2, round(w * rng.uniform(0.01, 0.025))), max(2, round(h * rng.uniform(0.01, 0.025)))
        left, top = dx // 2, dy // 2
        img = img.crop((left, top, w - (dx - left), h - (dy - top)))
    if "resize" in edits:
        scale = rng.choice((rng.uniform(0.7, 0.9), rng.uniform(1.15, 1.5)))
        w, h = img.size
        img = img.resize((max(MIN_SIDE, round(w * scale)), max(MIN_SIDE, round(h * scale))), Image.Resampling.LANCZOS)
        fmt = rng.choice(("JPEG", "PNG"))
    if "recolour" in edits:
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.9, 1.1))
        img = ImageEnhance.Color(img).enhance(rng.uniform(0.85, 1.15))
    # A lone "reencode" keeps the size and changes only the JPEG quality.
    return img, fmt, quality, "+".join(sorted(edits))


def near_duplicate(data: bytes, rng: random.Random, attempts: int = 8) -> tuple[bytes, str, str]:
    """Another file showing the same picture: re-encoded, resized, cropped or recoloured.

    Returns (bytes, format, what was done). Edits whose perceptual hash lands more than
    NEAR_DUP_MAX_PHASH_BITS away are drawn again; a plain re-encode is the last resort.
    """
    original = Image.open(io.BytesIO(data)).convert("RGB")
    reference = phash(original)
    for _ in range(attempts):
        img, fmt, quality, what = _edit(original, rng)
        out = encode(img, fmt, quality)
        candidate = Image.open(io.BytesIO(out))
        if (phash(candidate) ^ reference).bit_count() <= NEAR_DUP_MAX_PHASH_BITS and out != data:
            return out, fmt, what
    return encode(original, "JPEG", 95), "JPEG", "reencode"


def truncate(data: bytes, rng: random.Random) -> bytes:
    """Cut a JPEG part-way through its entropy-coded data, as an interrupted transfer does.

    The header stays whole (the size still reads); the end-of-image marker is lost.
    """
    start_of_scan = data.find(b"\xff\xda")
    if start_of_scan < 0:
        raise ValueError("not a baseline JPEG: no start-of-scan marker")
    body = len(data) - start_of_scan
    return data[: start_of_scan + max(16, int(body * rng.uniform(0.3, 0.7)))]


def tiny_size(rng: random.Random) -> tuple[int, int]:
    """A canvas with at least one side below MIN_SIDE."""
    short = rng.randint(8, MIN_SIDE - 1)
    other = rng.randint(8, 96)
    return (short, other) if rng.random() < 0.5 else (other, short)


def huge_size(rng: random.Random) -> tuple[int, int]:
    """A canvas of HUGE_SIDE_RANGE on both sides (81-88 Mpx)."""
    return rng.randint(*HUGE_SIDE_RANGE), rng.randint(*HUGE_SIDE_RANGE)
