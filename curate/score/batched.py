"""Per-chunk work done once for the whole chunk instead of once per image.

Profiling the workers (bench/score.py) showed most of their time went to small per-image
calls with large fixed overheads: imagehash.phash (two scipy DCTs and a median per
image), ToTensor + Normalize on 32x32 tensors, and one tokenizer call per caption.
Here those run over the stacked chunk. Every function returns exactly (bit for bit)
what the per-image call returns; tests/test_score.py checks that against imagehash and
the model's own preprocess.

The perceptual hash is imagehash.phash's definition (same thumbnail, same scipy DCTs,
same 8x8 block and median), not a call to it, because the call is slower for the same
bits. Measured on 512 demo images at 64 px, 2 shared cores: imagehash.phash 240-290 us
per image; here 150-185 us (the 32x32 LANCZOS thumbnail, 120-145 us, is per image in
both), of which the batched DCTs and median take 23 us against 90-150 us for imagehash's
per-image numpy/scipy calls. The bits were identical on all 512. `phash` (one image) is
the same function for a single image; the demo pool uses it to keep near duplicates
within NEAR_DUP_MAX_PHASH_BITS of their original, as dedup will see them.

torch is imported only by the functions that use it, so the demo generator can import
the hash without it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

PHASH_SIDE = 32  # imagehash.phash: hash_size 8 x highfreq_factor 4
PHASH_BITS_SIDE = 8


def phash_thumbnail(image: Image.Image) -> np.ndarray:
    """The 32x32 greyscale thumbnail imagehash.phash starts from (uint8)."""
    return np.asarray(image.convert("L").resize((PHASH_SIDE, PHASH_SIDE), Image.Resampling.LANCZOS))


def phash_batch(thumbnails: np.ndarray) -> np.ndarray:
    """imagehash.phash of N thumbnails (N, 32, 32) as unsigned 64-bit integers.

    The same DCTs (scipy.fftpack, along rows then columns), the same low-frequency 8x8
    block and median, computed for the whole batch in a few numpy calls.
    """
    import scipy.fftpack

    n = len(thumbnails)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    dct = scipy.fftpack.dct(scipy.fftpack.dct(thumbnails, axis=1), axis=2)
    low = dct[:, :PHASH_BITS_SIDE, :PHASH_BITS_SIDE].reshape(n, -1)
    bits = low > np.median(low, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").reshape(n).astype(np.uint64)


PIXEL_SIDE = 16  # the grey thumbnail kept for dedup's pixel check (phash-pixels): 256 bytes
COLOUR_SIDE = 4  # the colour grid kept beside it: 4 x 4 mean RGB, 48 bytes


def pixel_thumbnail(phash_thumb: np.ndarray) -> bytes:
    """The 16x16 greyscale thumbnail (uint8, row-major) that dedup's phash-pixels compares:
    2x2 means of the 32x32 phash thumbnail, so it costs no second resize of the image."""
    side = PHASH_SIDE // PIXEL_SIDE
    blocks = phash_thumb.astype(np.float32).reshape(PIXEL_SIDE, side, PIXEL_SIDE, side).mean(axis=(1, 3))
    return np.round(blocks).astype(np.uint8).tobytes()


def colour_grid(image: Image.Image) -> bytes:
    """The picture's mean sRGB colour in a 4x4 grid (uint8, row-major, RGB per cell)."""
    grid = image.convert("RGB").resize((COLOUR_SIDE, COLOUR_SIDE), Image.Resampling.BOX)
    return np.asarray(grid, dtype=np.uint8).tobytes()


def phash(image: Image.Image) -> int:
    """imagehash.phash of one image as an unsigned 64-bit integer (a batch of one)."""
    return int(phash_batch(phash_thumbnail(image)[None])[0])


def _is_to_tensor(transform: Any) -> bool:
    from torchvision.transforms import ToTensor

    return isinstance(transform, ToTensor)  # open_clip's MaybeToTensor is a subclass


class SplitPreprocess:
    """An image preprocess run as a per-image PIL head and a batched tensor tail.

    Applies when the Compose ends in ToTensor followed only by Normalize (open_clip's
    transforms do): the head (resize, crop, mode) runs per image, ToTensor and Normalize
    once on the stacked batch. Any other preprocess runs per image, unchanged.
    """

    def __init__(self, preprocess: Callable) -> None:
        from torchvision.transforms import Compose, Normalize

        self.preprocess = preprocess
        self.head: list[Callable] | None = None
        self.to_tensor: Callable | None = None
        self.normalize: list[Normalize] = []
        transforms = list(getattr(preprocess, "transforms", [])) if isinstance(preprocess, Compose) else []
        cut = next((i for i, t in enumerate(transforms) if _is_to_tensor(t)), None)
        if cut is not None and all(isinstance(t, Normalize) and not t.inplace for t in transforms[cut + 1 :]):
            self.head = transforms[:cut]
            self.to_tensor = transforms[cut]
            self.normalize = transforms[cut + 1 :]

    def apply_head(self, image: Image.Image) -> Any:
        """Per image: the PIL part (or the whole preprocess when it cannot be split)."""
        if self.head is None:
            return self.preprocess(image)
        for transform in self.head:
            image = transform(image)
        return image

    def finish(self, heads: Sequence[Any]) -> torch.Tensor:
        """Stack what apply_head returned into one (N, C, H, W) float tensor."""
        import torch

        if self.head is None:
            return torch.stack(list(heads))
        arrays = [np.asarray(h) if isinstance(h, Image.Image) else None for h in heads]
        same = arrays and all(
            a is not None and a.dtype == np.uint8 and a.ndim == 3 and a.shape == arrays[0].shape for a in arrays
        )
        if not same:  # odd modes or sizes: the per-image way, still exact
            finished = []
            for h in heads:
                for transform in [self.to_tensor, *self.normalize]:
                    h = transform(h)
                finished.append(h)
            return torch.stack(finished)
        # torchvision's to_tensor: HWC uint8 -> CHW float / 255, then Normalize's sub_/div_
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        batch = batch.to(dtype=torch.get_default_dtype()).div(255)
        for norm in self.normalize:
            mean = torch.as_tensor(norm.mean, dtype=batch.dtype).view(1, -1, 1, 1)
            std = torch.as_tensor(norm.std, dtype=batch.dtype).view(1, -1, 1, 1)
            batch.sub_(mean).div_(std)
        return batch


def tokenize_batch(tokenizer: Any, captions: list[str], count_long: Callable[[str], int]) -> tuple[torch.Tensor, list[int]]:
    """Token ids (N, context) in one tokenizer call, and each caption's full token count.

    Padded ids give the count of a caption that fits (pad id 0); only a caption that
    fills the context is encoded again (count_long) to count what truncation cut off.
    """
    ids = tokenizer(captions)
    counts = (ids != 0).sum(dim=1).tolist()
    full = (ids[:, -1] != 0).tolist()
    return ids, [count_long(c) if f else n for c, n, f in zip(captions, counts, full)]
