"""Elastic resume (`--streams N`): the global batches are the same at any world size and
number of loader workers, a resume takes them on from the per-stream cursor, and a run
checkpointed at W processes and resumed at W' trains the weights of the run never stopped
within rounding (the same samples in the same rows; DDP only regroups the sums)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engines import free_port
from test_train_run import ENV, ROOT

STREAMS, BATCH = 4, 8


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from shapes_data import make_shape_shards

    root = tmp_path_factory.mktemp("elastic")
    make_shape_shards(root / "data", 90, per_shard=15, corrupt=6)  # 6 shards >= 4 streams
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
        ok = same(got, reference)
        assert ok and got_end == end, (world_size, workers)
    first, cursor = global_batches(shards, 2, 1, 5)
    assert 5 * BATCH // STREAMS <= min(cursor) and sum(cursor) >= 5 * BATCH  # raw items read, skips included
    for world_size, workers in ((1, 0), (4, 1)):
        rest, rest_end = global_batches(shards, world_size, workers, steps - 5, cursor)
        ok = same(first + rest, reference)
        assert ok and rest_end == end, (world_size, workers)


# One run's arguments (TrainConfig), shared by every leg (a resume must repeat them); workers may change.
RUN = dict(model="tiny-vit-32", batch_size=BATCH, samples="48", streams=STREAMS, checkpoint_every=2, threads=1,
           log_every=1, shuffle_buffer=10)


def train(shapes: Path, out: Path, world_size: int, workers: int, keep_checkpoints: int = 2) -> None:
    """run_training (`train run`), resuming OUT if it holds checkpoints, as W processes on
    127.0.0.1 (gloo): the environment torchrun would give them, without its agent's start-up."""
    cfg = dict(RUN, data=str(shapes / "data"), out=str(out), workers=workers, progress=False,
               resume=(out / "checkpoints").is_dir(), keep_checkpoints=keep_checkpoints)
    code = ("import sys, json; from train.config import TrainConfig; from train.loop import run_training; "
            "run_training(TrainConfig(**json.loads(sys.argv[1])))")
    port = str(free_port())
    ranks = [subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(cfg)], cwd=ROOT, stderr=subprocess.PIPE, text=True,
        env=dict(ENV, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                 LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
        for rank in range(world_size)]
    for proc in ranks:
        _, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr[-3000:]


def resumed_from(source: Path, step: int, out: Path) -> Path:
    """A copy of run SOURCE as it stood after checkpoint STEP (later checkpoints and final files gone)."""
    shutil.copytree(source, out)
    for later in (out / "checkpoints").glob("step_*.pt"):
        if int(later.stem.split("_")[1]) > step:
            later.unlink()
    for name in ("final.pt", "summary.json"):
        (out / name).unlink(missing_ok=True)
    return out


def last_checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "step_00000006.pt", map_location="cpu", weights_only=True)


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_run_resumed_at_another_world_size_trains_the_uninterrupted_runs_weights(shapes, tmp_path):
    """6 steps of 8 at W=1, uninterrupted (checkpoints at 2, 4, 6); the same resumed from step 2 at
    W=2 (1 -> 2), and that run's step-4 checkpoint resumed at W=1 and at W=4 (2 -> 1, 2 -> 4). Every
    resumed run ends at the uninterrupted one's stream cursor (bitwise: the same raw samples read,
    unreadable ones included), with every step's loss within 1e-5 and the weights within 1e-4
    (measured: see docs/design.md). `clip` draws nothing at random in the model; a strategy that
    does (flip, clip-aug) would draw differently after a change of W."""
    reference = tmp_path / "w1"
    train(shapes, reference, 1, 0, keep_checkpoints=3)
    two = resumed_from(reference, 2, tmp_path / "w1-w2")
    train(shapes, two, 2, 1)
    one, four = resumed_from(two, 4, tmp_path / "w2-w1"), resumed_from(two, 4, tmp_path / "w2-w4")
    train(shapes, one, 1, 2)
    train(shapes, four, 4, 1)

    expected = last_checkpoint(reference)
    cursor = expected["data"]["stream_positions"]
    assert sum(cursor) > 6 * BATCH and expected["skipped"] > 0  # unreadable samples were read and skipped
    weights = expected["state_dict"]
    initial = torch.load(reference / "checkpoints" / "step_00000002.pt", weights_only=True)["state_dict"]
    assert max(float((weights[k] - initial[k]).abs().max()) for k in weights) > 1e-3  # training moved them
    for run in (two, one, four):
        got = last_checkpoint(run)
        assert got["data"]["stream_positions"] == cursor and got["skipped"] == expected["skipped"], run.name
        assert losses(run) == pytest.approx(losses(reference), abs=1e-5), run.name
        worst = max(float((got["state_dict"][k] - weights[k]).abs().max()) for k in weights)
        print(f"{run.name}: max |dw| {worst:.2g}")
        assert worst <= 1e-4, run.name


def test_what_cannot_resume_elastically_is_refused_in_one_line(tmp_path):
    """Streams that do not split over the processes, the batch or the workers; a run started
    without --streams resumed at another world size or number of workers."""
    from clikit.errors import UserError
    from train.config import TrainConfig
    from train.state import check_same_run
    from train.streams import check_streams

    check_streams(4, 8, 4, 1)
    for args, message in (((4, 8, 3, 1), "must be a multiple of the number of processes .3.; run with a number "
                                         "of processes that divides 4"),
                          ((3, 8, 1, 1), "--streams 3 must divide --batch-size 8"),
                          ((4, 8, 2, 3), "--workers 3 is more than the 2 stream.s. each of the 2 processes reads "
                                         ".--streams 4.; pass --workers 2 or fewer")):
        with pytest.raises(UserError, match=message):
            check_streams(*args)

    def config(**kw):
        return TrainConfig(data="d", out="o", samples="48", **kw).to_dict()

    check_same_run(config(streams=4, world_size=2, workers=1), config(streams=4, world_size=4, workers=0), tmp_path)
    check_same_run(config(world_size=2), config(world_size=2), tmp_path)
    with pytest.raises(UserError, match=r"cannot resume .* with 4 process\(es\) and --workers 2: it was started with 2 "
                                        r"and --workers 2 without --streams .*start a new run with --streams N"):
        check_same_run(config(world_size=2), config(world_size=4), tmp_path)
    with pytest.raises(UserError, match="with 2 process.es. and --workers 1: it was started with 2 and --workers 2"):
        check_same_run(config(world_size=2), config(world_size=2, workers=1), tmp_path)
    with pytest.raises(UserError, match=r"streams differ from the checkpoint \(streams=4\)"):
        check_same_run(config(streams=4), config(world_size=2), tmp_path)
