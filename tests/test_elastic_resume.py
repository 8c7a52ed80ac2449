"""Elastic resume (`--streams N`): the global batches are the same at any world size and
number of loader workers, a resume takes them on from the per-stream cursor, and a run
checkpointed at W processes and resumed at W' trains the weights of the run never stopped
within rounding (the same samples in the same rows; DDP only regroups the sums)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_train_run import ENV, ROOT

STREAMS, BATCH = 4, 8


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from shapes_data import make_shape_shards

    root = tmp_path_factory.mktemp("elastic")
    make_shape_shards(root / "data", 90, per_shard=15, corrupt=2)  # 6 shards >= 4 streams
    return root


def global_batches(shards: list[str], world_size: int, workers: int, steps: int,
                   cursor: list[int] | None = None) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[int]]:
    """The first `steps` global batches (images, token ids) of W ranks' loaders run side by side
    in this process, each rank's rows after the rank before's, and the stream cursor after them."""
    import open_clip

    from train.data import StreamConfig
    from train.streams import joined_batches

    tokenizer = open_clip.get_tokenizer("tiny-vit-32")
    ranks = [joined_batches(StreamConfig(
        shards=shards, batch_size=BATCH // world_size, image_size=32, context_length=77, tokenizer=tokenizer,
        seed=5, rank=rank, world_size=world_size, num_workers=workers, shuffle_buffer=10, streams=STREAMS,
        positions=list(cursor or []))) for rank in range(world_size)]
    batches, cursor = [], list(cursor or [0] * STREAMS)
    for _ in range(steps):
        local = [next(rank) for rank in ranks]
        batches.append((torch.cat([b["images"] for b in local]), torch.cat([b["texts"] for b in local])))
        for b in local:
            for stream, position in b["positions"].items():
                cursor[stream] = position
    return batches, cursor


def same(a: list[tuple[torch.Tensor, torch.Tensor]], b: list[tuple[torch.Tensor, torch.Tensor]]) -> bool:
    return len(a) == len(b) and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


def test_global_batches_do_not_depend_on_world_size_and_resume_from_the_stream_cursor(shapes):
    """13 global batches of 8 (more than one epoch: 88 readable samples) are bitwise the same at
    (W, workers) = (1, 0), (1, 2), (2, 1), (4, 1); 5 of them at W=2, then the rest resumed from
    the cursor at W=1 and W=4, are the same again."""
    from train.sources import resolve_shards

    shards = resolve_shards(shapes / "data")
    steps = 13
    reference, end = global_batches(shards, 1, 0, steps)
    assert len({tuple(texts.tolist()[0]) for _, texts in reference}) > 1  # the batches are not all alike
    for world_size, workers in ((1, 2), (2, 1), (4, 1)):
        got, got_end = global_batches(shards, world_size, workers, steps)
        assert same(got, reference) and got_end == end, (world_size, workers)
    first, cursor = global_batches(shards, 2, 1, 5)
    assert 5 * BATCH // STREAMS <= min(cursor) and sum(cursor) >= 5 * BATCH  # raw items read, skips included
    for world_size, workers in ((1, 0), (4, 1)):
        rest, rest_end = global_batches(shards, world_size, workers, steps - 5, cursor)
        assert same(first + rest, reference) and rest_end == end, (world_size, workers)
