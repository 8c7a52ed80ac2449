"""The sample order of `--streams N`: the same global batches at any world size, so that a
run resumes at another number of processes (or loader workers).

N fixed streams; stream s is train.data's seeded endless stream of slot s of N (a pure
function of seed, N and s). Global batch g takes the next B/N readable samples of every
stream, rows in stream order. Rank r of W owns the contiguous block of streams
[r*N/W, (r+1)*N/W), i.e. its rows of every global batch; its loader worker w of n reads a
contiguous block of those and yields its piece of every local batch, and the main process
joins the n pieces (the DataLoader hands them over round-robin, so in worker order, which
is stream order). The cursor is the raw items read per stream (skipped unreadable samples
make it differ from g*B/N): the checkpoint keeps all N, whoever read them.
Prior art: mosaicml-streaming's num_canonical_nodes.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch

from clikit.errors import UserError
from train.data import (ConfiguredStream, StreamConfig, StreamError, StreamReader, loader_worker, make_loader,
                        tokenize)


def check_streams(streams: int, batch_size: int, world_size: int, workers: int) -> None:
    """UserError unless N streams can be split evenly over the processes and the global batch,
    and give every loader worker at least one stream."""
    if streams % world_size:
        raise UserError(f"--streams {streams} must be a multiple of the number of processes ({world_size}); "
                        f"run with a number of processes that divides {streams}")
    if batch_size % streams:
        raise UserError(f"--streams {streams} must divide --batch-size {batch_size} (each batch takes the same "
                        "number of samples from every stream)")
    if workers > streams // world_size:
        raise UserError(f"--workers {workers} is more than the {streams // world_size} stream(s) each of the "
                        f"{world_size} processes reads (--streams {streams}); pass --workers {streams // world_size} "
                        "or fewer")


def owned_streams(streams: int, rank: int, world_size: int) -> range:
    """The streams rank `rank` of `world_size` reads: one contiguous block, its rows of every batch."""
    per_rank = streams // world_size
    return range(rank * per_rank, (rank + 1) * per_rank)


def worker_streams(mine: range, worker: int, n_workers: int) -> range:
    """Loader worker `worker`'s contiguous share of a rank's streams (n_workers <= len(mine))."""
    k = len(mine)
    return range(mine.start + worker * k // n_workers, mine.start + (worker + 1) * k // n_workers)


class StreamPieces(ConfiguredStream):
    """One loader worker's piece of every local batch: B/N readable samples from each of its
    streams, in stream order, with `positions` {stream: raw items read}. cfg.streams is N,
    cfg.positions the cursor of all N streams."""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        cfg = self.cfg
        worker, n_workers = loader_worker()
        mine = worker_streams(owned_streams(cfg.streams, cfg.rank, cfg.world_size), worker, n_workers)
        per_stream = cfg.batch_size * cfg.world_size // cfg.streams  # B/N
        try:
            readers = [StreamReader(cfg, s, cfg.streams, cfg.positions[s] if cfg.positions else 0) for s in mine]
            while True:
                images: list[torch.Tensor] = []
                texts: list[str | None] = []
                skipped = 0
                for reader in readers:
                    got_images, got_texts, got_skipped = reader.take(per_stream)
                    images += got_images
                    texts += got_texts
                    skipped += got_skipped
                yield {"images": torch.stack(images), "texts": tokenize(cfg, texts), "skipped": skipped,
                       "positions": {r.slot: r.position for r in readers}}
        except StreamError as exc:
            yield {"error": str(exc)}


def joined_batches(cfg: StreamConfig, pin_memory: bool = False) -> Iterator[dict[str, Any]]:
    """This rank's local batches: one piece from each loader worker, joined in worker order
    (= stream order); a worker's error is passed on as the batch. The DataLoader iterator
    starts here, not at the first batch (the caller decides which RNG its start draws from)."""
    return _joined(iter(make_loader(cfg, pin_memory, StreamPieces)), max(1, cfg.num_workers))


def _joined(pieces: Iterator[dict[str, Any]], n_pieces: int) -> Iterator[dict[str, Any]]:
    while True:
        group = []
        for _ in range(n_pieces):
            piece = next(pieces)
            if "error" in piece:
                yield piece
                return
            group.append(piece)
        texts = [p["texts"] for p in group]
        yield {"images": torch.cat([p["images"] for p in group]),
               "texts": None if texts[0] is None else torch.cat(texts),
               "skipped": sum(p["skipped"] for p in group),
               "positions": {s: q for p in group for s, q in p["positions"].items()}}
