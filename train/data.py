"""Streaming image-text batches from webdataset shards, deterministic and exactly resumable.

Why not a plain `wds.WebDataset(...).shuffle(...)`: exact resume after kill -9 needs the
sample order to be a pure function of (seed, rank, worker, position). So each loader
worker reads its own infinite stream ("slot"): per epoch the shard list is shuffled from
the seed and dealt to the slots (or, with fewer shards than slots, every slot reads all
shards and keeps every n-th sample), samples are shuffled in a buffer with a seeded RNG,
and each batch reports how far its slot's stream has been read. Resume skips that many
raw samples (no decoding) and rotates the workers so the DataLoader's round-robin starts
at the slot that was next.
"""
from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from clikit.errors import UserError

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def resolve_shards(data: str | Path) -> list[str]:
    """Tar paths for DATA: a shard set (manifest.json), a pool (shards/*.tar), a dir of tars,
    a brace pattern (`dir/{00000..00009}.tar`) or one tar file."""
    import webdataset as wds

    text = str(data)
    path = Path(text)
    if path.is_dir():
        manifest = path / "manifest.json"
        if manifest.is_file():
            tars = _manifest_tars(path, manifest)
        elif (path / "shards").is_dir():
            tars = sorted(str(p) for p in (path / "shards").glob("*.tar"))
        else:
            tars = sorted(str(p) for p in path.glob("*.tar"))
        if not tars:
            raise UserError(
                f"no .tar shards in {path}; point --data at a shard set, a pool with shards/, or a tar pattern"
            )
        return tars
    if "{" in text or "::" in text:
        tars = wds.shardlists.expand_urls(text)
    elif path.suffix == ".tar":
        tars = [text]
    else:
        raise UserError(f"--data {text}: no such directory or tar file; give a shard set, a pool or a tar pattern")
    missing = [t for t in tars if not Path(t).is_file()]
    if missing:
        raise UserError(f"{len(missing)} of {len(tars)} shards are missing (first: {missing[0]}); check --data")
    return tars


def _manifest_tars(root: Path, manifest: Path) -> list[str]:
    try:
        meta = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{manifest} is not readable JSON ({exc}); re-run `curate export`") from exc
    names: list[str] = []
    for shard in meta.get("shards", []) if isinstance(meta, dict) else []:
        name = shard.get("name") or shard.get("path") or shard.get("file") if isinstance(shard, dict) else shard
        if name:
            names.append(str(root / Path(str(name)).name))
    if not names:  # a manifest without a shard list: take the tars next to it
        names = sorted(str(p) for p in root.glob("*.tar"))
    missing = [n for n in names if not Path(n).is_file()]
    if missing:
        raise UserError(f"{manifest} lists {len(missing)} missing shards (first: {missing[0]}); re-run `curate export`")
    return names


def load_subset_uids(subset: str | Path, data: str | Path | None = None) -> frozenset[str]:
    """uids of a subset: a parquet path, or a NAME under DATA/subsets/NAME.parquet (DATA a pool)."""
    import pyarrow.parquet as pq

    path = Path(subset)
    if not path.is_file() and data is not None:
        candidate = Path(data) / "subsets" / f"{subset}.parquet"
        if candidate.is_file():
            path = candidate
    if not path.is_file():
        raise UserError(
            f"subset {subset!r} not found (looked for {path} and POOL/subsets/{subset}.parquet); "
            "run `curate filter` or give a parquet path"
        )
    try:
        table = pq.read_table(path, columns=["uid"])
    except Exception as exc:  # pyarrow raises several types for bad files
        raise UserError(f"{path} has no readable `uid` column ({exc})") from exc
    uids = frozenset(str(u) for u in table.column("uid").to_pylist() if u is not None)
    if not uids:
        raise UserError(f"subset {path} is empty; nothing to train on")
    return uids


def sample_uid(sample: dict[str, Any]) -> str:
    """A sample's stable uid: its json's uid, else the uid of url+caption, else its key."""
    meta = sample.get("json")
    if meta:
        try:
            info = json.loads(meta)
            if info.get("uid"):
                return str(info["uid"])
        except ValueError:
            pass
    key = str(sample.get("__key__", ""))
    return key.rsplit("/", 1)[-1]


def sample_caption(sample: dict[str, Any]) -> str | None:
    raw = sample.get("txt")
    if raw is not None:
        return raw.decode("utf-8", "replace").strip()
    meta = sample.get("json")
    if meta:
        try:
            return json.loads(meta).get("caption")
        except ValueError:
            return None
    return None


def sample_image_bytes(sample: dict[str, Any]) -> bytes | None:
    for ext in IMAGE_EXTS:
        if ext in sample:
            return sample[ext]
    return None


@dataclass
class StreamConfig:
    shards: list[str]
    batch_size: int  # per rank
    image_size: int
    context_length: int
    tokenizer: Any
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    num_workers: int = 2
    shuffle_buffer: int = 1000
    crop_scale: tuple[float, float] = (0.9, 1.0)
    subset: frozenset[str] | None = None
    # resume state: raw items already read per logical worker, and how many batches were taken
    positions: list[int] = field(default_factory=list)
    batches_taken: int = 0


