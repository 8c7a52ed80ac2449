"""Evaluation task folders in clip_benchmark's webdataset format, the format DataComp's 38
eval sets are published in, named in one place: curate writes them, train reads them.

    TASK/
      classnames.txt                          one class name per line, in label order
      zeroshot_classification_templates.txt   one prompt per line, `{c}` where the class goes
      dataset_type.txt                        optional: "retrieval" (else classification)
      main_metric.txt                         optional (ours): the task's headline metric
      test/nshards.txt                        N
      test/0.tar ... test/{N-1}.tar           KEY.webp|png|jpg|jpeg with KEY.cls (the class
                                              index) or KEY.txt (captions, one a line)
      train/...                               optional: the same for a linear probe's training split

A folder is untrusted input (a download from elsewhere): tar members are read by
shards.reader's rules (plain names, regular files only), and every other fault is one
UserError naming the file and what to fix.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

from clikit.bounded import TEXT_LIST_BYTES, read_text
from clikit.errors import UserError
from shards.atomic import replacing_dir, write_text_atomic
from shards.reader import UnsafeTarError, index_tar
from shards.writer import write_shard

CLASSNAMES = "classnames.txt"
TEMPLATES = "zeroshot_classification_templates.txt"
DATASET_TYPE = "dataset_type.txt"
MAIN_METRIC = "main_metric.txt"
NSHARDS = "nshards.txt"
TEST, TRAIN = "test", "train"

CLASSIFICATION, RETRIEVAL = "classification", "retrieval"
# Image members in the order clip_benchmark's reader picks them (webdataset's to_tuple).
IMAGE_EXTENSIONS = ("webp", "png", "jpg", "jpeg")
SAMPLES_PER_SHARD = 10_000  # clip_benchmark's converter default

Target = Union[int, list[str]]  # a class index, or an image's captions


@dataclass(frozen=True)
class TaskFolder:
    """What a task folder declares (read by read_task_folder; the samples stay on disk)."""

    path: Path
    kind: str  # CLASSIFICATION or RETRIEVAL
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    main_metric: str | None  # main_metric.txt, when the folder names its headline
    splits: tuple[str, ...]  # of TEST, TRAIN: the splits present

    @property
    def name(self) -> str:
        return self.path.name

    def shards(self, split: str = TEST) -> list[Path]:
        return shard_paths(self.path / split)


def is_task_folder(path: Path) -> bool:
    return (path / TEST / NSHARDS).is_file()


def _lines(path: Path) -> list[str]:
    try:
        text = read_text(path, TEXT_LIST_BYTES)
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def shard_paths(split_dir: Path) -> list[Path]:
    """split/0.tar ... split/{N-1}.tar, N from split/nshards.txt; any mismatch is a UserError."""
    count_file = split_dir / NSHARDS
    lines = _lines(count_file) if count_file.is_file() else []
    if len(lines) != 1 or not lines[0].isdigit() or int(lines[0]) < 1:
        raise UserError(f"{count_file} must hold the number of shards (1 or more) on one line")
    count = int(lines[0])
    expected = [split_dir / f"{i}.tar" for i in range(count)]
    missing = [p.name for p in expected if not p.is_file()]
    extra = sorted(p.name for p in split_dir.glob("*.tar") if p not in expected)
    if missing or extra:
        found = "missing " + ", ".join(missing[:3]) if missing else "also " + ", ".join(extra[:3])
        raise UserError(f"{count_file} says {count} shards (0.tar..{count - 1}.tar) but {split_dir} is {found}; "
                        f"fix {NSHARDS} or the tars")
    return expected


def read_task_folder(path: str | Path) -> TaskFolder:
    """The task folder at `path`, checked: its type, class names, templates and splits."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"task folder {path} does not exist")
    if not is_task_folder(path):
        hint = (" (it looks like a class folder: evaluate it with --eval, or convert it with "
                "`curate eval-suite OUT --classes DIR`)" if any(p.is_dir() for p in path.iterdir()) else "")
        raise UserError(f"{path} is not a task folder: {TEST}/{NSHARDS} is missing{hint}")
    kind_file = path / DATASET_TYPE
    kind = (_lines(kind_file) or [CLASSIFICATION])[0].lower() if kind_file.is_file() else CLASSIFICATION
    if kind not in (CLASSIFICATION, RETRIEVAL):
        raise UserError(f"{kind_file} says {kind!r}; this toolkit evaluates {CLASSIFICATION} and {RETRIEVAL} tasks")
    classnames: list[str] = []
    templates: list[str] = []
    if kind == CLASSIFICATION:
        for name in (CLASSNAMES, TEMPLATES):
            if not (path / name).is_file():
                raise UserError(f"{path / name} is missing; a classification task needs {CLASSNAMES} and {TEMPLATES}")
        classnames = _lines(path / CLASSNAMES)
        templates = _lines(path / TEMPLATES)
        if len(classnames) < 2:
            raise UserError(f"{path / CLASSNAMES} names {len(classnames)} class(es); a task needs at least 2")
        unfilled = [t for t in templates if "{c}" not in t]
        if not templates or unfilled:
            raise UserError(f"{path / TEMPLATES}: every prompt needs {{c}} where the class name goes "
                            f"(clip_benchmark's format), e.g. 'a photo of a {{c}}.'" +
                            (f"; {unfilled[0]!r} has none" if unfilled else ""))
    metric_file = path / MAIN_METRIC
    main_metric = (_lines(metric_file) or [None])[0] if metric_file.is_file() else None
    splits = tuple(s for s in (TEST, TRAIN) if (path / s / NSHARDS).is_file())
    for split in splits:
        shard_paths(path / split)
    return TaskFolder(path, kind, tuple(classnames), tuple(templates), main_metric, splits)


