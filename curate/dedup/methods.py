"""The dedup methods: one `Method` record each, looked up by name in METHODS.

A record carries its own facts: its default --threshold and --phash-bits (None when it
takes none), whether it reads the image embeddings or the thumbnails `curate score`
stores, whether `--method all` includes it, and its pair finder. METHODS is also the order
methods run in, so a byte copy is labelled exact before any near method claims it (the
`method` column of groups.parquet); a new method is a new record, nothing else changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from curate.dedup import hashes, vectors
from curate.dedup.calibrate import calibrate_threshold
from curate.dedup.phash_knn import phash_knn_pairs
from curate.dedup.phash_pixels import phash_pixels_pairs
from curate.dedup.scored_pool import ScoreColumns, ScoredPool

if TYPE_CHECKING:
    from curate.dedup.settings import DedupSettings

Pairs = tuple[np.ndarray, np.ndarray]


@dataclass
class PairSearch:
    """What a pair finder reads, and `search`: where it records how it searched (summary.json)."""

    scored: ScoredPool
    cols: ScoreColumns
    dim: int | None  # the embeddings' width; None when no chosen method reads them
    settings: DedupSettings
    search: dict[str, Any]


@dataclass(frozen=True)
class Method:
    """One dedup method: its defaults, what it reads, and its pair finder."""

    name: str
    finder: Callable[[Method, PairSearch], Pairs]
    # --threshold when not given; None: the method takes none; "auto": measured on the pool.
    threshold: float | str | None = None
    measures: str | None = None  # what its threshold is a bar on: "cosine" or "correlation" (thumbnails)
    phash_bits: int | None = None  # --phash-bits when not given; None: the method takes none
    needs_vectors: bool = False  # reads the image embeddings (embeddings/TAG)
    needs_pixels: bool = False  # reads the thumbnail columns (pixels, colours) of scores/TAG
    in_all: bool = False  # part of `--method all`

    def find_pairs(self, job: PairSearch) -> Pairs:
        """Row pairs (a[i], b[i]) this method calls duplicates."""
        return self.finder(self, job)


def measured_threshold(method: Method, scored: ScoredPool, cols: ScoreColumns,
                       settings: DedupSettings) -> tuple[float, dict[str, Any] | None]:
    """The method's threshold, and how it was measured when it is "auto" (calibrate.py:
    the cosine bar for this pool and seed model), else None."""
    threshold = settings.threshold_for(method.name)
    if threshold != "auto":
        return threshold, None
    return calibrate_threshold(scored, cols.phash, cols.phash_valid, settings.phash_bits_for(method.name),
                               settings.seed)


def _exact(method: Method, job: PairSearch) -> Pairs:
    return hashes.exact_pairs(job.cols.sha256, job.cols.sha256_valid)


def _phash(method: Method, job: PairSearch) -> Pairs:
    return hashes.phash_pairs(job.cols.phash, job.cols.phash_valid, job.settings.phash_bits_for(method.name))


def _phash_pixels(method: Method, job: PairSearch) -> Pairs:
    bits, threshold = job.settings.phash_bits_for(method.name), job.settings.threshold_for(method.name)
    pairs, counts = phash_pixels_pairs(job.scored, job.cols.phash, job.cols.phash_valid, bits, threshold,
                                       job.settings.progress)
    job.search[method.name] = {"phash_bits": bits, "threshold": threshold, **counts}
    return pairs


def _phash_knn(method: Method, job: PairSearch) -> Pairs:
    bits = job.settings.phash_bits_for(method.name)
    threshold, calibration = measured_threshold(method, job.scored, job.cols, job.settings)
    pairs, counts = phash_knn_pairs(job.scored, job.cols.phash, job.cols.phash_valid, bits, threshold,
                                    job.settings.progress)
    job.search[method.name] = {"phash_bits": bits, "threshold": threshold, **counts}
    if calibration:
        job.search[method.name]["calibration"] = calibration
    return pairs


def _knn(method: Method, job: PairSearch) -> Pairs:
    s = job.settings
    threshold = s.threshold_for(method.name)
    plan = vectors.choose_plan(job.scored.size, threshold, s.index, s.nlist, s.nprobe)
    job.search[method.name] = plan.as_dict()
    if plan.kind == "flat":
        return vectors.flat_pairs(job.scored, job.dim, threshold, plan.gpu, s.progress)
    return vectors.ivf_pairs(job.scored, job.dim, threshold, plan, s.seed, s.progress, job.search[method.name])


def _semdedup(method: Method, job: PairSearch) -> Pairs:
    s = job.settings
    clusters = s.clusters or vectors.default_clusters(job.scored.size)
    gpu = vectors.gpu_available()
    job.search[method.name] = {"clusters": min(clusters, job.scored.size), "gpu": gpu}
    return vectors.semdedup_pairs(job.scored, job.dim, s.threshold_for(method.name), clusters, s.seed, gpu,
                                  s.progress, job.search[method.name])


# In the order they run. Defaults: phash-pixels' threshold is the grey thumbnails' correlation,
# not a cosine (phash_pixels.py); phash-knn's cosine bar is measured on the pool, because a
# cosine means different things under different seed models (a fixed 0.95 held on the shapes
# pool with one model and fell to 0.43 near-pair precision on the real pool with another).
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("exact", _exact, in_all=True),
    Method("phash", _phash, phash_bits=4, in_all=True),
    Method("phash-pixels", _phash_pixels, threshold=0.98, measures="correlation", phash_bits=6, needs_pixels=True),
    Method("phash-knn", _phash_knn, threshold="auto", measures="cosine", phash_bits=6, needs_vectors=True),
    Method("knn", _knn, threshold=0.95, measures="cosine", needs_vectors=True, in_all=True),
    # an alternative to knn (cheaper, slightly lower recall), so not part of `all`
    Method("semdedup", _semdedup, threshold=0.95, measures="cosine", needs_vectors=True),
)}
METHOD_ORDER: tuple[str, ...] = tuple(METHODS)  # names by position: the codes graph.py stores per sample