def _slot_items(cfg: StreamConfig, slot: int, n_slots: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """The infinite, seeded, undecoded sample stream of one slot: yields (epoch, sample)."""
    import webdataset as wds

    epoch = 0
    while True:
        order = list(cfg.shards)
        random.Random(f"shards-{cfg.seed}-{epoch}").shuffle(order)
        by_shard = len(order) >= n_slots
        mine = order[slot::n_slots] if by_shard else order
        pipeline = wds.DataPipeline(
            wds.SimpleShardList(mine),
            wds.tarfile_to_samples(handler=wds.warn_and_continue),
        )

        def kept(stream: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            for i, sample in enumerate(stream):
                if not by_shard and i % n_slots != slot:
                    continue
                if cfg.subset is not None and sample_uid(sample) not in cfg.subset:
                    continue
                yield sample

        rng = random.Random(f"samples-{cfg.seed}-{epoch}-{slot}")
        produced = 0
        for sample in wds.shuffle(cfg.shuffle_buffer, min(100, cfg.shuffle_buffer), rng=rng)(kept(iter(pipeline))):
            produced += 1
            yield epoch, sample
        if produced == 0:
            raise EmptyStream(
                f"loader slot {slot} of {n_slots} found no samples in {len(mine)} shard(s)"
                + (" after the subset filter" if cfg.subset is not None else "")
                + "; use fewer --workers/processes or check --data/--subset"
            )
        epoch += 1


class EmptyStream(RuntimeError):
    pass


class ShardStream(torch.utils.data.IterableDataset):
    """Yields whole batches: uint8 images [B,3,H,W], token ids [B,L], and bookkeeping."""

    def __init__(self, cfg: StreamConfig):
        super().__init__()
        self.cfg = cfg

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from torchvision.transforms import InterpolationMode, RandomResizedCrop
        from torchvision.transforms.functional import pil_to_tensor, resized_crop
        from PIL import Image

        cfg = self.cfg
        info = torch.utils.data.get_worker_info()
        n_workers = info.num_workers if info else 1
        physical = info.id if info else 0
        logical = (physical + cfg.batches_taken) % n_workers
        slot = cfg.rank * n_workers + logical
        n_slots = cfg.world_size * n_workers
        position = cfg.positions[logical] if cfg.positions else 0

        items = _slot_items(cfg, slot, n_slots)
        try:
            for _ in range(position):  # resume: skip what was already consumed, undecoded
                next(items)
            images, texts, skipped = [], [], 0
            for epoch, sample in items:
                position += 1
                img = None
                raw = sample_image_bytes(sample)
                caption = sample_caption(sample)
                if raw is not None and caption is not None:
                    try:
                        pil = Image.open(io.BytesIO(raw))
                        pil = pil.convert("RGB")
                        # Crop randomness from a per-item seed, so resume replays it exactly.
                        with torch.random.fork_rng(devices=[]):
                            torch.manual_seed(hash((cfg.seed, slot, position)) & 0x7FFFFFFF)
                            top, left, h, w = RandomResizedCrop.get_params(pil, cfg.crop_scale, (3 / 4, 4 / 3))
                        pil = resized_crop(pil, top, left, h, w, [cfg.image_size, cfg.image_size],
                                           InterpolationMode.BICUBIC, antialias=True)
                        img = pil_to_tensor(pil)
                    except Exception:  # unreadable/truncated image: skipped and counted
                        img = None
                if img is None:
                    skipped += 1
                    continue
                images.append(img)
                texts.append(caption)
                if len(images) == cfg.batch_size:
                    yield {
                        "images": torch.stack(images),
                        "texts": cfg.tokenizer(texts, context_length=cfg.context_length)
                        if _takes_context_length(cfg.tokenizer) else cfg.tokenizer(texts),
                        "logical": logical,
                        "position": position,
                        "skipped": skipped,
                        "epoch": epoch,
                    }
                    images, texts, skipped = [], [], 0
        except EmptyStream as exc:
            yield {"error": str(exc)}


def _takes_context_length(tokenizer: Any) -> bool:
    return hasattr(tokenizer, "context_length")


def make_loader(cfg: StreamConfig, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader over ShardStream; batches come from workers in strict round-robin order."""
    return torch.utils.data.DataLoader(
        ShardStream(cfg),
        batch_size=None,
        num_workers=cfg.num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if cfg.num_workers > 0 else None,
    )


def check_first_shard(shards: list[str]) -> None:
    """Fail fast with a clear error when the first shard is not a readable tar."""
    import tarfile

    try:
        with tarfile.open(shards[0]) as tar:
            if tar.next() is None:
                raise UserError(f"shard {shards[0]} is empty; check --data")
    except (tarfile.TarError, OSError) as exc:
        raise UserError(f"shard {shards[0]} is not a readable tar ({exc}); check --data") from exc