def shard_samples(shard: Path, target_ext: str) -> Iterator[tuple[str, str | None, bytes | None, bytes | None]]:
    """(key, image extension, image bytes, target bytes) of each sample of one tar, None for
    a part it lacks; the image is its first member of IMAGE_EXTENSIONS, as clip_benchmark
    picks it. Member
    names are checked first (shards.reader); an unsafe tar is a UserError."""
    try:
        index = index_tar(shard)
    except UnsafeTarError as exc:
        raise UserError(f"{exc}; only tars of plain member names are read: rebuild it") from None
    with open(shard, "rb") as handle:
        for key, members in index.members.items():
            ext = next((e for e in IMAGE_EXTENSIONS if e in members), None)
            yield (key, ext, index.read(handle, key, ext) if ext else None,
                   index.read(handle, key, target_ext) if target_ext in members else None)


def iter_samples(task: TaskFolder, split: str = TEST) -> Iterator[tuple[str, bytes, Target]]:
    """(key, image bytes, class index or captions) in shard and tar order, as clip_benchmark
    reads them; a sample without an image or a target, or a bad target, is a UserError."""
    target_ext = "txt" if task.kind == RETRIEVAL else "cls"
    for shard in task.shards(split):
        for key, _, image, raw in shard_samples(shard, target_ext):
            where = f"{shard}: sample {key!r}"
            if image is None or raw is None:
                raise UserError(f"{where} needs an image ({'/'.join(IMAGE_EXTENSIONS)}) and a .{target_ext} member")
            yield key, image, _target(task, raw, where)


def _target(task: TaskFolder, raw: bytes, where: str) -> Target:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{where}: its target is not UTF-8 text") from None
    if task.kind == RETRIEVAL:
        captions = text.splitlines()  # as clip_benchmark splits them
        if not captions or any(not c.strip() for c in captions):
            raise UserError(f"{where}: every caption line must hold text (found an empty one)")
        return captions
    if not text.strip().isdigit() or int(text) >= len(task.classnames):
        raise UserError(f"{where}: class {text.strip()!r} is not an index into the "
                        f"{len(task.classnames)} names of {CLASSNAMES}")
    return int(text)


def write_task_folder(out: Path, kind: str, splits: dict[str, Iterable[tuple[bytes, str, Target]]], *,
                      classnames: Sequence[str] = (), templates: Sequence[str] = (),
                      main_metric: str | None = None, samples_per_shard: int = SAMPLES_PER_SHARD) -> int:
    """Write a task folder atomically (a temporary folder renamed into place); returns the
    number of test samples. `splits` maps TEST (and TRAIN) to (image bytes, image
    extension, class index or captions) triples; templates use `{c}`."""
    if kind == CLASSIFICATION and any("{c}" not in t for t in templates):
        raise ValueError("templates need {c}")
    counts = {}
    with replacing_dir(out) as tmp:
        if kind == CLASSIFICATION:
            (tmp / CLASSNAMES).write_text("".join(f"{c}\n" for c in classnames), encoding="utf-8")
            (tmp / TEMPLATES).write_text("".join(f"{t}\n" for t in templates), encoding="utf-8")
        else:
            (tmp / DATASET_TYPE).write_text(f"{RETRIEVAL}\n")
        if main_metric:
            (tmp / MAIN_METRIC).write_text(f"{main_metric}\n")
        for split, samples in splits.items():
            counts[split] = _write_split(tmp / split, samples, kind, samples_per_shard)
    return counts.get(TEST, 0)


def _write_split(folder: Path, samples: Iterable[tuple[bytes, str, Target]], kind: str, per_shard: int) -> int:
    folder.mkdir(parents=True)
    batch: list[dict[str, bytes | str]] = []
    shards = count = 0
    for image, ext, target in samples:
        if ext not in IMAGE_EXTENSIONS:
            raise ValueError(f"image extension {ext!r} is not one of {IMAGE_EXTENSIONS}")
        label = "\n".join(target) if kind == RETRIEVAL else str(int(target))  # type: ignore[arg-type]
        batch.append({"__key__": f"s{count:07d}", ext: image, "txt" if kind == RETRIEVAL else "cls": label.encode()})
        count += 1
        if len(batch) == per_shard:
            write_shard(folder / f"{shards}.tar", batch)
            shards, batch = shards + 1, []
    if batch or shards == 0:
        write_shard(folder / f"{shards}.tar", batch)
        shards += 1
    write_text_atomic(folder / NSHARDS, f"{shards}\n")
    return count
