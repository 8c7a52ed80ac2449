"""Image-caption pairs as a retrieval task: a folder of images with same-named .txt files
(one caption a line, as `train eval --eval` reads them), or webdataset shards (a shard
set, a pool, or a folder of tars: each sample's image and .txt caption)."""
from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Iterator

from clikit.errors import UserError
from curate.eval_suite.images import member_image
from shards.class_folder import FOLDER_IMAGE_SUFFIXES
from shards.images import open_rgb
from shards.task_folder import RETRIEVAL, TEST, Target, shard_samples, write_task_folder


def _captions(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _folder_pairs(source: Path) -> Iterator[tuple[bytes, str, Target]]:
    for path in sorted(source.rglob("*")):
        sidecar = path.with_suffix(".txt")
        if path.suffix.lower() in FOLDER_IMAGE_SUFFIXES and sidecar.is_file():
            captions = _captions(sidecar.read_text(encoding="utf-8", errors="replace"))
            if captions:
                yield (*member_image(path), captions)


def _shard_files(source: Path) -> list[Path]:
    """A folder's tars, or a pool's (POOL/shards/*.tar)."""
    tars = sorted(source.glob("*.tar"))
    return tars or sorted((source / "shards").glob("*.tar"))


def _decodes(image: bytes) -> bool:
    try:
        open_rgb(image)
    except Exception:  # noqa: BLE001 - any failure means the image is unusable
        return False
    return True


def _shard_pairs(tars: list[Path]) -> Iterator[tuple[bytes, str, Target]]:
    """Samples with an image that decodes and a caption (a pool's shards may hold broken downloads)."""
    for tar in tars:
        for _, ext, image, raw in shard_samples(tar, "txt"):
            captions = _captions(raw.decode("utf-8", errors="replace")) if raw is not None else []
            if ext is not None and image is not None and captions and _decodes(image):
                yield image, ext, captions


def write_pairs_task(source: Path, out: Path, limit: int | None = None) -> int:
    """Convert SOURCE's image-caption pairs (the first `limit`) into the retrieval task OUT;
    returns the number of images."""
    if not source.is_dir():
        raise UserError(f"--pairs {source}: no such directory; give a folder of images with .txt captions, "
                        "a shard set or a pool")
    tars = _shard_files(source)
    pairs = _shard_pairs(tars) if tars else _folder_pairs(source)
    taken = list(islice(pairs, limit))
    if len(taken) < 2:
        raise UserError(f"--pairs {source} holds {len(taken)} image-caption pair(s); a retrieval task needs at "
                        "least 2 (images with a same-named .txt, or shards with .txt captions)")
    return write_task_folder(out, RETRIEVAL, {TEST: taken})
