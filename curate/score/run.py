"""Scoring a pool shard by shard: scores/TAG/NNNNN.parquet and embeddings/TAG/NNNNN.npy."""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from clikit.errors import UserError
from curate.download.pool import require_finished_shards
from curate.score.reader import ChunkedShards, ShardJob
from curate.score.seed_model import SeedModel, load_seed_model
from zoo.distributed import barrier, init_distributed
from shards.atomic import replacing, write_json_atomic
from shards.layout import Pool
from shards.reader import scan_tar
from shards.storage import StoragePath, open_root, parquet_metadata, parquet_schema, read_parquet

SCORE_SCHEMA = pa.schema([
    ("uid", pa.string()), ("key", pa.string()), ("clip_score", pa.float32()), ("error", pa.string()),
    ("image_sha256", pa.string()), ("phash", pa.uint64()), ("width", pa.int32()), ("height", pa.int32()),
    ("caption_tokens", pa.int32()), ("caption_truncated", pa.bool_()),
    ("image_norm", pa.float32()), ("text_norm", pa.float32()),
    # dedup's phash-pixels: 16x16 grey thumbnail and 4x4 mean colours (curate.score.batched)
    ("pixels", pa.binary(256)), ("colours", pa.binary(48)),
])


@dataclass
class ScoreSettings:
    batch_size: int = 256
    workers: int | None = None  # DataLoader workers; default: default_workers()
    threads: int | None = None  # torch threads for the model; default: torch's own choice
    text_embeddings: bool = False
    device: str = "auto"
    progress: bool = True


@dataclass
class ScoreResult:
    tag: str
    shards_scored: int
    shards_skipped: int
    rows: int
    seconds: float
    dim: int
    failures: int = 0
    files: list[str] = field(default_factory=list)


def _check_tag(tag: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", tag):
        raise UserError(f"tag {tag!r} must be letters, digits, '.', '_' or '-' (it names a folder)")


def shard_done(pool: Pool, tag: str, shard: str, text: bool) -> bool:
    """The shard's files are all there, and its scores have every column of SCORE_SCHEMA (a
    shard scored by an older clipcurate, without dedup's pixel columns, is scored again)."""
    needed = [pool.scores_parquet(tag, shard), pool.image_embeddings(tag, shard)]
    if text:
        needed.append(pool.text_embeddings(tag, shard))
    if not all(p.exists() for p in needed):
        return False
    try:
        names = set(parquet_schema(pool.scores_parquet(tag, shard)).names)
    except (OSError, pa.ArrowInvalid):
        return False  # unreadable: score it again (written atomically, so this is rare)
    return names >= set(SCORE_SCHEMA.names)


def _write_model_json(path: StoragePath, seed: SeedModel, dim: int, tag: str) -> None:
    info = {**seed.describe(), "dim": dim, "tag": tag}
    if path.exists():
        old = json.loads(path.read_text())
        if (old.get("model"), old.get("weights")) != (info["model"], info["weights"]):
            raise UserError(
                f"scores tag {tag!r} already holds scores from {old.get('model')} ({old.get('weights')}); "
                "pass another --tag, or delete that folder to rescore"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, info, sort_keys=True)


class _ShardBuffer:
    """Chunks of one shard as they arrive (in any order); complete when all rows are in."""

    def __init__(self) -> None:
        self.chunks: dict[int, tuple] = {}
        self.received = 0
        self.total: int | None = None

    def complete(self) -> bool:
        return self.total is not None and self.received == self.total


def _encode_chunk(seed: SeedModel, item: dict, device: torch.device, dim: int, text_embeddings: bool):
    """Scores and embeddings of one chunk; failed images get a null score and zero embedding."""
    n = len(item["rows"])
    ok = torch.tensor(item["ok"], dtype=torch.bool)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), autocast:
        text = seed.model.encode_text(item["texts"].to(device, non_blocking=True)).float()
        image_emb = torch.zeros(n, dim, device=device)
        image_norm = torch.full((n,), float("nan"), device=device)
        if item["images"] is not None:
            image = seed.model.encode_image(item["images"].to(device, non_blocking=True)).float()
            image_norm[ok.to(device)] = image.norm(dim=-1)
            image_emb[ok.to(device)] = torch.nn.functional.normalize(image, dim=-1)
    text_norm = text.norm(dim=-1)
    text_emb = torch.nn.functional.normalize(text, dim=-1)
    score = (image_emb * text_emb).sum(dim=-1)
    score[~ok.to(device)] = float("nan")
    return (score.cpu().numpy(), image_emb.cpu().numpy().astype(np.float16), image_norm.cpu().numpy(),
            text_norm.cpu().numpy(), text_emb.cpu().numpy().astype(np.float16) if text_embeddings else None)


