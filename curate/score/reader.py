"""Decoding a pool's shards for scoring, in DataLoader workers, in fixed chunks.

Work is split into chunks of `batch_size` consecutive samples of one shard. A chunk is
always the same batch whether or not earlier shards were already scored, so a resumed
run computes every row in the same batch as an uninterrupted one and writes the same
bytes. Workers take chunks round-robin and also tokenise the captions, keeping both off
the model's critical path.
"""
from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp")


@dataclass(frozen=True)
class ShardJob:
    shard: str  # 5-digit name
    tar: Path


def iter_tar_samples(tar_path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {suffix: bytes}) in tar order, for consecutive members sharing a key."""
    key, sample = None, {}
    with tarfile.open(tar_path, "r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            base = member.name.rsplit("/", 1)[-1]
            member_key, _, suffix = base.partition(".")
            if member_key != key:
                if key is not None:
                    yield key, sample
                key, sample = member_key, {}
            sample[suffix.lower()] = tar.extractfile(member).read()
    if key is not None:
        yield key, sample


def perceptual_hash(image: Image.Image) -> int:
    """64-bit DCT perceptual hash (imagehash.phash) as an unsigned integer."""
    import imagehash

    bits = imagehash.phash(image).hash.flatten()
    return int(np.packbits(bits).view(">u8")[0])


def caption_token_count(tokenizer: Any, caption: str) -> int:
    """Tokens the caption needs including start/end tokens (before truncation)."""
    encode = getattr(tokenizer, "encode", None)
    if callable(encode):
        try:
            return len(encode(caption)) + 2
        except TypeError:
            pass
    ids = tokenizer([caption])[0]
    return int((ids != 0).sum())


def decode_sample(sample: dict[str, bytes], preprocess: Callable, tokenizer: Any) -> dict[str, Any]:
    import json

    meta = json.loads(sample["json"]) if "json" in sample else {}
    caption = sample["txt"].decode("utf-8", "replace") if "txt" in sample else (meta.get("caption") or "")
    row: dict[str, Any] = {"uid": meta.get("uid"), "caption": caption, "error": None, "image": None,
                           "image_sha256": None, "phash": None, "width": None, "height": None}
    context_length = getattr(tokenizer, "context_length", 77)
    row["text"] = tokenizer([caption])[0]
    # The padded ids already give the length of a caption that fits (pad id 0); only a caption
    # that fills the context is encoded again, to count what truncation cut off.
    fits = bool(row["text"][-1] == 0)
    row["caption_tokens"] = int((row["text"] != 0).sum()) if fits else caption_token_count(tokenizer, caption)
    row["caption_truncated"] = row["caption_tokens"] > context_length
    data = next((sample[s] for s in IMAGE_SUFFIXES if s in sample), None)
    if data is None:
        row["error"] = "no image member"
        return row
    row["image_sha256"] = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = img.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - any undecodable image is a row with a reason
        row["error"] = f"undecodable image: {type(exc).__name__}: {str(exc)[:120]}"
        return row
    row["width"], row["height"] = rgb.size
    row["phash"] = perceptual_hash(rgb)
    row["image"] = preprocess(rgb)
    return row


class ChunkedShards(torch.utils.data.IterableDataset):
    """Yields one decoded chunk (a batch) at a time: (shard, first_index, rows, keys)."""

    def __init__(self, jobs: list[ShardJob], batch_size: int, preprocess: Callable, tokenizer: Any) -> None:
        self.jobs = jobs
        self.batch_size = batch_size
        self.preprocess = preprocess
        self.tokenizer = tokenizer

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        chunk_counter = 0
        for job in self.jobs:
            chunk: list[tuple[str, dict]] = []
            first = total = 0
            for total, (key, sample) in enumerate(iter_tar_samples(job.tar), start=1):
                if not chunk:
                    first = total - 1
                chunk.append((key, sample))
                if len(chunk) == self.batch_size:
                    if chunk_counter % workers == worker:
                        yield self._decode(job.shard, first, chunk)
                    chunk_counter += 1
                    chunk = []
            if chunk:
                if chunk_counter % workers == worker:
                    yield self._decode(job.shard, first, chunk)
                chunk_counter += 1
            if worker == 0:  # tells the consumer the shard's size without reading the tar again
                yield {"shard": job.shard, "end": True, "total": total}

    def _decode(self, shard: str, first: int, chunk: list) -> dict:
        rows = [decode_sample(sample, self.preprocess, self.tokenizer) for _, sample in chunk]
        images = [r.pop("image") for r in rows]
        ok = [image is not None for image in images]
        return {
            "shard": shard, "first": first, "keys": [k for k, _ in chunk], "end": False, "ok": ok,
            "images": torch.stack([i for i in images if i is not None]) if any(ok) else None,
            "texts": torch.stack([r.pop("text") for r in rows]),
            "rows": rows,
        }
