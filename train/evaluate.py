"""Evaluation: zero-shot classification on a labelled image folder and image<->text
retrieval on held-out pairs (images in that folder with a same-named .txt caption, or
the first samples of a held-out shard set)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence, Union

import torch

from clikit.errors import UserError
from shards.class_folder import FOLDER_IMAGE_SUFFIXES, class_folders, class_names, folder_images, load_templates
from shards.images import ImageTooLarge, open_rgb
from shards.task_folder import RETRIEVAL, is_task_folder, iter_samples, read_task_folder
from train.data import UnreadableShard, sample_caption, sample_image_bytes, shard_samples
from train.sources import resolve_shards
from zoo.towers import train_mode

Device = Union[str, torch.device]


def _open_rgb(item: Path | bytes) -> Any:
    """The image as an RGB PIL image; None when it does not decode (it is skipped).

    An image over the pixel cap in the user's eval folder is an error naming the file (a
    silent skip would change the figures); one in held-out shards is skipped like a broken one."""
    try:
        return open_rgb(item)
    except ImageTooLarge as exc:
        if isinstance(item, bytes):
            return None
        raise UserError(f"{item}: {exc}; shrink it or move it out of the eval folder") from None
    except Exception:
        return None


def _encode_batch(model: torch.nn.Module, batch: list[torch.Tensor], device: Device) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_image(torch.stack(batch).to(device), normalize=True).float().cpu()


# Decoded, preprocessed eval images kept per process: the cells of a sweep that run in one
# process evaluate on the same folder, and decoding it is the part of an eval that does not
# depend on the model. Bounded: a folder over the bound streams batch by batch, as before.
PREPARED_CACHE_BYTES = 512 * 2**20
_PREPARED: dict[tuple, tuple[list[torch.Tensor], list[int], int]] = {}  # key -> (tensors, indices, bytes)


def _cache_key(preprocess: Callable, items: Sequence[Path | bytes]) -> tuple | None:
    """Files by path, size and mtime, with the transform's repr (its sizes and normalisation);
    None for held-out shard bytes, which are not cached."""
    if not items or not all(isinstance(item, Path) for item in items):
        return None
    stats = [(str(p), st.st_size, st.st_mtime_ns) for p, st in ((p, p.stat()) for p in items)]  # type: ignore[union-attr]
    return repr(preprocess), tuple(stats)


def _remember(key: tuple, tensors: list[torch.Tensor], ok: list[int], size: int) -> None:
    while _PREPARED and size + sum(entry[2] for entry in _PREPARED.values()) > PREPARED_CACHE_BYTES:
        _PREPARED.pop(next(iter(_PREPARED)))  # oldest first
    _PREPARED[key] = (tensors, ok, size)


def prepared(key: tuple | None) -> tuple[list[torch.Tensor], list[int], int] | None:
    """The cached (tensors, indices, bytes) of an eval set, if this process keeps it."""
    return _PREPARED.get(key) if key is not None else None


class PreparedKeeper:
    """Collects an eval set's preprocessed tensors as they are made, for the per-process
    cache, while they stay under the bound; past it nothing is kept and the set streams."""

    def __init__(self, key: tuple | None) -> None:
        self.key = key
        self.kept: list[torch.Tensor] | None = [] if key is not None else None
        self.size = 0

    def add(self, tensor: torch.Tensor) -> None:
        if self.kept is not None:
            self.kept.append(tensor)
            self.size += tensor.numel() * tensor.element_size()
            if self.size > PREPARED_CACHE_BYTES:
                self.kept = None  # too big to keep: stream it

    def remember(self, ok: list[int]) -> None:
        """Cache what was kept, with the indices of the items it holds."""
        if self.kept is not None and self.key is not None:
            _remember(self.key, self.kept, list(ok), self.size)


def _encode_images(model: torch.nn.Module, preprocess: Callable, paths: Sequence[Path | bytes], device: Device,
                   batch_size: int) -> tuple[torch.Tensor, list[int]]:
    """L2-normalised image features; returns the indices that decoded (others are skipped)."""
    key = _cache_key(preprocess, paths)
    if key in _PREPARED:
        tensors, ok, _ = _PREPARED[key]
        feats = [_encode_batch(model, tensors[i:i + batch_size], device) for i in range(0, len(tensors), batch_size)]
        return (torch.cat(feats) if feats else torch.empty(0)), ok
    feats, ok, batch = [], [], []
    keeper = PreparedKeeper(key)
    for i, item in enumerate(paths):
        img = _open_rgb(item)
        if img is None:
            continue
        tensor = preprocess(img)
        batch.append(tensor)
        ok.append(i)
        keeper.add(tensor)
        if len(batch) == batch_size:
            feats.append(_encode_batch(model, batch, device))
            batch = []
    if batch:
        feats.append(_encode_batch(model, batch, device))
    keeper.remember(ok)
    return (torch.cat(feats) if feats else torch.empty(0)), ok


def zero_shot(model: torch.nn.Module, preprocess: Callable, tokenizer: Callable, eval_dir: Path, device: Device,
              batch_size: int = 256) -> dict[str, Any]:
    """Top-1/top-5 of open_clip's zero-shot classifier over the class folders of EVAL_DIR."""
    from open_clip import build_zero_shot_classifier

    folders = class_folders(eval_dir)
    if len(folders) < 2:
        raise UserError(f"eval folder {eval_dir} needs at least 2 class sub-folders, found {len(folders)}")
    names = class_names(folders)
    templates = load_templates(eval_dir)
    paths, labels = [], []
    for label, folder in enumerate(folders):
        for path in folder_images(folder):
            paths.append(path)
            labels.append(label)
    if not paths:
        raise UserError(f"eval folder {eval_dir} has class folders but no images")
    classifier = build_zero_shot_classifier(model, tokenizer, names, templates, num_classes_per_batch=50,
                                            device=device).float().cpu()
    feats, ok = _encode_images(model, preprocess, paths, device, batch_size)
    target = torch.tensor([labels[i] for i in ok])
    logits = feats @ classifier
    k = min(5, len(names))
    topk = logits.topk(k, dim=1).indices
    correct = topk == target[:, None]
    return {
        "zeroshot_top1": float(correct[:, 0].float().mean()),
        "zeroshot_top5": float(correct.any(dim=1).float().mean()),
        "zeroshot_classes": len(names),
        "zeroshot_images": len(ok),
        "zeroshot_chance_top1": 1.0 / len(names),
        "zeroshot_templates": len(templates),
    }


