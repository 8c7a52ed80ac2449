"""The demo suite: a demo pool's evaluation tasks (docs/design.md, "Evaluation"), drawn
offline from what packages ship, from pictures no pool row, seed-set row or subset holds.

Each task draws the source's held-out eval items (`Source.eval_items`) from a stream of
its own, so its images are fresh renders (shapes), Fashion-MNIST's t10k split or
Adwaita's drawings (real), never the pool's training pictures; and asks one thing of them:
the class, the colour, how many objects, or five true captions (retrieval). Digits are
scikit-learn's, with a training split for a linear probe.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from PIL import Image
from sklearn.datasets import load_digits

from clikit.errors import UserError
from curate.demo.files import demo_rng, file_stem
from curate.demo.real_captions import TINTS
from curate.demo.real_data import FASHION_CLASSES
from curate.demo.render import COLOURS
from curate.demo.sources import Source, get_source
from curate.eval_suite import SUITE_JSON, demo_suite_dir  # noqa: F401 - demo_suite_dir: callers import it here too
from shards.atomic import replacing_dir
from shards.task_folder import CLASSIFICATION, RETRIEVAL, TEST, TRAIN, Target, write_task_folder

SUITE_VERSION = 1  # bump when the same pool would get other task folders
IMAGES_PER_TASK = 1000
CAPTIONS_PER_IMAGE = 5


# What a task asks of an item, by name: its class word.
COUNT_NAMES = ("a single shape", "two shapes", "three shapes")
ASK: dict[str, Callable[[Any], str]] = {
    "label": lambda item: item.label,
    "colour": lambda item: item.colour,
    "count": lambda item: COUNT_NAMES[item.count - 1],
}


@dataclass(frozen=True)
class DemoTask:
    """One task of a demo suite: how it is written, whose eval items it draws and what it
    asks of them."""

    name: str
    write: Callable[["DemoTask", Path, Source, int, int, bool], int]  # (task, out, src, seed, images, full)
    labels: Callable[[Source], Sequence[str]] = lambda src: src.eval_classes  # the eval classes drawn
    ask: str = "label"  # a key of ASK, or "captions" (retrieval)
    classnames: tuple[str, ...] = ()  # empty: the labels drawn
    templates: tuple[str, ...] = ()  # empty: the source's eval templates
    main_metric: str | None = None  # main_metric.txt (default: acc1, or mean R@1 for retrieval)
    full: bool = False  # --full draws every held-out item instead of IMAGES_PER_TASK
    share: float = 1.0  # of --images this task draws (retrieval: 5 captions an image cost more)


def _fashion(src: Source) -> Sequence[str]:
    return FASHION_CLASSES


def _icons(src: Source) -> Sequence[str]:
    return [c for c in src.eval_classes if c not in FASHION_CLASSES]


COLOUR_TEMPLATES = ("a {c} shape.", "a picture of something {c}.", "clip art of a {c} object.",
                    "a {c} drawing on a background.")
COUNT_TEMPLATES = ("{c}.", "a picture of {c}.", "clip art of {c}.", "{c} on a background.")
TINT_TEMPLATES = ("a {c} product.", "a photo of something {c}.", "a product photo of a {c} item.",
                  "a {c} piece of clothing.")


def _items(task: DemoTask, src: Source, seed: int, images: int, full: bool) -> list[Any]:
    """The task's held-out items, class by class, from the task's own stream."""
    labels = list(task.labels(src))
    per_class = 10**6 if full and task.full else max(1, math.ceil(images * task.share / len(labels)))
    stream = int(file_stem(seed, "suite", task.name), 16)  # eval_items draws from demo_rng(stream, ...)
    return [item for label in labels for item in src.eval_items(label, per_class, stream)]


def _captions(src: Source, item: Any, seed: int, task: str, index: int) -> list[str]:
    """Five different true captions of one item (paraphrases drawn from its own stream)."""
    rng = demo_rng(seed, "suite", task, "captions", index)
    found: dict[str, str] = {}  # by wording: a capital or a full stop does not make a paraphrase
    for _ in range(20 * CAPTIONS_PER_IMAGE):
        caption = src.describe(item, rng)
        found.setdefault(caption.lower().rstrip("."), caption)
        if len(found) == CAPTIONS_PER_IMAGE:
            return list(found.values())
    raise AssertionError(f"{task}: fewer than {CAPTIONS_PER_IMAGE} paraphrases for item {index}")


def _write_source_task(task: DemoTask, out: Path, src: Source, seed: int, images: int, full: bool) -> int:
    items = _items(task, src, seed, images, full)
    if task.ask == "captions":
        pairs = ((src.encode(item), item.ext, _captions(src, item, seed, task.name, i)) for i, item in enumerate(items))
        return write_task_folder(out, RETRIEVAL, {TEST: pairs})
    classnames = task.classnames or tuple(task.labels(src))
    templates = task.templates or tuple(t.replace("{}", "{c}") for t in src.eval_templates)
    index = {name: i for i, name in enumerate(classnames)}
    ask = ASK[task.ask]
    samples = ((src.encode(item), item.ext, index[ask(item)]) for item in items)
    return write_task_folder(out, CLASSIFICATION, {TEST: samples}, classnames=classnames, templates=templates,
                             main_metric=task.main_metric)


def _mnist_prompts() -> tuple[list[str], list[str]]:
    """clip_benchmark's MNIST class names and prompt (DataComp's), from its package data."""
    folder = resources.files("clip_benchmark") / "datasets"
    names = json.loads((folder / "en_classnames.json").read_text())["mnist"]
    templates = json.loads((folder / "en_zeroshot_classification_templates.json").read_text())["mnist"]
    return names, templates


def _write_digits(task: DemoTask, out: Path, src: Source, seed: int, images: int, full: bool) -> int:
    """scikit-learn's 1,797 8x8 digits (white ink on black, as MNIST): up to half of them
    for the test split, and half as many for the linear probe's train split."""
    digits = load_digits()
    order = list(range(len(digits.target)))
    demo_rng(seed, "suite", task.name).shuffle(order)
    test = min(len(order) // 2, images)

    def samples(indices: list[int]) -> Iterator[tuple[bytes, str, Target]]:
        for i in indices:
            pixels = (digits.images[i] * (255 / 16)).round().astype("uint8")
            buf = io.BytesIO()
            Image.fromarray(pixels, "L").save(buf, "PNG")
            yield buf.getvalue(), "png", int(digits.target[i])

    names, templates = _mnist_prompts()
    train = order[test:test + max(1, test // 2)]
    return write_task_folder(out, CLASSIFICATION, {TEST: samples(order[:test]), TRAIN: samples(train)},
                             classnames=names, templates=templates)


DIGITS = DemoTask("digits", _write_digits)
SUITES: dict[str, tuple[DemoTask, ...]] = {
    "shapes": (
        DemoTask("shapes", _write_source_task),
        DemoTask("shapes-colour", _write_source_task, ask="colour", classnames=tuple(COLOURS), templates=COLOUR_TEMPLATES),
        # Counts are drawn as the pool draws them (60% one object): recall per class is fair.
        DemoTask("shapes-count", _write_source_task, ask="count", classnames=COUNT_NAMES, templates=COUNT_TEMPLATES,
                 main_metric="mean_per_class_recall"),
        DIGITS,
        DemoTask("shapes-captions", _write_source_task, ask="captions", share=0.5),
    ),
    "real": (
        DemoTask("fashion", _write_source_task, _fashion, full=True),
        DemoTask("icons", _write_source_task, _icons),
        DemoTask("fashion-colour", _write_source_task, _fashion, "colour", tuple(TINTS), TINT_TEMPLATES),
        DIGITS,
        DemoTask("fashion-captions", _write_source_task, _fashion, "captions", share=0.5),
    ),
}


def retrieval_task(source: str) -> str:
    """The name of the demo suite's retrieval task for a pool of `source` (its held-out
    images with five captions each: what the seed set, the seed CLIP and the pool never saw)."""
    return next(task.name for task in SUITES[source] if task.ask == "captions")


def build_demo_suite(out: Path, pool: Path, images: int = IMAGES_PER_TASK, full: bool = False,
                     overwrite: bool = False) -> dict[str, Any]:
    """Write the demo suite of the demo pool POOL into OUT (one task folder each, and
    suite.json); an OUT built with the same arguments is reused. Returns suite.json."""
    summary_file = pool / "demo.json"
    if not summary_file.is_file():
        raise UserError(f"--demo {pool}: no demo.json there; give a folder made by `curate demo-pool`")
    summary = json.loads(summary_file.read_text())
    source = summary.get("source", "shapes")  # a shapes pool's demo.json names no source
    if images < 1:
        raise UserError(f"--images must be at least 1, got {images}")
    params = {"version": SUITE_VERSION, "source": source, "seed": summary["seed"], "images": images, "full": full,
              "data": summary.get("sources")}
    if (out / SUITE_JSON).is_file():
        existing = json.loads((out / SUITE_JSON).read_text())
        if all(existing.get(k) == v for k, v in params.items()):
            return existing
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} is not empty and holds no demo suite built with these arguments; "
                        "remove it, choose another folder, or pass --overwrite")
    src = get_source(source)
    tasks: dict[str, int] = {}
    with replacing_dir(out) as tmp:
        for task in SUITES[source]:
            tasks[task.name] = task.write(task, tmp / task.name, src, params["seed"], images, full)
        (tmp / SUITE_JSON).write_text(json.dumps({**params, "tasks": tasks}, indent=2) + "\n")
    return {**params, "tasks": tasks}
