"""kill -9 at seeded random points of every stage (download, score, annotate, dedup, cluster,
filter, export, train, train with --eval), then the same command again (train: with --resume): each resumes to the bytes of
a run never stopped, and leaves no temporary file behind (shards/atomic.py's rule).

The stages are chained as the pipeline runs them: each stage's uninterrupted reference
output is the next stage's input. Each stage runs in a fixed workspace folder (the
reference is moved aside when it finishes), so the paths the outputs record are the same
in every run. A kill lands at a random fraction of the stage's real work, measured in the
reference from the moment the work shows (its first output, or its first progress line)
to the moment its last output appears; the fractions are seeded and spread so that one of
them comes early. A kill that lands before the work or after it is a valid case too, but
each stage must have been caught part-way at least once.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq
import pytest

from shards.atomic import leftovers
from test_score import _score_cmd, weights  # noqa: F401 - weights is the tiny model's fixture
from test_train_run import COMMON, ENV, ROOT

SEED = 9
SPREAD = (0.1, 0.9)  # kill points: this share of the reference's work, one per stratum
DEDUP = "exact+phash-pixels"  # the default method's output name
STAGES = ["download", "score", "annotate", "dedup", "cluster", "filter", "export", "train", "train-eval"]


def _drop(keys: tuple[str, ...]) -> Callable[[Path], object]:
    """A JSON file compared without `keys`."""
    return lambda path: {k: v for k, v in json.loads(path.read_bytes()).items() if k not in keys}


def _jsonl_without(keys: tuple[str, ...]) -> Callable[[Path], object]:
    return lambda path: [{k: v for k, v in json.loads(line).items() if k not in keys}
                         for line in path.read_text().splitlines()]


def _subset_without_created(path: Path) -> object:
    """subsets/NAME.parquet: the uids and the provenance, less the time the subset was made
    and the modification times of the files it read (`inputs`: each copy of the pool has its own)."""
    table = pq.read_table(path)
    metadata = dict(table.schema.metadata)
    provenance = json.loads(metadata.pop(b"clipcurate"))
    provenance.pop("created")
    provenance.pop("inputs")
    return table.replace_schema_metadata(None).to_pylist(), metadata, provenance


@dataclass
class Stage:
    """One stage's command, the folder it writes (`tree`) and how to watch it."""

    name: str
    command: Callable[[Path], list[str]]  # argv, given the workspace folder
    kills: int
    started: Callable[[Path, Path], bool]  # (tree, log): the real work has begun
    finished: Callable[[Path], bool]  # the stage's last output is there
    base: Path | None = None  # copied (with mtimes) into the workspace before each run
    resume: tuple[str, ...] = ()  # added to the rerun after a kill
    # Files that hold wall-clock times: glob -> what of the file is compared (all but the times)
    timed: dict[str, Callable[[Path], object]] = field(default_factory=dict)


@dataclass
class Reference:
    tree: Path
    work_s: float  # from the first sign of work to the last output


def _count(folder: Path, pattern: str) -> int:
    return len(list(folder.glob(pattern)))


