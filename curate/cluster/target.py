"""The target images of DataComp's image-based filter and each cluster's closeness to them.

DataComp keeps the pool's clusters that hold the nearest centroid of some ImageNet training
image. Here the target is an eval suite's training images (the train splits of its task
folders), one task folder's, a folder of images or webdataset shards (a user's, or a seed
pool's shards), or precomputed .npy embeddings; images are embedded with the scores tag's
own model (the same embedder `curate dedup --against` uses)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from clikit.errors import UserError
from curate.dedup.decontam import ImageEmbedder, load_eval_embeddings
from shards.task_folder import TRAIN, is_task_folder, read_task_folder


def target_folders(source: Path) -> list[Path]:
    """Where the target images are: a suite's or task folder's train splits, else `source` itself."""
    if not source.exists():
        raise UserError(f"--near {source} does not exist; give an eval suite, a task folder with a train split, "
                        "an image or shard folder, or .npy embeddings")
    if source.is_file():
        return [source]
    tasks = [source] if is_task_folder(source) else [d for d in sorted(source.iterdir()) if is_task_folder(d)]
    if not tasks:
        return [source]
    splits = [read_task_folder(t).path / TRAIN for t in tasks if TRAIN in read_task_folder(t).splits]
    if not splits:
        raise UserError(f"--near {source}: no task folder there has a {TRAIN}/ split (DataComp's image-based "
                        "filter clusters training images); give an image or shard folder instead")
    return splits


def target_embeddings(source: Path, dim: int, embed_images: ImageEmbedder | None) -> np.ndarray:
    """Unit embeddings of every target image."""
    return np.concatenate([load_eval_embeddings(folder, dim, embed_images) for folder in target_folders(source)])


def cluster_targets(centroids: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster: how many target images have it as nearest centroid (DataComp's rule), and
    the cosine between its centroid and its nearest target image."""
    import faiss

    by_centroid = faiss.IndexFlatIP(centroids.shape[1])
    by_centroid.add(centroids)
    _, nearest = by_centroid.search(np.ascontiguousarray(targets, dtype=np.float32), 1)
    hits = np.bincount(nearest[:, 0], minlength=len(centroids)).astype(np.int32)
    by_target = faiss.IndexFlatIP(targets.shape[1])
    by_target.add(np.ascontiguousarray(targets, dtype=np.float32))
    sims, _ = by_target.search(centroids, 1)
    return hits, sims[:, 0].astype(np.float32)
