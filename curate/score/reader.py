"""Decoding a pool's shards for scoring, in DataLoader workers, in fixed chunks.

Work is split into chunks of `batch_size` consecutive samples of one shard. A chunk is
always the same batch whether or not earlier shards were already scored, so a resumed
run computes every row in the same batch as an uninterrupted one and writes the same
bytes. Each worker takes whole shards (or, with fewer shards than workers, every
workers-th chunk) and also tokenises the captions, keeping both off the model's critical
path; per-image overheads (phash, ToTensor/Normalize, tokenizer
calls) are paid once per chunk (curate/score/batched.py). Each tar is parsed once, by
shards.reader.iter_tar_samples (why not webdataset's reader: see its docstring).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

from curate.score.batched import (SplitPreprocess, colour_grid, phash_batch, phash_thumbnail, pixel_thumbnail,
                                   tokenize_batch)
from shards.images import ImageTooLarge, open_rgb
from shards.reader import IMAGE_EXTENSIONS, iter_tar_samples
from shards.storage import as_path



@dataclass(frozen=True)
class ShardJob:
    shard: str  # 5-digit name
    tar: str  # a path or URL, opened in the worker: an fsspec client made before a fork must not be used after it


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


def _decode_image(row: dict[str, Any], sample: dict[str, bytes], preprocess: SplitPreprocess):
    """Fills the row's image columns; returns (preprocess head, phash thumbnail) or None."""
    data = next((sample[s] for s in IMAGE_EXTENSIONS if s in sample), None)
    if data is None:
        row["error"] = "no image member"
        return None
    row["image_sha256"] = hashlib.sha256(data).hexdigest()
    try:
        rgb = open_rgb(data)
    except ImageTooLarge as exc:
        row["error"] = str(exc)
        return None
    except Exception as exc:  # noqa: BLE001 - any undecodable image is a row with a reason
        row["error"] = f"undecodable image: {type(exc).__name__}: {str(exc)[:120]}"
        return None
    row["width"], row["height"] = rgb.size
    thumbnail = phash_thumbnail(rgb)
    row["pixels"], row["colours"] = pixel_thumbnail(thumbnail), colour_grid(rgb)
    return preprocess.apply_head(rgb), thumbnail


def decode_chunk(samples: list[dict[str, bytes]], preprocess: SplitPreprocess, tokenizer: Any) -> dict[str, Any]:
    """Rows (uid, caption, error, sha256, phash, pixel and colour thumbnails, size, token
    counts), the image batch of the
    decodable ones (None if none), their mask, and the token ids of every caption."""
    rows: list[dict[str, Any]] = []
    heads, thumbnails = [], []
    for sample in samples:
        meta = json.loads(sample["json"]) if "json" in sample else {}
        caption = sample["txt"].decode("utf-8", "replace") if "txt" in sample else (meta.get("caption") or "")
        row: dict[str, Any] = {"uid": meta.get("uid"), "caption": caption, "error": None,
                               "image_sha256": None, "phash": None, "width": None, "height": None,
                               "pixels": None, "colours": None}
        decoded = _decode_image(row, sample, preprocess)
        if decoded is not None:
            heads.append(decoded[0])
            thumbnails.append(decoded[1])
        rows.append(row)
    ok = [row["error"] is None for row in rows]
    for row, value in zip((r for r in rows if r["error"] is None), phash_batch(np.stack(thumbnails)) if thumbnails else []):
        row["phash"] = int(value)
    context_length = getattr(tokenizer, "context_length", 77)
    texts, counts = tokenize_batch(tokenizer, [r["caption"] for r in rows], lambda c: caption_token_count(tokenizer, c))
    for row, count in zip(rows, counts):
        row["caption_tokens"] = count
        row["caption_truncated"] = count > context_length
    return {"rows": rows, "ok": ok, "texts": texts, "images": preprocess.finish(heads) if heads else None}


class ChunkedShards(torch.utils.data.IterableDataset):
    """Yields one decoded chunk (a batch) at a time: (shard, first_index, rows, keys)."""

    def __init__(self, jobs: list[ShardJob], batch_size: int, preprocess: Callable, tokenizer: Any) -> None:
        self.jobs = jobs
        self.batch_size = batch_size
        self.preprocess = SplitPreprocess(preprocess)
        self.tokenizer = tokenizer

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        if len(self.jobs) >= workers:
            # Whole shards per worker: each tar is parsed once (tarfile's header parsing
            # costs as much as decoding a small image), and chunks are still the same batches.
            for job in self.jobs[worker::workers]:
                total = 0
                for first, chunk in self._chunks(job):
                    yield self._decode(job.shard, first, chunk)
                    total = first + len(chunk)
                yield {"shard": job.shard, "end": True, "total": total}
            return
        # Fewer shards than workers: share out the chunks, each worker reading every tar.
        counter = 0
        for job in self.jobs:
            total = 0
            for first, chunk in self._chunks(job):
                if counter % workers == worker:
                    yield self._decode(job.shard, first, chunk)
                counter += 1
                total = first + len(chunk)
            if worker == 0:  # tells the consumer the shard's size without reading the tar again
                yield {"shard": job.shard, "end": True, "total": total}

    def _chunks(self, job: ShardJob) -> Iterator[tuple[int, list[tuple[str, dict]]]]:
        """(index of the chunk's first sample, its samples) for consecutive batch_size samples."""
        chunk: list[tuple[str, dict]] = []
        first = 0
        for index, sample in enumerate(iter_tar_samples(as_path(job.tar))):
            if not chunk:
                first = index
            chunk.append(sample)
            if len(chunk) == self.batch_size:
                yield first, chunk
                chunk = []
        if chunk:
            yield first, chunk

    def _decode(self, shard: str, first: int, chunk: list) -> dict:
        decoded = decode_chunk([sample for _, sample in chunk], self.preprocess, self.tokenizer)
        return {"shard": shard, "first": first, "keys": [k for k, _ in chunk], "end": False, **decoded}