def _save_npy(path: StoragePath, array: np.ndarray) -> None:
    with replacing(path) as tmp, open(tmp, "wb") as f:  # np.save(tmp) would append ".npy" to the name
        np.save(f, array)


def _write_shard(buffer: _ShardBuffer, shard: str, pool: Pool, tag: str, dim: int, text: bool) -> int:
    rows, images, texts = [], [], []
    for first in sorted(buffer.chunks):
        keys, meta, (score, image_emb, image_norm, text_norm, text_emb) = buffer.chunks[first]
        for i, (key, row) in enumerate(zip(keys, meta)):
            valid = row["error"] is None
            rows.append({
                "uid": row["uid"], "key": key, "clip_score": float(score[i]) if valid else None, "error": row["error"],
                "image_sha256": row["image_sha256"], "phash": row["phash"], "width": row["width"], "height": row["height"],
                "caption_tokens": row["caption_tokens"], "caption_truncated": row["caption_truncated"],
                "image_norm": float(image_norm[i]) if valid else None, "text_norm": float(text_norm[i]),
                "pixels": row["pixels"], "colours": row["colours"],
            })
        images.append(image_emb)
        if text:
            texts.append(text_emb)
    image_matrix = np.concatenate(images) if images else np.zeros((0, dim), np.float16)
    # Embeddings first, parquet last: the parquet's presence marks the shard finished.
    _save_npy(pool.image_embeddings(tag, shard), image_matrix)
    if text:
        text_matrix = np.concatenate(texts) if texts else np.zeros((0, dim), np.float16)
        _save_npy(pool.text_embeddings(tag, shard), text_matrix)
    table = pa.Table.from_pylist(rows, schema=SCORE_SCHEMA)
    with replacing(pool.scores_parquet(tag, shard)) as tmp:
        pq.write_table(table, tmp)
    return sum(r["error"] is not None for r in rows)


def _success_rows(pool: Pool, shards: list[str]) -> int:
    total = 0
    for shard in shards:
        status = read_parquet(pool.shard_parquet(shard), columns=["status"])["status"].to_pylist()
        total += sum(s == "success" for s in status)
    return total


