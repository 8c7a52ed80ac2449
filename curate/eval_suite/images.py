"""An image file as a task folder's member: its bytes as they are when clip_benchmark
reads the format, else re-encoded as PNG; either way checked to decode first."""
from __future__ import annotations

import io
from pathlib import Path

from clikit.errors import UserError
from shards.images import open_rgb
from shards.task_folder import IMAGE_EXTENSIONS


def member_image(path: Path) -> tuple[bytes, str]:
    """(bytes, extension) of an image file; a file that does not decode is a UserError."""
    try:
        image = open_rgb(path)
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds; each means "not usable"
        raise UserError(f"{path} does not decode as an image ({exc}); remove or replace it") from None
    ext = path.suffix.lower().lstrip(".")
    if ext in IMAGE_EXTENSIONS:
        return path.read_bytes(), ext
    buf = io.BytesIO()
    image.save(buf, "PNG")  # bmp, gif: a format clip_benchmark's reader does not take
    return buf.getvalue(), "png"