def _start(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as handle:
        return subprocess.Popen(argv, cwd=ROOT, env=ENV, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _poll_until(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 300) -> None:
    """Wait until `ready()` or until the process ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready() or proc.poll() is not None:
            return
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"{proc.args} neither got there nor ended in {timeout}s")


def _finish(proc: subprocess.Popen, log: Path) -> None:
    rc = proc.wait(timeout=300)
    assert rc == 0, f"{' '.join(map(str, proc.args))} exited {rc}:\n{log.read_text(errors='replace')[-3000:]}"


class Chain:
    """The stages over one demo pool, each reference built once, from the one before."""

    def __init__(self, root: Path, demo_dir: Path, weights_path: Path):
        self.root, self.demo_dir, self.weights = root, demo_dir, weights_path
        self.refs: dict[str, Reference] = {}

    def stage(self, name: str) -> Stage:
        """The stage `name`; its input is the reference of the stage before (built here if need be)."""
        if name == "download":
            return Stage(
                name,
                lambda w: [sys.executable, "-m", "curate", "download", str(self.demo_dir / "metadata.parquet"), str(w),
                           "--preset", "laion", "--allow-private", "--samples-per-shard", "100", "--threads", "16",
                           "--image-size", "64"],
                kills=2,
                started=lambda w, log: _count(w, "shards/.0*") + _count(w, "shards/0*.tar") > 0,
                finished=lambda w: (w / "pool.json").is_file(),
                # img2dataset's per-shard stats time the shard; pool.json dates the run
                timed={"shards/*_stats.json": _drop(("duration", "start_time", "end_time")),
                       "pool.json": _drop(("created", "updated"))},
            )
        if name == "score":
            return Stage(
                name, lambda w: _score_cmd(w, self.weights, "t"), kills=2, base=self.reference("download").tree,
                started=lambda w, log: (w / "scores/t/model.json").is_file(),
                finished=lambda w: _count(w, "scores/t/0*.parquet") == _count(w, "shards/*.tar"),
            )
        if name == "annotate":
            return Stage(
                name, lambda w: [sys.executable, "-m", "curate", "annotate", str(w), "--quiet",
                                 "--classes", str(self.demo_dir / "eval")],
                kills=2, base=self.reference("download").tree,
                started=lambda w, log: (w / "annotations/annotations.json").is_file(),
                finished=lambda w: _count(w, "annotations/0*.parquet") == _count(w, "shards/*.tar"),
            )
        if name == "cluster":
            return Stage(
                # --near embeds the demo's eval images with the scores tag's model: the work a kill lands in
                name, lambda w: [sys.executable, "-m", "curate", "cluster", str(w), "--scores", "t",
                                 "--near", str(self.demo_dir / "eval")],
                kills=2, base=self.reference("score").tree,
                started=lambda w, log: b"cluster: " in log.read_bytes(),  # its first progress line
                finished=lambda w: (w / "clusters/t/summary.json").is_file(),
                timed={"clusters/t/summary.json": _drop(("seconds",))},
            )
        if name == "dedup":
            return Stage(
                name, lambda w: [sys.executable, "-m", "curate", "dedup", str(w), "--scores", "t"],
                kills=3, base=self.reference("score").tree,
                started=lambda w, log: b"dedup: " in log.read_bytes(),  # its first progress line
                finished=lambda w: (w / "dedup" / DEDUP / "summary.json").is_file(),
                timed={f"dedup/{DEDUP}/summary.json": _drop(("seconds",))},  # seconds per method
            )
        if name == "filter":
            return Stage(
                name,
                lambda w: [sys.executable, "-m", "curate", "filter", str(w), "--top", "60%", "--name", "top",
                           "--dedup", DEDUP],
                kills=3, base=self.reference("dedup").tree,
                started=lambda w, log: True,  # nothing shows before the subset itself: from the start
                finished=lambda w: (w / "subsets/top.parquet").is_file(),
                timed={"subsets/top.parquet": _subset_without_created},  # "created": when it was made
            )
        if name == "export":
            pool = self.reference("filter").tree
            return Stage(
                name,
                lambda w: [sys.executable, "-m", "curate", "export", str(pool), str(w), "--subset", "top",
                           "--samples-per-shard", "4"],
                kills=2,
                started=lambda w, log: (w / ".export-plan.json").is_file() or (w / "manifest.json").is_file(),
                finished=lambda w: (w / "manifest.json").is_file(),
            )
        assert name in ("train", "train-eval"), name
        data = self.reference("export").tree
        # train-eval: also evaluated every 2 steps, so a resume must drop evals.jsonl's lines
        # logged after its checkpoint, as it drops metrics.jsonl's (no line twice, none lost)
        evals = ["--eval", str(self.demo_dir / "eval"), "--eval-every", "2"] if name == "train-eval" else []
        return Stage(
            name,
            lambda w: [sys.executable, "-m", "train", "run", "--data", str(data), "--out", str(w), "--samples", "96",
                       "--checkpoint-every", "2", *evals, *COMMON],
            kills=2, resume=("--resume",),  # which starts afresh when the kill came before a checkpoint
            started=lambda w, log: (w / "config.yaml").is_file(),
            finished=lambda w: (w / "summary.json").is_file(),
            timed={"metrics.jsonl": _jsonl_without(("samples/s", "data-wait fraction"))},  # throughput
        )

    def workspace(self, stage: Stage) -> Path:
        """The stage's fixed folder, fresh: absent, or a copy of its input with the input's mtimes."""
        tree = self.root / stage.name / "work"
        shutil.rmtree(tree, ignore_errors=True)
        if stage.base is not None:
            shutil.copytree(stage.base, tree)
        return tree

    def log(self, stage: Stage, name: str) -> Path:
        folder = self.root / stage.name / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{name}.log"

    def reference(self, name: str) -> Reference:
        """The stage run once, uninterrupted, timed; moved out of the workspace."""
        if name not in self.refs:
            stage = self.stage(name)
            tree, log = self.workspace(stage), self.log(stage, "reference")
            proc = _start(stage.command(tree), log)
            _poll_until(proc, lambda: stage.started(tree, log))
            t_work = time.monotonic()
            _poll_until(proc, lambda: stage.finished(tree))
            work_s = time.monotonic() - t_work
            _finish(proc, log)
            self.refs[name] = Reference(tree.rename(self.root / name / "reference"), work_s)
        return self.refs[name]


@pytest.fixture(scope="module")
def chain(tmp_path_factory, demo_dir, weights) -> Chain:  # noqa: F811 - weights: test_score's fixture
    return Chain(tmp_path_factory.mktemp("kill9"), demo_dir, weights)


def kill_points(name: str, k: int) -> list[float]:
    """k seeded fractions of the work, one in each of k equal strata of SPREAD."""
    rng = random.Random(f"{SEED}-{name}")
    lo, hi = SPREAD
    return [lo + (hi - lo) * (i + rng.random()) / k for i in range(k)]


def _files(tree: Path) -> dict[str, Path]:
    return {str(p.relative_to(tree)): p for p in sorted(tree.rglob("*"))}


def assert_same_outputs(stage: Stage, reference: Path, tree: Path, what: str) -> None:
    """Every file and folder of the reference and no other; the same bytes, or for files
    that hold wall-clock times the same once those are dropped; no temporary file anywhere."""
    left = [p for d in [tree, *(p for p in tree.rglob("*") if p.is_dir())] for p in leftovers(d)]
    assert not left, (what, left)
    ref_files, files = _files(reference), _files(tree)
    assert sorted(files) == sorted(ref_files), what
    for name, path in ref_files.items():
        if path.is_dir():
            assert files[name].is_dir(), (what, name)
            continue
        normalise = next((n for pattern, n in stage.timed.items() if Path(name).match(pattern)), None)
        if normalise is None:
            assert files[name].read_bytes() == path.read_bytes(), (what, name)
        else:
            assert normalise(files[name]) == normalise(path), (what, name)


@pytest.mark.parametrize("name", STAGES)
def test_kill9_at_random_points_resumes_to_identical_outputs(chain, name):
    reference = chain.reference(name)
    stage = chain.stage(name)
    caught = []
    for i, fraction in enumerate(kill_points(name, stage.kills)):
        tree, log = chain.workspace(stage), chain.log(stage, f"kill{i}")
        proc = _start(stage.command(tree), log)
        _poll_until(proc, lambda: stage.started(tree, log))
        time.sleep(fraction * reference.work_s)
        finished = stage.finished(tree)
        with contextlib.suppress(ProcessLookupError):  # it may have ended (and been reaped) already
            os.killpg(proc.pid, signal.SIGKILL)
        killed = proc.wait() == -signal.SIGKILL
        if not killed:
            _finish(proc, log)  # it ended by itself: it must have succeeded
        caught.append((round(fraction, 3), killed and not finished))
        print(f"{name} kill {i} at {fraction:.2f} of {reference.work_s:.2f}s: killed={killed} finished={finished}, "
              f"{len(_files(tree))} entries")
        resumed = chain.log(stage, f"resume{i}")
        _finish(_start(stage.command(tree) + list(stage.resume), resumed), resumed)
        assert_same_outputs(stage, reference.tree, tree, f"{name}: killed at {fraction:.2f} of the work")
    # (fraction, killed part-way: killed while running, its last output not there yet) per point
    assert any(part_way for _, part_way in caught), (name, reference.work_s, caught)
