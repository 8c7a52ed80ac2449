"""The pool tree of docs/design.md, named in one place: every stage and training ask here.

    pool/pool.json, _input/, _retry/, shards/NNNNN.{tar,parquet,_stats.json},
    scores/TAG/NNNNN.parquet + model.json, embeddings/TAG/NNNNN.npy (+ .text.npy),
    dedup/NAME/{groups.parquet,summary.json}, subsets/NAME.{parquet,npy},
    annotations/NNNNN.parquet + annotations.json + entries.parquet,
    clusters/NAME/{assignments.parquet,summary.json,centroids.npy}

`Pool(path)` names paths and creates nothing, so it is cheap to build anywhere (a worker,
a test, a reader of another machine's pool); its listings (finished_shards, scored_shards,
score_tags, dedup_names) read the folder and hold the one rule for what is finished.
`path` may be a URL (s3://bucket/pool, any fsspec protocol): the paths are then UPaths
(shards/storage.py), with the same methods, and the same rules hold.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from shards.storage import StoragePath, as_path

# A shard's parquet: 00000.parquet as img2dataset names them (a hand-made 0.parquet counts too).
SHARD_NAME_RE = re.compile(r"^(\d+)\.parquet$")
# A pool shard's stats json, 00000_stats.json: img2dataset writes it last, so it marks the shard finished.
SHARD_STATS_RE = re.compile(r"^(\d+)_stats\.json$")


def shard_parquets(directory: StoragePath) -> list[StoragePath]:
    """The shard parquet files of a folder, sorted by name (which of them are finished is
    Pool.finished_shards' rule for shards/, Pool.scored_shards' for scores/TAG/)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if SHARD_NAME_RE.match(p.name))


def shard_stem(shard: int | str) -> str:
    """A pool shard's stem: 7 -> "00007" (img2dataset's 5-digit naming); a name stays as given."""
    return shard if isinstance(shard, str) else f"{shard:05d}"


@dataclass(frozen=True)
class Pool:
    root: StoragePath

    def __init__(self, root: str | StoragePath) -> None:
        object.__setattr__(self, "root", as_path(root))

    # --- download -------------------------------------------------------------------
    @property
    def pool_json(self) -> Path:
        return self.root / "pool.json"

    @property
    def input_dir(self) -> Path:
        """The normalised copy of the input list that img2dataset reads."""
        return self.root / "_input"

    @property
    def retry_dir(self) -> Path:
        """Where `--retry-failed` downloads failed rows before merging them back."""
        return self.root / "_retry"

    @property
    def shards_dir(self) -> Path:
        return self.root / "shards"

    def shard_tar(self, shard: int | str) -> Path:
        return self.shards_dir / f"{shard_stem(shard)}.tar"

    def shard_parquet(self, shard: int | str) -> Path:
        return self.shards_dir / f"{shard_stem(shard)}.parquet"

    def shard_stats(self, shard: int | str) -> Path:
        return self.shards_dir / f"{shard_stem(shard)}_stats.json"

    def shard_finished(self, shard: int | str) -> bool:
        """The one rule for a finished pool shard: its stats json (img2dataset writes it last,
        in place) parses, and its tar and parquet (renamed into place when whole) exist."""
        try:
            json.loads(self.shard_stats(shard).read_text())
        except (OSError, ValueError):  # missing, or cut short by a kill (UnicodeDecodeError is a ValueError)
            return False
        return self.shard_tar(shard).is_file() and self.shard_parquet(shard).is_file()

    def finished_shards(self) -> list[str]:
        """The stems of the finished pool shards ("00000", ...), sorted: what every later stage reads."""
        if not self.shards_dir.is_dir():
            return []
        stems = (m.group(1) for m in map(SHARD_STATS_RE.match, sorted(p.name for p in self.shards_dir.iterdir())) if m)
        return [stem for stem in stems if self.shard_finished(stem)]

    # --- score ----------------------------------------------------------------------
    @property
    def scores_root(self) -> Path:
        return self.root / "scores"

    def scores_dir(self, tag: str) -> Path:
        return self.scores_root / tag

    def scores_parquet(self, tag: str, shard: int | str) -> Path:
        return self.scores_dir(tag) / f"{shard_stem(shard)}.parquet"

    def scored_shards(self, tag: str) -> list[str]:
        """The stems of the shards scores/TAG has finished, sorted: `curate score` writes a shard's
        parquet last (after its embeddings), so its presence marks the shard done."""
        return [p.stem for p in shard_parquets(self.scores_dir(tag))]

    def model_json(self, tag: str) -> Path:
        """Which seed model wrote scores/TAG and how to load it again."""
        return self.scores_dir(tag) / "model.json"

    @property
    def embeddings_root(self) -> Path:
        return self.root / "embeddings"

    def embeddings_dir(self, tag: str) -> Path:
        return self.embeddings_root / tag

    def image_embeddings(self, tag: str, shard: int | str) -> Path:
        return self.embeddings_dir(tag) / f"{shard_stem(shard)}.npy"

    def text_embeddings(self, tag: str, shard: int | str) -> Path:
        return self.embeddings_dir(tag) / f"{shard_stem(shard)}.text.npy"

    # --- dedup ----------------------------------------------------------------------
    @property
    def dedup_root(self) -> Path:
        return self.root / "dedup"

    def dedup_dir(self, name: str) -> Path:
        return self.dedup_root / name

    def dedup_groups(self, name: str) -> Path:
        return self.dedup_dir(name) / "groups.parquet"

    def dedup_summary(self, name: str) -> Path:
        return self.dedup_dir(name) / "summary.json"

    # --- filter ---------------------------------------------------------------------
    @property
    def subsets_dir(self) -> Path:
        return self.root / "subsets"

    def subset_parquet(self, name: str) -> Path:
        return self.subsets_dir / f"{name}.parquet"

    def subset_npy(self, name: str) -> Path:
        """The same uids in DataComp's subset format."""
        return self.subsets_dir / f"{name}.npy"

    # --- annotate (captions, whatever the seed model) ---------------------------------
    @property
    def annotations_dir(self) -> Path:
        return self.root / "annotations"

    def annotations_parquet(self, shard: int | str) -> Path:
        return self.annotations_dir / f"{shard_stem(shard)}.parquet"

    @property
    def annotations_json(self) -> Path:
        """The settings the annotations were made with (entry lists, detector)."""
        return self.annotations_dir / "annotations.json"

    @property
    def annotation_entries(self) -> Path:
        """The metadata entries and class names the annotations' id lists point into."""
        return self.annotations_dir / "entries.parquet"

    def annotated_shards(self) -> list[str]:
        """The stems of the shards annotations/ has finished (each written whole, then renamed)."""
        return [p.stem for p in shard_parquets(self.annotations_dir)]

    # --- cluster (k-means of a scores tag's image embeddings) ---------------------------
    @property
    def clusters_root(self) -> Path:
        return self.root / "clusters"

    def clusters_dir(self, name: str) -> Path:
        return self.clusters_root / name

    def cluster_assignments(self, name: str) -> Path:
        return self.clusters_dir(name) / "assignments.parquet"

    def cluster_summary(self, name: str) -> Path:
        return self.clusters_dir(name) / "summary.json"

    def cluster_centroids(self, name: str) -> Path:
        """float32 (clusters, dim) unit centroids, row = cluster_id."""
        return self.clusters_dir(name) / "centroids.npy"

    def cluster_names(self) -> list[str]:
        """Cluster runs with a finished assignments.parquet."""
        if not self.clusters_root.is_dir():
            return []
        return sorted(d.name for d in self.clusters_root.iterdir() if self.cluster_assignments(d.name).is_file())

    # --- what is there --------------------------------------------------------------
    def score_tags(self) -> list[str]:
        """Scoring tags: the folders under scores/ that hold shard parquet."""
        if not self.scores_root.is_dir():
            return []
        return sorted(d.name for d in self.scores_root.iterdir() if d.is_dir() and self.scored_shards(d.name))

    def dedup_names(self) -> list[str]:
        """Dedup runs with a finished groups.parquet."""
        if not self.dedup_root.is_dir():
            return []
        return sorted(d.name for d in self.dedup_root.iterdir() if self.dedup_groups(d.name).is_file())

    def is_pool(self) -> bool:
        """True for a folder `curate download` wrote (it has shards/)."""
        return self.shards_dir.is_dir()

    # --- download's own files (appended) ----------------------------------------------
    def input_parquet(self, retry: bool = False) -> Path:
        """The normalised input list img2dataset reads (uid, url, caption, other columns);
        with `retry`, the failed rows `--retry-failed` fetches again (+ original shard, key)."""
        return (self.retry_dir if retry else self.input_dir) / "input.parquet"

    @property
    def retry_pool(self) -> "Pool":
        """The retry folder laid out as a small pool: its shards/ are merged back into ours."""
        return Pool(self.retry_dir)


