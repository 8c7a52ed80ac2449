"""Streaming image-text batches from webdataset shards, deterministic and exactly resumable.

Why not a plain `wds.WebDataset(...).shuffle(...)`: exact resume after kill -9 needs the
sample order to be a pure function of (seed, rank, worker, position). So each loader
worker reads its own infinite stream ("slot"): per epoch the shard list is shuffled from
the seed and dealt to the slots (or, with fewer shards than slots, every slot reads all
shards and keeps every n-th sample), samples are shuffled in a buffer with a seeded RNG,
and each batch reports how far its slot's stream has been read. Resume skips that many
raw samples (no decoding) and rotates the workers so the DataLoader's round-robin starts
at the slot that was next.

Shards are opened by `shard_samples`: webdataset's tar expansion behind an opener of our
own (shards.storage.open_stream), so a shard may be a path, any fsspec URL (s3://, gs://,
http(s)://) or `pipe:COMMAND`. webdataset's own opener knows no s3:// and, under the
skip-and-warn handler, would train on nothing; ours ends the run in one line naming the
shard it cannot open. Only the opening differs: the samples and their order are the same.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import torch

from shards.images import open_rgb
from shards.reader import IMAGE_EXTENSIONS
from shards.storage import open_stream
from shards.uid_arrays import SortedUids


def uid_of_sample(sample: dict[str, Any]) -> str:
    """The uid a webdataset sample carries: the `uid` of its json member, else the last
    part of its key (the uid itself in a shard set, where members are named <uid>.*).
    It computes nothing; shards.uid.sample_uid is what makes a uid from url + caption."""
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
    """The caption: the txt member, else the json member's `caption`; None without either."""
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
    """The encoded image of the first image member (jpg, jpeg, png, webp); None without one."""
    for ext in IMAGE_EXTENSIONS:
        if ext in sample:
            return sample[ext]
    return None


@dataclass
class StreamConfig:
    """One rank's stream: what to read, how to batch it, and where a resumed run starts."""

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
    subset: SortedUids | None = None
    need_text: bool = True  # False (train mim): captions are neither required nor tokenised
    # --streams N (train.streams): N fixed streams shared out over the ranks; 0: one per rank and worker
    streams: int = 0
    # resume state: raw items already read per logical worker (with streams: per stream, all N),
    # and how many batches were taken
    positions: list[int] = field(default_factory=list)
    batches_taken: int = 0


