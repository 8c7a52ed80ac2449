"""Build a small real pool on disk, laid out as the stages write it (docs/design.md).

    shards/NNNNN.tar + .parquet    as img2dataset writes them (webdataset TarWriter)
    scores/TAG/NNNNN.parquet       per the scores column contract, + model.json
    dedup/NAME/groups.parquet      per the dedup column contract

Images are drawn with PIL. Captions include a few kinds the recipes should catch (file
names, one-word captions); scores include ties and a null (undecodable image); dedup puts
a few samples into groups of two. Reusable by any test: `make_pool(tmp_path / "pool")`.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image, ImageDraw

from shards.uid import sample_uid

CAPTIONS = [
    "a red bicycle leaning on a brick wall",
    "two dogs playing in the snow",
    "IMG_2041.jpg",
    "sunset",
    "a bowl of ramen with an egg and green onions",
    "a lighthouse on a rocky coast at dusk",
    "DSC00123",
    "a child flying a kite on the beach",
]


@dataclass
class FakeSample:
    uid: str
    key: str
    shard: str
    url: str
    caption: str
    success: bool
    width: int | None = None
    height: int | None = None
    clip_score: float | None = None
    keep: bool = True
    image_ext: str = "jpg"


@dataclass
class FakePool:
    path: Path
    samples: list[FakeSample] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    dedup_names: list[str] = field(default_factory=list)

    @property
    def ok(self) -> list[FakeSample]:
        return [s for s in self.samples if s.success]

    def by_uid(self) -> dict[str, FakeSample]:
        return {s.uid: s for s in self.samples}


def _image_bytes(index: int, width: int, height: int, ext: str) -> bytes:
    image = Image.new("RGB", (width, height), ((index * 37) % 256, (index * 91) % 256, (index * 53) % 256))
    draw = ImageDraw.Draw(image)
    draw.rectangle([width // 4, height // 4, 3 * width // 4, 3 * height // 4], fill=(255 - index % 256, 40, 200))
    out = io.BytesIO()
    image.save(out, format="PNG" if ext == "png" else "JPEG", quality=90)
    return out.getvalue()


def _write_shard(pool: Path, shard: str, rows: list[FakeSample], seed: int) -> dict[str, bytes]:
    """One img2dataset shard: tar of successes, parquet of every row. Returns image bytes."""
    images: dict[str, bytes] = {}
    with wds.TarWriter(str(pool / "shards" / f"{shard}.tar"), encoder=False) as tar:
        for i, s in enumerate(rows):
            if not s.success:
                continue
            images[s.uid] = _image_bytes(seed + i, s.width, s.height, s.image_ext)
            meta = {
                "uid": s.uid, "url": s.url, "caption": s.caption, "key": s.key, "status": "success",
                "error_message": None, "width": s.width, "height": s.height,
                "original_width": s.width, "original_height": s.height,
            }
            tar.write({
                "__key__": s.key,
                s.image_ext: images[s.uid],
                "txt": s.caption.encode(),
                "json": json.dumps(meta).encode(),
            })
    table = pa.table({
        "key": [s.key for s in rows],
        "uid": [s.uid for s in rows],
        "url": [s.url for s in rows],
        "caption": [s.caption for s in rows],
        "status": ["success" if s.success else "failed_to_download" for s in rows],
        "error_message": [None if s.success else "HTTP Error 404: Not Found" for s in rows],
        "width": pa.array([s.width for s in rows], pa.int64()),
        "height": pa.array([s.height for s in rows], pa.int64()),
        "original_width": pa.array([s.width for s in rows], pa.int64()),
        "original_height": pa.array([s.height for s in rows], pa.int64()),
        "fail_reason": [None if s.success else "http-404" for s in rows],
    })
    pq.write_table(table, pool / "shards" / f"{shard}.parquet")
    (pool / "shards" / f"{shard}_stats.json").write_text(json.dumps({"count": len(rows)}))
    return images


def _write_scores(pool: Path, tag: str, shard: str, rows: list[FakeSample], images: dict[str, bytes], offset: float) -> None:
    ok = [s for s in rows if s.success]
    scores = [None if s.clip_score is None else s.clip_score + offset for s in ok]
    table = pa.table({
        "uid": [s.uid for s in ok],
        "key": [s.key for s in ok],
        "clip_score": pa.array(scores, pa.float32()),
        "error": [None if s.clip_score is not None else "cannot identify image file" for s in ok],
        "image_sha256": [hashlib.sha256(images[s.uid]).hexdigest() for s in ok],
        "phash": pa.array([int(s.uid[:16], 16) for s in ok], pa.uint64()),
        "width": pa.array([s.width for s in ok], pa.int32()),
        "height": pa.array([s.height for s in ok], pa.int32()),
        "caption_tokens": pa.array([len(s.caption.split()) + 2 for s in ok], pa.int32()),
        "caption_truncated": [False for _ in ok],
        "image_norm": pa.array([10.0 for _ in ok], pa.float32()),
        "text_norm": pa.array([8.0 for _ in ok], pa.float32()),
    })
    directory = pool / "scores" / tag
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, directory / f"{shard}.parquet")
    (directory / "model.json").write_text(json.dumps({"model": f"tiny-{tag}", "weights": f"{tag}.pt", "dim": 64}))


def _write_dedup(pool: Path, name: str, samples: list[FakeSample]) -> None:
    ok = [s for s in samples if s.success]
    group_ids, sizes, methods = [], [], []
    # every 5th scored sample duplicates the one before it; the earlier one is kept
    for i, s in enumerate(ok):
        dup = i % 5 == 4
        first = i % 5 == 3 and i + 1 < len(ok)
        group_ids.append(i - 1 if dup else i)
        sizes.append(2 if (dup or first) else 1)
        methods.append("phash" if (dup or first) else None)
        s.keep = not dup
    table = pa.table({
        "uid": [s.uid for s in ok],
        "group_id": pa.array(group_ids, pa.int64()),
        "group_size": pa.array(sizes, pa.int64()),
        "keep": [s.keep for s in ok],
        "method": methods,
    })
    directory = pool / "dedup" / name
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, directory / "groups.parquet")
    (directory / "summary.json").write_text(json.dumps({"samples": len(ok), "removed": sum(not s.keep for s in ok)}))


def make_pool(
    path: str | Path,
    shards: int = 2,
    per_shard: int = 12,
    tags: tuple[str, ...] = ("seed",),
    dedup_names: tuple[str, ...] = ("default",),
    failed_every: int = 6,
    png_every: int = 7,
    seed: int = 0,
    side: tuple[int, int] = (24, 64),
) -> FakePool:
    """Write a pool under `path` and return what is in it (for assertions).

    Every `failed_every`-th row failed to download (no tar member). clip_score is a
    deterministic function of the row with a tie every few rows, and the first scored
    row has a null score. A second tag, if any, has the same scores shifted by 0.01.
    """
    pool = Path(path)
    (pool / "shards").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    fp = FakePool(pool, tags=list(tags), dedup_names=list(dedup_names))
    n = 0
    for shard_index in range(shards):
        shard = f"{shard_index:05d}"
        rows = []
        for j in range(per_shard):
            caption = CAPTIONS[n % len(CAPTIONS)] + ("" if n < len(CAPTIONS) else f" #{n}")
            if CAPTIONS[n % len(CAPTIONS)] in ("IMG_2041.jpg", "DSC00123", "sunset"):
                caption = CAPTIONS[n % len(CAPTIONS)]  # keep the bad captions bad
            url = f"http://127.0.0.1:9/img/{seed}/{n}.jpg"
            success = (n % failed_every) != failed_every - 1
            width = int(rng.integers(*side))
            height = int(rng.integers(*side)) if n % 9 else width * 4  # some very tall images
            s = FakeSample(
                uid=sample_uid(url, caption), key=f"{shard_index:05d}{j:04d}", shard=shard, url=url,
                caption=caption, success=success,
                width=width if success else None, height=height if success else None,
                image_ext="png" if n % png_every == 3 else "jpg",
            )
            rows.append(s)
            n += 1
        fp.samples.extend(rows)
        ok = [s for s in rows if s.success]
        for i, s in enumerate(ok):
            position = len([x for x in fp.samples if x.success]) - len(ok) + i
            s.clip_score = None if position == 0 else round(0.1 + ((position * 7) % 11) * 0.02, 2)  # ties
        images = _write_shard(pool, shard, rows, seed * 1000 + shard_index * per_shard)
        for t_index, tag in enumerate(tags):
            _write_scores(pool, tag, shard, rows, images, 0.01 * t_index)
    for name in dedup_names:
        _write_dedup(pool, name, fp.samples)
    (pool / "pool.json").write_text(json.dumps({"source": "poolfactory", "count": n}))
    return fp
