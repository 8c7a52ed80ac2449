"""Bootstrap intervals over a task's images: draw the images again with replacement
(seeded, vectorised with numpy), recompute each metric from the per-image outcomes, and
take the 2.5th and 97.5th percentiles. A retrieval image is drawn with its captions."""
from __future__ import annotations

import zlib

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95


def resample(n: int, resamples: int, seed: int, task: str) -> np.ndarray:
    """[resamples, n] image indices; a task's draws depend on the seed and its name only."""
    rng = np.random.default_rng([seed, zlib.crc32(task.encode())])
    return rng.integers(0, n, size=(resamples, n), dtype=np.int32 if n < 2**31 else np.int64)


def mean(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The mean of a per-image value in each resample."""
    return values[idx].mean(axis=1)


def ratio(numerator: np.ndarray, denominator: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """sum(numerator) / sum(denominator) over each resample's images (per-caption figures
    of retrieval: an image carries its captions' hits and their count)."""
    return numerator[idx].sum(axis=1) / denominator[idx].sum(axis=1)


def mean_class_recall(labels: np.ndarray, hits: np.ndarray, idx: np.ndarray, classes: int) -> np.ndarray:
    """The mean over classes of each class's recall, in each resample, over the classes the
    resample holds (as sklearn's balanced_accuracy_score leaves out classes without images)."""
    draws = idx.shape[0]
    cell = (np.arange(draws)[:, None] * classes + labels[idx]).ravel()  # (resample, class) of each draw
    totals = np.bincount(cell, minlength=draws * classes).reshape(draws, classes)
    correct = np.bincount(cell, weights=hits[idx].ravel().astype(np.float64),
                          minlength=draws * classes).reshape(draws, classes)
    present = totals > 0
    recall = np.divide(correct, totals, out=np.zeros_like(correct), where=present)
    return recall.sum(axis=1) / present.sum(axis=1)


def interval(draws: np.ndarray, level: float = LEVEL) -> list[float]:
    """[low, high]: the central `level` of the resampled values."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return [float(low), float(high)]