def _opened(shards: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """webdataset's url_opener stage with open_stream. A shard that cannot be opened (missing,
    access refused) or whose pipe: command fails raises UnreadableShard: a skipped shard
    would silently change what the run trains on."""
    for shard in shards:
        url = shard["url"]
        try:
            stream = open_stream(url)
        except Exception as exc:  # noqa: BLE001 - every store client raises its own types
            raise _unreadable(url, exc) from None
        yield dict(shard, stream=stream)
        # Its tar was read to the end. (One abandoned mid-tar, as the run ends, is left to the
        # garbage collector, as webdataset leaves it: closing a pipe early reports SIGPIPE.)
        try:
            stream.close()
        except OSError as exc:  # a pipe: command's exit status
            raise _unreadable(url, exc) from None


def _unreadable(url: str, exc: BaseException) -> UnreadableShard:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return UnreadableShard(f"shard {url} cannot be read ({type(exc).__name__}: {first}); "
                           "check --data and the store's credentials")


def shard_samples(shards: list[str]) -> Iterable[dict[str, Any]]:
    """The undecoded samples of SHARDS in order (webdataset's tarfile_to_samples, opened by `_opened`);
    a broken tar's members are skipped with a warning, as before."""
    import webdataset as wds
    from webdataset import tariterators

    handler = wds.warn_and_continue
    return wds.DataPipeline(
        wds.SimpleShardList(shards),
        _opened,
        wds.filters.pipelinefilter(tariterators.tar_file_expander)(handler=handler),
        wds.filters.pipelinefilter(tariterators.group_by_keys)(handler=handler),
    )


def _slot_items(cfg: StreamConfig, slot: int, n_slots: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """The infinite, seeded, undecoded sample stream of one slot: yields (epoch, sample)."""
    import webdataset as wds

    epoch = 0
    while True:
        order = list(cfg.shards)
        random.Random(f"shards-{cfg.seed}-{epoch}").shuffle(order)
        by_shard = len(order) >= n_slots
        mine = order[slot::n_slots] if by_shard else order
        kept = _kept(iter(shard_samples(mine)), cfg.subset, None if by_shard else (slot, n_slots))
        rng = random.Random(f"samples-{cfg.seed}-{epoch}-{slot}")
        produced = 0
        for sample in wds.shuffle(cfg.shuffle_buffer, min(100, cfg.shuffle_buffer), rng=rng)(kept):
            produced += 1
            yield epoch, sample
        if produced == 0:
            raise EmptyStream(
                f"loader slot {slot} of {n_slots} found no samples in {len(mine)} shard(s)"
                + (" after the subset filter" if cfg.subset is not None else "")
                + "; use fewer --workers/processes (or --streams) or check --data/--subset"
            )
        epoch += 1


def _kept(stream: Iterator[dict[str, Any]], subset: SortedUids | None,
          every_nth: tuple[int, int] | None) -> Iterator[dict[str, Any]]:
    """The samples of `stream` in the subset; with every_nth=(slot, n_slots) (fewer shards
    than slots, so every slot reads every shard) only this slot's share of them."""
    for i, sample in enumerate(stream):
        if every_nth is not None and i % every_nth[1] != every_nth[0]:
            continue
        if subset is not None and uid_of_sample(sample) not in subset:
            continue
        yield sample


class StreamError(RuntimeError):
    """A stream cannot go on; its loader worker hands the message to the trainer (a UserError there)."""


class EmptyStream(StreamError):
    """A loader slot found no sample at all in a whole epoch: it would wait forever."""


class UnreadableShard(StreamError):
    """A shard cannot be opened (missing, access refused)."""


class StreamReader:
    """One slot's stream read on from `position` (raw items already read): whole decoded
    samples, with the raw items read and the unreadable ones skipped counted as it goes."""

    def __init__(self, cfg: StreamConfig, slot: int, n_slots: int, position: int = 0):
        self.cfg, self.slot, self.position = cfg, slot, position
        self.items = _slot_items(cfg, slot, n_slots)
        self.epoch = 0
        for _ in range(position):  # resume: skip what was already consumed, undecoded
            next(self.items)

    def take(self, n: int) -> tuple[list[torch.Tensor], list[str | None], int]:
        """The next n readable samples: (uint8 images, captions, samples skipped on the way).
        Raises StreamError when the stream cannot go on."""
        cfg = self.cfg
        images: list[torch.Tensor] = []
        texts: list[str | None] = []
        skipped = 0
        while len(images) < n:
            self.epoch, sample = next(self.items)
            self.position += 1
            raw = sample_image_bytes(sample)
            caption = sample_caption(sample)
            img = None
            if raw is not None and (caption is not None or not cfg.need_text):
                img = _crop(raw, cfg, hash((cfg.seed, self.slot, self.position)) & 0x7FFFFFFF)
            if img is None:
                skipped += 1
                continue
            images.append(img)
            texts.append(caption)
        return images, texts, skipped


def loader_worker() -> tuple[int, int]:
    """(this DataLoader worker's id, the number of workers); (0, 1) in the main process."""
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info else (0, 1)


class ConfiguredStream(torch.utils.data.IterableDataset):
    """An iterable dataset over the shards a StreamConfig names (one per data order)."""

    def __init__(self, cfg: StreamConfig):
        super().__init__()
        self.cfg = cfg


class ShardStream(ConfiguredStream):
    """Yields whole batches: uint8 images [B,3,H,W], token ids [B,L], and bookkeeping
    (`positions`: {logical worker: raw items read}, what the trainer's cursor keeps)."""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        cfg = self.cfg
        physical, n_workers = loader_worker()
        logical = (physical + cfg.batches_taken) % n_workers
        slot = cfg.rank * n_workers + logical
        n_slots = cfg.world_size * n_workers
        position = cfg.positions[logical] if cfg.positions else 0
        try:
            reader = StreamReader(cfg, slot, n_slots, position)
            while True:
                images, texts, skipped = reader.take(cfg.batch_size)
                yield {
                    "images": torch.stack(images),
                    "texts": tokenize(cfg, texts),
                    "logical": logical,
                    "position": reader.position,
                    "positions": {logical: reader.position},
                    "skipped": skipped,
                    "epoch": reader.epoch,
                }
        except StreamError as exc:
            yield {"error": str(exc)}


def _crop(raw: bytes, cfg: StreamConfig, seed: int) -> torch.Tensor | None:
    """Decode, randomly crop and resize one image to uint8 [3,S,S]; None when unreadable.
    The crop's randomness comes from `seed` (per item), so a resumed run replays it exactly."""
    from torchvision.transforms import InterpolationMode, RandomResizedCrop
    from torchvision.transforms.functional import pil_to_tensor, resized_crop

    try:
        pil = open_rgb(raw)  # over the pixel cap: refused from the header, skipped like a broken image
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            top, left, h, w = RandomResizedCrop.get_params(pil, cfg.crop_scale, (3 / 4, 4 / 3))
        pil = resized_crop(pil, top, left, h, w, [cfg.image_size, cfg.image_size],
                           InterpolationMode.BICUBIC, antialias=True)
        return pil_to_tensor(pil)
    except Exception:  # unreadable/truncated image: skipped and counted
        return None


def tokenize(cfg: StreamConfig, texts: list[str | None]) -> torch.Tensor | None:
    """Token ids of the batch's captions; None for an image-only stream (need_text False)."""
    if not cfg.need_text:
        return None
    if _takes_context_length(cfg.tokenizer):
        return cfg.tokenizer(texts, context_length=cfg.context_length)
    return cfg.tokenizer(texts)


def _takes_context_length(tokenizer: Any) -> bool:
    return hasattr(tokenizer, "context_length")


def make_loader(cfg: StreamConfig, pin_memory: bool = False,
                dataset: type[ConfiguredStream] = ShardStream) -> torch.utils.data.DataLoader:
    """A DataLoader over `dataset` (ShardStream's whole batches, or --streams' pieces of them);
    items come from the workers in strict round-robin order."""
    return torch.utils.data.DataLoader(
        dataset(cfg),
        batch_size=None,
        num_workers=cfg.num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if cfg.num_workers > 0 else None,
    )
