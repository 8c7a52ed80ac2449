"""Small real training data for the train tests and bench/train.py: coloured shapes drawn
with PIL, captioned by shape and colour, written as webdataset tars (pool-style members)
plus a labelled eval folder. Not a substitute for the demo pool (curate.demo): it needs
only PIL and webdataset, and the tests pin counts that depend on its exact draws."""
from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

from shards.uid import sample_uid

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (235, 210, 20)}
SHAPES = ("circle", "square", "triangle")
CAPTIONS = ("a {c} {s}", "a photo of a {c} {s}", "a {c} {s} on a plain background", "{c} {s}")


def draw(colour: str, shape: str, rng: random.Random, size: int = 48) -> Any:
    """One shape of `colour` at a random place and size on a random light background."""
    from PIL import Image, ImageDraw

    bg = tuple(rng.randint(200, 255) for _ in range(3))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    r = rng.randint(size // 4, size // 2 - 2)
    cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
    fill = tuple(max(0, min(255, v + rng.randint(-25, 25))) for v in COLOURS[colour])
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return img


def make_shape_shards(out: str | Path, n: int, per_shard: int = 100, seed: int = 0, size: int = 48,
                      corrupt: int = 0) -> list[str]:
    """Write n samples into OUT/00000.tar... (members <key>.jpg/.txt/.json with uid, url,
    caption); the first `corrupt` samples get unreadable image bytes. Returns the tar paths."""
    import webdataset as wds

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths: list[str] = []
    writer = None
    for i in range(n):
        if i % per_shard == 0:
            if writer is not None:
                writer.close()
            path = out / f"{i // per_shard:05d}.tar"
            paths.append(str(path))
            writer = wds.TarWriter(str(path))
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        caption = rng.choice(CAPTIONS).format(c=colour, s=shape)
        url = f"http://127.0.0.1/shapes/{seed}/{i}.jpg"
        buf = io.BytesIO()
        draw(colour, shape, rng, size).save(buf, format="JPEG", quality=90)
        data = buf.getvalue() if i >= corrupt else b"not an image at all"
        uid = sample_uid(url, caption)
        writer.write({"__key__": f"{i:09d}", "jpg": data, "txt": caption,
                      "json": json.dumps({"uid": uid, "url": url, "caption": caption}).encode()})
    if writer is not None:
        writer.close()
    return paths


def make_eval_dir(out: str | Path, per_class: int = 4, seed: int = 1, size: int = 48) -> Path:
    """OUT/<colour shape>/NNN.jpg (+ NNN.txt caption for retrieval) and OUT/templates.txt."""
    out = Path(out)
    rng = random.Random(seed)
    for colour in COLOURS:
        for shape in SHAPES:
            folder = out / f"{colour} {shape}"
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(per_class):
                draw(colour, shape, rng, size).save(folder / f"{j:03d}.jpg", quality=90)
                (folder / f"{j:03d}.txt").write_text(f"a {colour} {shape}")
    (out / "templates.txt").write_text("a {}\na photo of a {}\n")
    return out