def split_by_size(sizes: dict[str, int], world_size: int) -> list[list[str]]:
    """Shards shared out to ranks so their loads even out: largest first, each to the rank with
    the least work so far (ties to the lower rank); every rank computes the same answer. A
    rank's load is at most the smallest one's plus the largest shard, so no rank idles behind
    a static every-Nth split while another scores the big shards."""
    loads, out = [0] * world_size, [[] for _ in range(world_size)]
    for shard in sorted(sizes, key=lambda s: (-sizes[s], s)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        out[rank].append(shard)
        loads[rank] += sizes[shard]
    return [sorted(shards) for shards in out]


def score_pool(
    pool: str | StoragePath,
    *,
    model: str | None = None,
    pretrained: str | None = None,
    checkpoint: str | None = None,
    tag: str | None = None,
    settings: ScoreSettings | None = None,
) -> ScoreResult:
    """Score every finished shard of POOL that TAG has not scored yet (see docs/design.md)."""
    settings = settings or ScoreSettings()
    pool = open_root(pool)
    layout = Pool(pool)
    if not layout.is_pool():
        raise UserError(f"{pool} is not a pool folder with shards/ (run `curate download INPUT {pool}` first)")
    all_shards = require_finished_shards(layout)
    if settings.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    ranks = init_distributed(settings.device)  # torchrun's process group, or a single process
    device = ranks.device
    seed = load_seed_model(model, pretrained, checkpoint, device=str(device))
    tag = tag or seed.default_tag
    _check_tag(tag)
    scores_dir, embeddings_dir = layout.scores_dir(tag), layout.embeddings_dir(tag)
    with torch.inference_mode():
        dim = int(seed.model.encode_text(seed.tokenizer(["a"]).to(device)).shape[-1])
    if ranks.rank == 0:
        _write_model_json(layout.model_json(tag), seed, dim, tag)
    scores_dir.mkdir(parents=True, exist_ok=True)
    embeddings_dir.mkdir(parents=True, exist_ok=True)

    # What is left, shared out by rows; a barrier before any rank writes, so every rank saw the
    # same list (a shard finished by a fast rank must not change a slow rank's split).
    left = [s for s in all_shards if not shard_done(layout, tag, s, settings.text_embeddings)]
    sizes = {s: parquet_metadata(layout.shard_parquet(s)).num_rows for s in left} if ranks.world_size > 1 else {}
    pending = split_by_size(sizes, ranks.world_size)[ranks.rank] if ranks.world_size > 1 else left
    barrier(ranks)
    started = time.perf_counter()
    result = ScoreResult(tag=tag, shards_scored=0, shards_skipped=len(all_shards) - len(left), rows=0, seconds=0.0,
                         dim=dim)
    if pending:
        _score_shards(layout, seed, pending, device, dim, settings, result)
    barrier(ranks)
    result.seconds = time.perf_counter() - started
    return result


def _checked_tar(path: StoragePath) -> StoragePath:
    """A shard's tar, refused before any worker reads it if a member name is unsafe or it is cut short."""
    _, problems = scan_tar(path)
    if problems:
        raise UserError(f"pool shard refused: {path}: {problems[0]}; nothing of it was scored "
                        "(re-download it: delete its _stats.json and rerun `curate download`)")
    return path


def default_workers() -> int:
    """Decoding workers: one per core, up to 8.

    Not cores - 1: on a GPU the main process mostly waits for the device, and on a CPU the
    model's threads and the workers share the cores either way; bench/score.py measured
    2 workers 4-25% faster than 1 on 2 cores, with a model cheaper and dearer than decoding.
    """
    return max(1, min(8, os.cpu_count() or 1))


def _score_shards(pool: Pool, seed, pending, device, dim, settings, result) -> None:
    from tqdm import tqdm

    workers = settings.workers if settings.workers is not None else default_workers()
    if settings.threads is not None:
        # With a model cheaper than decoding on a small CPU, fewer model threads leave cores to the workers.
        torch.set_num_threads(settings.threads)
    jobs = [ShardJob(s, str(_checked_tar(pool.shard_tar(s)))) for s in pending]
    dataset = ChunkedShards(jobs, settings.batch_size, seed.preprocess, seed.tokenizer)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda",
        persistent_workers=False, prefetch_factor=4 if workers else None,
    )
    buffers: dict[str, _ShardBuffer] = {s: _ShardBuffer() for s in pending}
    bar = tqdm(total=_success_rows(pool, pending), unit="img", desc=f"score {result.tag}", disable=not settings.progress)
    for item in loader:
        buffer = buffers[item["shard"]]
        if item["end"]:
            buffer.total = item["total"]
        else:
            outputs = _encode_chunk(seed, item, device, dim, settings.text_embeddings)
            buffer.chunks[item["first"]] = (item["keys"], item["rows"], outputs)
            buffer.received += len(item["rows"])
            bar.update(len(item["rows"]))
        if buffer.complete():
            result.failures += _write_shard(buffer, item["shard"], pool, result.tag, dim, settings.text_embeddings)
            result.shards_scored += 1
            result.rows += buffer.total
            result.files.append(str(pool.scores_parquet(result.tag, item["shard"])))
            del buffers[item["shard"]]
    bar.close()
    if buffers:
        raise UserError(f"shards {', '.join(sorted(buffers))} were not fully read; rerun to finish them")
