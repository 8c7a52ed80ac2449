"""Opening an image from a shard or a folder with a pixel cap judged from its header.

Shards and image folders are untrusted input: one 100 Mpx image costs a decoder 300 MB
and seconds, and PIL's own guard (DecompressionBombError) only fires at twice its
89 Mpx warning limit. Every decoder of the project (download's guard, score, train's
stream, train eval, dedup --against) refuses images over MAX_PIXELS before decoding them.
"""
from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

MAX_PIXELS = 50_000_000  # `curate download --max-pixels` defaults to the same cap


class ImageTooLarge(ValueError):
    """The image's header declares more pixels than the cap; it was not decoded."""

    def __init__(self, width: int, height: int, max_pixels: float) -> None:
        self.width, self.height = width, height
        super().__init__(f"image area too large ({width}x{height} px, {width * height:,} pixels over the "
                         f"{max_pixels:,.0f} cap; refused before decoding)")


def open_rgb(source: bytes | str | Path, max_pixels: float = MAX_PIXELS) -> Image.Image:
    """The image decoded to RGB. Raises ImageTooLarge (from the header alone) over
    `max_pixels`, and PIL's errors for anything that does not decode."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
        try:
            width, height = img.size
        except Exception:  # noqa: BLE001 - a header without a size is not an image
            raise OSError("image header has no size") from None
        if width * height > max_pixels:
            raise ImageTooLarge(width, height, max_pixels)
        img.load()
        return img.convert("RGB")