def retrieval_pairs(eval_dir: Path | None, retrieval_data: str | Path | None, limit: int) -> list[tuple[Any, str]]:
    """(image path or bytes, caption) pairs: eval-folder images with a sidecar .txt, else
    held-out shards or a retrieval task folder (DataComp's format, e.g. a demo suite's)."""
    pairs: list[tuple[Any, str]] = []
    if eval_dir is not None:
        for path in sorted(eval_dir.rglob("*")):
            if path.suffix.lower() in FOLDER_IMAGE_SUFFIXES and path.with_suffix(".txt").is_file():
                pairs.append((path, path.with_suffix(".txt").read_text().strip()))
    if not pairs and retrieval_data is not None and is_task_folder(Path(retrieval_data)):
        return task_pairs(Path(retrieval_data), limit)
    if not pairs and retrieval_data is not None:
        try:
            for sample in shard_samples(resolve_shards(retrieval_data)):
                raw, caption = sample_image_bytes(sample), sample_caption(sample)
                if raw is not None and caption:
                    pairs.append((raw, caption))
                if len(pairs) >= limit:
                    break
        except UnreadableShard as exc:
            raise UserError(f"--retrieval-data: {exc}") from None
    return pairs[:limit]


def task_pairs(folder: Path, limit: int) -> list[tuple[bytes, str]]:
    """(image bytes, its first caption) of a retrieval task folder's test images: the one
    caption per image a train run's retrieval scores (`train eval --task` scores them all)."""
    task = read_task_folder(folder)
    if task.kind != RETRIEVAL:
        raise UserError(f"retrieval data {folder} is a {task.kind} task folder; give a retrieval one "
                        "(dataset_type.txt: retrieval, captions in .txt)")
    pairs = []
    for _, image, captions in iter_samples(task):
        pairs.append((image, captions[0]))
        if len(pairs) >= limit:
            break
    return pairs


def retrieval(model: torch.nn.Module, preprocess: Callable, tokenizer: Callable, pairs: list[tuple[Any, str]],
              device: Device, batch_size: int = 256) -> dict[str, Any]:
    """Recall@1/5/10 both ways; a text's match is its own image (and vice versa)."""
    feats, ok = _encode_images(model, preprocess, [p[0] for p in pairs], device, batch_size)
    captions = [pairs[i][1] for i in ok]
    text_feats = []
    with torch.no_grad():
        for start in range(0, len(captions), batch_size):
            tokens = tokenizer(captions[start:start + batch_size]).to(device)
            text_feats.append(model.encode_text(tokens, normalize=True).float().cpu())
    texts = torch.cat(text_feats)
    sims = feats @ texts.t()  # [images, texts]
    truth = torch.arange(len(ok))
    out: dict[str, Any] = {"retrieval_pairs": len(ok)}
    for k in (1, 5, 10):
        kk = min(k, len(ok))
        out[f"image_to_text_R@{k}"] = float((sims.topk(kk, dim=1).indices == truth[:, None]).any(1).float().mean())
        out[f"text_to_image_R@{k}"] = float((sims.t().topk(kk, dim=1).indices == truth[:, None]).any(1).float().mean())
    return out


def evaluate(model: torch.nn.Module, preprocess: Callable, tokenizer: Callable, eval_dir: str | Path | None,
             device: Device = "cpu",
             retrieval_data: str | Path | None = None, retrieval_limit: int = 1000,
             batch_size: int = 256) -> dict[str, Any]:
    """Zero-shot top-1/top-5 on EVAL_DIR (one sub-folder per class) and retrieval R@1/5/10.

    Keys: zeroshot_top1, zeroshot_top5 (+ classes, images, chance), and when pairs exist
    image_to_text_R@{1,5,10}, text_to_image_R@{1,5,10}, retrieval_pairs."""
    was_training = model.training
    model.eval()
    results: dict[str, Any] = {}
    try:
        folder = Path(eval_dir) if eval_dir is not None else None
        if folder is not None:
            if not folder.is_dir():
                raise UserError(f"--eval {folder}: no such directory; give a folder with one sub-folder per class")
            results.update(zero_shot(model, preprocess, tokenizer, folder, device, batch_size))
        pairs = retrieval_pairs(folder, retrieval_data, retrieval_limit)
        if len(pairs) >= 2:
            results.update(retrieval(model, preprocess, tokenizer, pairs, device, batch_size))
    finally:
        if was_training:
            train_mode(model)  # locked towers back in eval mode, not model.train()
    return results
