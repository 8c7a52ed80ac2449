"""A task split as batches of (preprocessed images, targets), the shape clip_benchmark's
metric functions read from a DataLoader. Decoded, preprocessed images are kept per process
(that part does not depend on the model) in train.evaluate's cache, under its bound; a
split over the bound streams batch by batch and is not kept."""
from __future__ import annotations

from typing import Callable, Iterator

import torch

from clikit.errors import UserError
from shards.images import open_rgb
from shards.task_folder import Target, TaskFolder, iter_samples
from train.evaluate import PreparedKeeper, prepared

BATCH_SIZE = 256
Batch = tuple[torch.Tensor, list[Target]]


def _cache_key(task: TaskFolder, split: str, preprocess: Callable) -> tuple:
    """The split's shards by path, size and mtime, with the transform's repr (sizes, normalisation)."""
    stats = [(str(p), st.st_size, st.st_mtime_ns) for p, st in ((p, p.stat()) for p in task.shards(split))]
    return "task-folder", repr(preprocess), tuple(stats)


def _decode(task: TaskFolder, split: str, key: str, image: bytes, preprocess: Callable) -> torch.Tensor:
    try:
        return preprocess(open_rgb(image))
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds; each means "unusable"
        raise UserError(f"{task.path / split}: the image of sample {key!r} does not decode ({exc}); "
                        "skipping it would change the figures: rebuild the task folder") from None


def split_batches(task: TaskFolder, split: str, preprocess: Callable, batch_size: int = BATCH_SIZE) -> Iterator[Batch]:
    """(images [b, 3, h, w], targets) in the folder's order; an empty split is an error."""
    key = _cache_key(task, split, preprocess)
    cached = prepared(key)
    keeper = PreparedKeeper(key if cached is None else None)
    count = 0
    images: list[torch.Tensor] = []
    targets: list[Target] = []
    for sample_key, image, target in iter_samples(task, split):
        tensor = cached[0][count] if cached is not None else _decode(task, split, sample_key, image, preprocess)
        keeper.add(tensor)
        count += 1
        images.append(tensor)
        targets.append(target)
        if len(images) == batch_size:
            yield torch.stack(images), targets
            images, targets = [], []
    if images:
        yield torch.stack(images), targets
    if count == 0:
        raise UserError(f"{task.path / split} holds no samples; rebuild the task folder")
    keeper.remember(list(range(count)))
