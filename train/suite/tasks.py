"""The tasks of a suite and each one's headline metric.

A task is a task folder (shards.task_folder). Its headline is, first, what the folder's
main_metric.txt names; else DataComp's for a folder DataComp names (datacomp_tasks.yaml,
matched by folder name: `wds_vtab-caltech101_test`, `vtab-caltech101` and `caltech101` all
find vtab/caltech101); else acc1 for classification and the mean of the two recalls at 1
for retrieval, as DataComp defaults.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from clikit.errors import UserError
from shards.task_folder import CLASSIFICATION, RETRIEVAL, TRAIN, TaskFolder, is_task_folder, read_task_folder

RECALL_KS = (1, 5, 10)
# Metric names as clip_benchmark reports them (lp_: its linear probe's), and DataComp's mean_recall@1.
CLASSIFICATION_METRICS = ("acc1", "acc5", "mean_per_class_recall")
PROBE_METRICS = tuple(f"lp_{name}" for name in CLASSIFICATION_METRICS)
RETRIEVAL_METRICS = tuple(f"{way}_retrieval_recall@{k}" for way in ("image", "text") for k in RECALL_KS) + (
    "mean_recall@1",)
DEFAULT_MAIN_METRIC = {CLASSIFICATION: "acc1", RETRIEVAL: "mean_recall@1"}
DATACOMP_TABLE = Path(__file__).with_name("datacomp_tasks.yaml")


@lru_cache(maxsize=1)
def datacomp_tasks() -> dict[str, dict[str, str]]:
    return yaml.safe_load(DATACOMP_TABLE.read_text())


def datacomp_key(folder_name: str) -> str | None:
    """The DataComp task a folder holds, from its name (None when it names none)."""
    name = folder_name.removeprefix("wds_").removesuffix("_test")
    for key in datacomp_tasks():
        if name in (key, key.replace("/", "-"), key.rsplit("/", 1)[-1]):
            return key
    return None


@dataclass(frozen=True)
class SuiteTask:
    folder: TaskFolder
    main_metric: str
    datacomp: str | None  # the DataComp task key, when the folder is one

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def kind(self) -> str:
        return self.folder.kind

    @property
    def probe(self) -> bool:
        """A linear probe runs where the task holds a training split."""
        return self.kind == CLASSIFICATION and TRAIN in self.folder.splits

    def metrics(self) -> tuple[str, ...]:
        """The metrics this task reports."""
        if self.kind == RETRIEVAL:
            return RETRIEVAL_METRICS
        names = CLASSIFICATION_METRICS + (PROBE_METRICS if self.probe else ())
        # Top-5 of fewer than 5 classes is no figure (clip_benchmark reports it as NaN).
        return tuple(n for n in names if len(self.folder.classnames) >= 5 or not n.endswith("acc5"))


def load_task(path: str | Path) -> SuiteTask:
    folder = read_task_folder(path)
    key = datacomp_key(folder.name)
    main = folder.main_metric or (datacomp_tasks()[key]["main_metric"] if key else DEFAULT_MAIN_METRIC[folder.kind])
    task = SuiteTask(folder, main, key)
    if main not in task.metrics():
        raise UserError(f"{folder.path}: headline metric {main!r} is not one this task reports; "
                        f"use one of {', '.join(task.metrics())}")
    return task


def load_suite(path: str | Path) -> list[SuiteTask]:
    """Every task folder directly in a suite folder, by name; other sub-folders are refused."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"--suite {path}: no such directory; give a folder of task folders")
    if is_task_folder(path):
        raise UserError(f"--suite {path} is one task folder; evaluate it with --task {path}")
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    strays = [p.name for p in folders if not is_task_folder(p)]
    if strays:
        raise UserError(f"--suite {path}: {strays[0]} is not a task folder (no test/nshards.txt); "
                        "a suite folder holds only task folders")
    if not folders:
        raise UserError(f"--suite {path} holds no task folders; build some with `curate eval-suite`")
    return [load_task(p) for p in folders]
