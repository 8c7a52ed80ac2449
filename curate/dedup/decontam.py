"""Decontamination: mark pool samples that are near duplicates of an evaluation set's images,
so a benchmark never scores what the model trained on."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from curate.dedup.scored_pool import ScoredPool, iter_embedding_batches, normalized, open_embedding_matrix
from curate.dedup.vectors import SLACK
from clikit.errors import UserError
from shards.reader import FOLDER_IMAGE_EXTENSIONS, index_tar

# embed_images(paths) -> (len(paths), dim) image embeddings from the scores tag's model.
ImageEmbedder = Callable[[list[Path]], np.ndarray]


def _load_npy(path: Path, dim: int) -> np.ndarray:
    fix = "give image embeddings from the same model as the scores tag"
    return normalized(open_embedding_matrix(path, "--against", fix, dim=dim))


def _images_in_tars(tars: list[Path], folder: Path) -> list[Path]:
    """Extract the image members of webdataset shards (plain names only) into `folder`;
    an evaluation set's shards may hold any format an image folder may."""
    paths = []
    for k, tar in enumerate(tars):
        try:
            index = index_tar(tar)
        except Exception as exc:
            raise UserError(f"--against: cannot read shard {tar} ({exc})") from exc
        with open(tar, "rb") as handle:
            for key, exts in sorted(index.members.items()):
                for ext in exts:
                    if ext.lower() in FOLDER_IMAGE_EXTENSIONS:
                        out = folder / f"{k:05d}_{key}.{ext}"
                        out.write_bytes(index.read(handle, key, ext))
                        paths.append(out)
    return paths


def load_eval_embeddings(source: str | Path, dim: int, embed_images: ImageEmbedder | None = None) -> np.ndarray:
    """Unit image embeddings of an evaluation set.

    `source` is a .npy file (or a folder of them) of precomputed embeddings, a folder of
    images, or a folder of webdataset .tar shards; images are embedded by `embed_images`.
    """
    source = Path(source)
    if not source.exists():
        raise UserError(f"--against {source} does not exist; give an image folder, shard folder or .npy embeddings")
    if source.is_file():
        if source.suffix == ".npy":
            return _load_npy(source, dim)
        raise UserError(f"--against {source}: a file must be .npy embeddings; for images pass their folder")
    npys = sorted(source.glob("*.npy"))
    if npys:
        return np.concatenate([_load_npy(p, dim) for p in npys])
    images = sorted(p for p in source.rglob("*") if p.suffix.lower()[1:] in FOLDER_IMAGE_EXTENSIONS and p.is_file())
    tars = sorted(source.glob("*.tar"))
    if not images and not tars:
        raise UserError(f"--against {source} holds no images, .tar shards or .npy embeddings")
    if embed_images is None:
        raise UserError(
            f"--against {source} needs its images embedded with the scores tag's model, which this "
            "installation cannot do yet; pass precomputed embeddings as a .npy file instead"
        )
    with tempfile.TemporaryDirectory(prefix="clipcurate-against-") as tmp:
        if not images:
            images = _images_in_tars(tars, Path(tmp))
        if not images:
            raise UserError(f"--against {source}: its shards hold no images")
        vectors = np.asarray(embed_images(images))
    if vectors.ndim != 2 or vectors.shape != (len(images), dim):
        raise UserError(f"embedding {len(images)} eval images gave shape {vectors.shape}, expected ({len(images)}, {dim})")
    return normalized(vectors)


def contaminated_mask(scored: ScoredPool, eval_vectors: np.ndarray, threshold: float, gpu: bool = False,
                      progress: bool = False) -> np.ndarray:
    """True for pool samples whose cosine to some eval image is >= threshold (exact search)."""
    import faiss
    from tqdm import tqdm

    index = faiss.IndexFlatIP(eval_vectors.shape[1])
    index.add(np.ascontiguousarray(eval_vectors, dtype=np.float32))
    if gpu:
        index = faiss.index_cpu_to_all_gpus(index)
    mask = np.zeros(scored.size, dtype=bool)
    if index.ntotal == 0:
        return mask
    with tqdm(total=scored.size, desc="decontaminate", disable=not progress, leave=False) as bar:
        for start, x in iter_embedding_batches(scored, batch=8192):
            sims, _ = index.search(x, 1)
            mask[start : start + len(x)] = sims[:, 0] >= threshold - SLACK
            bar.update(len(x))
    return mask
