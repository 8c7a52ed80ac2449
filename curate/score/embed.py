"""Image embeddings with the model a scores tag was made with (for dedup's --against)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from clikit.errors import UserError
from curate.score.seed_model import load_seed_model
from shards.images import open_rgb
from shards.layout import Pool


def folder_embedder(pool: str, tag: str, folder: Path) -> Callable[[list[Path]], np.ndarray] | None:
    """The scores tag's image embedder when FOLDER holds images to embed; None when it holds
    precomputed embeddings (*.npy) or is not a folder (the stage then says what it wanted)."""
    if not folder.is_dir() or any(folder.glob("*.npy")):
        return None
    if not Pool(pool).scores_dir(tag).is_dir():
        raise UserError(f"no scores tag {tag!r} in {pool}; pass one with --scores")
    return image_embedder(pool, tag)


def image_embedder(pool: Path, tag: str, batch_size: int = 128) -> Callable[[list[Path]], np.ndarray]:
    """embed_images(paths) -> float32 (len(paths), dim) L2-normalised, from scores/TAG/model.json's model."""
    info_path = Pool(pool).model_json(tag)
    if not info_path.is_file():
        raise UserError(f"{info_path} is missing: score the pool with `curate score --tag {tag}` first")
    info = json.loads(info_path.read_text())
    if info.get("source") == "checkpoint":
        seed = load_seed_model(None, None, info["weights"])
    else:
        seed = load_seed_model(info["model"], info["weights"], None)

    def embed_images(paths: list[Path]) -> np.ndarray:
        out = []
        for start in range(0, len(paths), batch_size):
            batch = []
            for path in paths[start:start + batch_size]:
                try:
                    image = open_rgb(path)
                except Exception as exc:  # noqa: BLE001 - a folder to decontaminate against must be whole
                    raise UserError(f"cannot use {path} for --against: {exc}; fix or remove it") from None
                batch.append(seed.preprocess(image))
            with torch.inference_mode():
                features = seed.model.encode_image(torch.stack(batch)).float()
            out.append(torch.nn.functional.normalize(features, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, int(info["dim"])), np.float32)

    return embed_images
