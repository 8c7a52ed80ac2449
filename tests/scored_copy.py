"""A copy of a downloaded pool scored by a random tiny CLIP: real embeddings, scores that know nothing."""
from __future__ import annotations

import shutil
from pathlib import Path

import open_clip
import torch

from curate.score.run import ScoreSettings, score_pool
from zoo.models import register_model_configs


def scored_copy(pool_dir: Path, root: Path, tag: str = "seed") -> Path:
    """ROOT/pool: POOL_DIR copied and scored into scores/TAG by tiny-vit-32 with seed-0 weights (ROOT/tiny.pt)."""
    register_model_configs()
    pool = root / "pool"
    shutil.copytree(pool_dir, pool)
    torch.manual_seed(0)
    torch.save(open_clip.create_model("tiny-vit-32").state_dict(), root / "tiny.pt")
    score_pool(pool, model="tiny-vit-32", pretrained=str(root / "tiny.pt"), tag=tag,
               settings=ScoreSettings(batch_size=64, workers=1, progress=False))
    return pool
