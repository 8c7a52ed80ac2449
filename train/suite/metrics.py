"""One task's metrics, computed with clip_benchmark's own functions, and the per-image
outcomes the bootstrap redraws.

- Zero-shot classification: clip_benchmark's zero_shot_classifier (the task's templates)
  and run_classification over the images' embeddings (its Featurizer's); acc1/acc5 by its
  accuracy, mean per-class recall by balanced_accuracy_score, as its evaluate() does.
- Retrieval with several captions per image: its Featurizer for image embeddings and its
  recall_at_k (through batchify) over the caption-image score matrix, as its evaluate() does.
- Linear probe (tasks with a train split): see probe.py.
"""
from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch
from clip_benchmark.metrics import zeroshot_classification as zsc
from clip_benchmark.metrics.linear_probe import Featurizer
from clip_benchmark.metrics.zeroshot_retrieval import batchify, recall_at_k
from sklearn.metrics import balanced_accuracy_score

from train.suite import bootstrap
from train.suite.features import BATCH_SIZE, Batch
from train.suite.tasks import RECALL_KS

Draws = Callable[[np.ndarray], dict[str, np.ndarray]]  # resampled image indices -> metric draws


@dataclass
class Outcome:
    """Point metrics of a task (clip_benchmark's figures) and how to redraw them."""

    images: int
    metrics: dict[str, float]
    draws: list[Draws] = field(default_factory=list)
    info: dict[str, float | int] = field(default_factory=dict)

    def merge(self, other: "Outcome") -> None:
        self.metrics.update(other.metrics)
        self.draws.extend(other.draws)
        self.info.update(other.info)

    def redraw(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for draw in self.draws:
            out.update(draw(idx))
        return out


def classification_outcome(logits: torch.Tensor, target: torch.Tensor, classes: int, prefix: str = "") -> Outcome:
    """acc1, acc5 (NaN under 5 classes, as clip_benchmark) and mean per-class recall."""
    pred = logits.argmax(dim=1)
    if classes >= 5:
        acc1, acc5 = zsc.accuracy(logits, target, topk=(1, 5))
        hit5 = (logits.topk(5, dim=1).indices == target[:, None]).any(dim=1).numpy()
    else:
        (acc1,), acc5, hit5 = zsc.accuracy(logits, target, topk=(1,)), math.nan, None
    recall = float(balanced_accuracy_score(target, pred))
    labels, hit1 = target.numpy(), (pred == target).numpy()

    def draws(idx: np.ndarray) -> dict[str, np.ndarray]:
        out = {f"{prefix}acc1": bootstrap.mean(hit1, idx),
               f"{prefix}mean_per_class_recall": bootstrap.mean_class_recall(labels, hit1, idx, classes)}
        if hit5 is not None:
            out[f"{prefix}acc5"] = bootstrap.mean(hit5, idx)
        return out

    metrics = {f"{prefix}acc1": acc1, f"{prefix}acc5": acc5, f"{prefix}mean_per_class_recall": recall}
    return Outcome(len(labels), metrics, [draws])


class _Embedded(torch.nn.Module):
    """Stands in for the model in clip_benchmark's run_classification when the images are
    already embedded (by embed_images, which a linear probe reads too): its encode_image
    hands the embeddings through, and run_classification normalises them and scores them
    against the classifier as it would the model's."""

    def encode_image(self, embeddings: torch.Tensor) -> torch.Tensor:
        return embeddings


def zero_shot(model: torch.nn.Module, tokenizer: Callable, classnames: list[str], templates: list[str],
              embeddings: torch.Tensor, targets: list, device: str, amp: bool) -> Outcome:
    """Zero-shot classification with clip_benchmark's classifier from the task's templates."""
    labels = torch.tensor(targets)
    loader = [(embeddings[i:i + BATCH_SIZE], labels[i:i + BATCH_SIZE]) for i in range(0, len(labels), BATCH_SIZE)]
    # clip_benchmark draws a tqdm bar per class list and per loader, always on: a suite of
    # tasks in a sweep cell would print a dozen bars of a second each into the sweep's output.
    with contextlib.redirect_stderr(io.StringIO()):
        classifier = zsc.zero_shot_classifier(model, tokenizer, classnames, templates, device, amp=amp)
        logits, target = zsc.run_classification(_Embedded(), classifier, loader, device, amp=amp)
    return classification_outcome(logits, target, len(classnames))


def embed_images(model: torch.nn.Module, images: torch.Tensor, device: str, amp: bool) -> torch.Tensor:
    """L2-normalised image embeddings by clip_benchmark's Featurizer, as float32 on the CPU."""
    with torch.no_grad(), torch.autocast(device, enabled=amp):
        return Featurizer(model, normalize=True)(images.to(device)).float().cpu()


def _embed_texts(model: torch.nn.Module, tokenizer: Callable, texts: list[str], device: str, amp: bool) -> torch.Tensor:
    out = []
    for start in range(0, len(texts), BATCH_SIZE):
        tokens = tokenizer(texts[start:start + BATCH_SIZE]).to(device)
        with torch.no_grad(), torch.autocast(device, enabled=amp):
            out.append(torch.nn.functional.normalize(model.encode_text(tokens), dim=-1).float().cpu())
    return torch.cat(out)


def retrieval(model: torch.nn.Module, tokenizer: Callable, batches: Iterable[Batch], device: str, amp: bool) -> Outcome:
    """Recall@1/5/10 both ways with several captions per image, by clip_benchmark's recall_at_k:
    image_retrieval_recall@k per caption (is its image in the top k?), text_retrieval_recall@k
    per image (is one of its captions in the top k?); and DataComp's mean_recall@1."""
    image_emb, texts, owner = [], [], []
    for images, captions in batches:
        first = sum(len(e) for e in image_emb)
        image_emb.append(embed_images(model, images, device, amp))
        for i, image_captions in enumerate(captions):
            texts.extend(image_captions)
            owner.extend([first + i] * len(image_captions))
    images_emb = torch.cat(image_emb)
    n = len(images_emb)
    scores = _embed_texts(model, tokenizer, texts, device, amp) @ images_emb.t()  # [captions, images]
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(texts)), torch.tensor(owner)] = True
    owner_np = np.asarray(owner)
    captions_per_image = np.bincount(owner_np, minlength=n).astype(np.float64)
    metrics: dict[str, float] = {}
    per_image: dict[str, np.ndarray] = {}  # text retrieval hits per image
    per_caption: dict[str, np.ndarray] = {}  # image retrieval hits summed over each image's captions
    for k in RECALL_KS:
        # Recall at k of k or more candidates is 1 (a task with fewer than 10 images or captions).
        caption_hits = batchify(recall_at_k, scores, positive, BATCH_SIZE, device, k=min(k, n)) > 0
        image_hits = batchify(recall_at_k, scores.T, positive.T, BATCH_SIZE, device, k=min(k, len(texts))) > 0
        metrics[f"image_retrieval_recall@{k}"] = caption_hits.float().mean().item()
        metrics[f"text_retrieval_recall@{k}"] = image_hits.float().mean().item()
        per_caption[f"image_retrieval_recall@{k}"] = np.bincount(owner_np, weights=caption_hits.numpy(), minlength=n)
        per_image[f"text_retrieval_recall@{k}"] = image_hits.numpy()
    metrics["mean_recall@1"] = 0.5 * (metrics["image_retrieval_recall@1"] + metrics["text_retrieval_recall@1"])

    def draws(idx: np.ndarray) -> dict[str, np.ndarray]:
        out = {name: bootstrap.ratio(hits, captions_per_image, idx) for name, hits in per_caption.items()}
        out.update({name: bootstrap.mean(hits, idx) for name, hits in per_image.items()})
        out["mean_recall@1"] = 0.5 * (out["image_retrieval_recall@1"] + out["text_retrieval_recall@1"])
        return out

    return Outcome(n, metrics, [draws], {"captions": len(texts)})


def split_features(model: torch.nn.Module, batches: Iterable[Batch], device: str, amp: bool) -> tuple[torch.Tensor, list]:
    """(image embeddings, targets) of a split (a linear probe's inputs)."""
    features, targets = [], []
    for images, batch_targets in batches:
        features.append(embed_images(model, images, device, amp))
        targets.extend(batch_targets)
    return torch.cat(features), targets