# A step checkpoint's name: checkpoints/step_00000040.pt (8 digits, so names sort as steps do).
STEP_CHECKPOINT_RE = re.compile(r"^step_(\d+)\.pt$")


@dataclass(frozen=True)
class RunDir:
    """A training run's folder (`train run`/`train mim` --out), every file by name:

        config.yaml, metrics.jsonl, evals.jsonl, eval.json, init.json, summary.json,
        final.pt, checkpoints/step_NNNNNNNN.pt, evals/SUITE.json

    Like `Pool`, it only names paths: cheap to build, creates and checks nothing."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> "RunDir":
        """The run a checkpoint file belongs to: checkpoints/step_*.pt -> its grandparent,
        final.pt (or any other file) -> its parent."""
        file = Path(checkpoint)
        return cls(file.parent.parent if file.parent.name == "checkpoints" else file.parent)

    @property
    def config_yaml(self) -> Path:
        """The run's arguments and what it derived from them; resume compares against it."""
        return self.root / "config.yaml"

    @property
    def metrics_jsonl(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def evals_jsonl(self) -> Path:
        """One line per evaluation during training."""
        return self.root / "evals.jsonl"

    @property
    def eval_json(self) -> Path:
        """The evaluation after the last step (`train eval` writes to evals/, never here)."""
        return self.root / "eval.json"

    @property
    def init_json(self) -> Path:
        """What was loaded into each tower from pretrained weights."""
        return self.root / "init.json"

    @property
    def summary_json(self) -> Path:
        return self.root / "summary.json"

    @property
    def final_pt(self) -> Path:
        return self.root / "final.pt"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints_dir / f"step_{step:08d}.pt"

    def checkpoints(self) -> list[Path]:
        """The step checkpoints there are, oldest first (by step number, not by name)."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.checkpoints_dir.iterdir()
                 if (m := STEP_CHECKPOINT_RE.match(p.name))]
        return [p for _, p in sorted(found)]

    @property
    def evals_dir(self) -> Path:
        """`train eval`'s results (--suite, --task, --eval), kept apart from training's own eval files."""
        return self.root / "evals"

    def suite_eval(self, name: str) -> Path:
        return self.evals_dir / f"{name}.json"

    @property
    def finished(self) -> bool:
        """The run wrote its last files: final.pt and summary.json (a stage seeing both skips it)."""
        return self.final_pt.is_file() and self.summary_json.is_file()

    def is_run(self) -> bool:
        """True for a folder `train run` wrote to (final.pt or checkpoints/)."""
        return self.final_pt.is_file() or self.checkpoints_dir.is_dir()
