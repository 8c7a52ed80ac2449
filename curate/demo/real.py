"""The real demo pool's source: Fashion-MNIST product photos, named GNOME icons and a few
scikit-image photos (curate.demo.real_data), with captions naming what they show.

Products are the 28x28 grey photos tinted with a named colour on a light ground and
upscaled (64-160 px); icons are composited on a light ground (64-224 px); photos are
scaled to a long side of 128-320 px. An icon or photo is one drawing, so it appears in
the pool at most once (its duplicates are planned dup groups); products are distinct
training images. The seed set takes other training images, and for icons and photos
another framing of the same drawing (there is only one); eval images are held out:
Fashion-MNIST's t10k split and Adwaita's own drawing of an icon name.
"""
from __future__ import annotations

import io
import random
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
from PIL import Image

from curate.demo import real_data as data
from curate.demo.faults import huge_size, tiny_size
from curate.demo.real_captions import GROUNDS, REAL_EVAL_TEMPLATES, TINTS, caption, partly_wrong_caption
from curate.demo.render import encode
from curate.demo.streams import demo_rng
from clikit.errors import UserError

_NO_ITEM_OF_ITS_OWN = ("dup-exact", "dup-near", "broken-404", "not-image")  # shows another row's item or none
_ICON_SHARE, _PHOTO_SHARE = 5, 25  # at most one pool row in 5 is an icon, one in 25 a photo


@dataclass(frozen=True)
class RealItem:
    """One picture: where it comes from (origin, key), how it is framed and encoded."""

    label: str
    origin: str  # "fashion" (key: index in split), "icon" (key: icon name), "photo" (key: skimage name)
    key: Any
    width: int
    height: int
    fmt: str  # "JPEG" or "PNG"
    quality: int
    split: str = "train"  # fashion: "train" or "t10k"; icon: "gnome" or "adwaita"
    colour: str | None = None  # a product's tint
    ground: str = "white"
    crop: tuple[float, float, float, float] = field(default=(0.0, 0.0, 1.0, 1.0))  # of the source picture

    @property
    def ext(self) -> str:
        return "jpg" if self.fmt == "JPEG" else "png"


class RealSource:
    """Real images from installed packages (see the module docstring); a curate.demo.sources.Source."""

    name = "real"
    eval_templates = REAL_EVAL_TEMPLATES

    def __init__(self, photos: bool) -> None:
        self.icons = tuple(data.ICONS)
        self.photos = tuple(data.PHOTOS) if photos else ()
        self.classes: tuple[str, ...] = (data.FASHION_CLASSES + tuple(data.ICONS.values())
                                         + tuple(data.PHOTOS[p] for p in self.photos))
        self.eval_classes: tuple[str, ...] = data.FASHION_CLASSES + tuple(
            data.ICONS[n] for n in self.icons if data.adwaita_path(n) is not None)
        self._icon_of = {label: name for name, label in data.ICONS.items()}
        self._photo_of = {data.PHOTOS[p]: p for p in self.photos}

    @classmethod
    def load(cls) -> "RealSource":
        """The source over what is installed; a UserError names missing Debian packages."""
        data.check_installed()
        return cls(photos=data.skimage_available())

    def info(self) -> dict[str, Any]:
        return {"sources": data.versions(),
                "classes_without_eval": [c for c in self.classes if c not in self.eval_classes]}

    # -- items ------------------------------------------------------------------------------
    def _order(self, seed: int) -> list[int]:
        """Training images in a seeded order: the pool takes them from the front, the seed
        set from the back, so the two never share a photo."""
        order = list(data.fashion_unique("train"))
        demo_rng(seed, "real-fashion-order").shuffle(order)
        return order

    def _item(self, origin: str, key: Any, kind: str, rng: random.Random, huge_png: bool = False,
              split: str = "train") -> RealItem:
        label = self._label(origin, key, split)
        fmt = "JPEG" if kind == "truncated" else ("PNG" if rng.random() < 0.35 else "JPEG")
        quality = rng.randint(75, 95)
        colour = rng.choice(tuple(TINTS)) if origin == "fashion" else None
        ground = rng.choice(tuple(GROUNDS))
        if kind == "huge":  # flat grey or 1-bit: a black product on white, so the caption says so
            w, h = huge_size(rng)
            return RealItem(label, origin, key, w, h, "PNG" if huge_png else "JPEG", 30, split,
                            "black" if origin == "fashion" else None, "white")
        crop = (0.0, 0.0, 1.0, 1.0)
        if kind == "seed-photo":  # another framing of the one photo: 75-100% of it
            s = rng.uniform(0.75, 1.0)
            x0, y0 = rng.uniform(0, 1 - s), rng.uniform(0, 1 - s)
            crop = (x0, y0, x0 + s, y0 + s)
        if kind == "tiny":
            w, h = tiny_size(rng)
        elif origin == "photo":
            src = data.photo(key).size
            aspect = (src[0] * (crop[2] - crop[0])) / (src[1] * (crop[3] - crop[1]))
            long_ = rng.randint(128, 320)
            w, h = (long_, max(64, round(long_ / aspect))) if aspect >= 1 else (max(64, round(long_ * aspect)), long_)
        else:
            side = rng.randint(64, 160) if origin == "fashion" else rng.randint(64, 224)
            pad = 1.0 if rng.random() < 0.5 else rng.uniform(1.05, 1.4)  # some canvases wider or taller
            w, h = (round(side * pad), side) if rng.random() < 0.6 else (side, round(side * pad))
        return RealItem(label, origin, key, w, h, fmt, quality, split, colour, ground, crop)

    def _label(self, origin: str, key: Any, split: str) -> str:
        if origin == "fashion":
            return data.FASHION_CLASSES[int(data.fashion_split(split)[1][key])]
        return data.ICONS[key] if origin == "icon" else data.PHOTOS[key]

    def plan(self, kinds: Sequence[str], rngs: Sequence[random.Random], seed: int) -> list[RealItem]:
        prng = demo_rng(seed, "real-plan")
        own = [i for i, k in enumerate(kinds) if k not in _NO_ITEM_OF_ITS_OWN]
        icons, photos = list(self.icons), list(self.photos)
        prng.shuffle(icons)
        prng.shuffle(photos)
        icons = icons[:min(len(icons), len(kinds) // _ICON_SHARE)]
        photos = photos[:min(len(photos), len(kinds) // _PHOTO_SHARE)]
        places = prng.sample(own, min(len(own), len(icons) + len(photos)))
        special = {i: ("icon", n) for i, n in zip(places, icons)}
        special.update({i: ("photo", n) for i, n in zip(places[len(icons):], photos)})
        order = self._order(seed)
        if len(kinds) > len(order) // 2:
            raise UserError(f"--source real holds {len(order)} training photos; use --size up to {len(order) // 2}")
        items, next_fashion, huge_seen = [], 0, 0
        for i, (kind, rng) in enumerate(zip(kinds, rngs)):
            origin, key = special.get(i, ("fashion", None))
            if origin == "fashion":
                key, next_fashion = order[next_fashion], next_fashion + 1
            items.append(self._item(origin, key, kind, rng, huge_png=huge_seen % 2 == 0))
            huge_seen += kind == "huge"
        return items

    def seed_items(self, labels: Sequence[str], rngs: Sequence[random.Random], seed: int) -> list[RealItem]:
        order = self._order(seed)
        by_class: dict[str, list[int]] = {c: [] for c in data.FASHION_CLASSES}
        # From the back half of the order; the pool takes its photos from the front half.
        keep = order[len(order) // 2:][::-1]
        for idx in keep:
            by_class[self._label("fashion", idx, "train")].append(idx)
        items, taken = [], {c: 0 for c in data.FASHION_CLASSES}
        for label, rng in zip(labels, rngs):
            if label in taken:
                if taken[label] >= len(by_class[label]):
                    raise UserError("--seed-size is too large for the real demo pool's training photos")
                items.append(self._item("fashion", by_class[label][taken[label]], "clean", rng))
                taken[label] += 1
            elif label in self._icon_of:
                items.append(self._item("icon", self._icon_of[label], "clean", rng))
            else:
                items.append(self._item("photo", self._photo_of[label], "seed-photo", rng))
        return items

    def eval_items(self, label: str, count: int, seed: int) -> list[RealItem]:
        if label in self._icon_of:
            return [self._item("icon", self._icon_of[label], "clean", demo_rng(seed, "eval", label, k),
                               split="adwaita") for k in range(count)]
        images, labels = data.fashion_split("t10k")
        pick = [i for i in data.fashion_unique("t10k") if data.FASHION_CLASSES[labels[i]] == label]
        chosen = demo_rng(seed, "eval", label).sample(pick, min(count, len(pick)))
        return [self._item("fashion", i, "clean", demo_rng(seed, "eval", label, k), split="t10k")
                for k, i in enumerate(chosen)]

    # -- pictures and captions ----------------------------------------------------------------
    def picture(self, item: RealItem) -> Image.Image:
        """The item as an RGB image of exactly (item.width, item.height)."""
        ground = GROUNDS[item.ground]
        if item.origin == "fashion":
            content = _tint(data.fashion_split(item.split)[0][item.key], TINTS[item.colour or "black"], ground)
        elif item.origin == "icon":
            icon = data.gnome_icon(item.key) if item.split != "adwaita" else data.adwaita_icon(item.key)
            content = Image.new("RGB", icon.size, ground)
            content.paste(icon, (0, 0), icon)
        else:
            content = data.photo(item.key)
            w, h = content.size
            x0, y0, x1, y1 = item.crop
            content = content.crop((round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h)))
        # Fit inside the canvas, keeping the aspect, on the ground colour.
        scale = min(item.width / content.width, item.height / content.height)
        size = (max(1, round(content.width * scale)), max(1, round(content.height * scale)))
        # reducing_gap: shrink by whole factors first (fast), then Lanczos the rest.
        content = (content.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0) if scale < 1
                   else content.resize(size, Image.Resampling.BICUBIC))
        canvas = Image.new("RGB", (item.width, item.height), ground)
        canvas.paste(content, ((item.width - size[0]) // 2, (item.height - size[1]) // 2))
        return canvas

    def encode(self, item: RealItem) -> bytes:
        return encode(self.picture(item), item.fmt, item.quality)

    def encode_huge(self, item: RealItem) -> bytes:
        # A small grey picture blown up with nearest neighbours: flat blocks, cheap to encode.
        small = self.picture(_shrunk(item)).convert("L")
        buf = io.BytesIO()
        if item.fmt == "PNG":
            small.point(lambda v: 255 if v >= 160 else 0).convert("1").resize(
                (item.width, item.height), Image.Resampling.NEAREST).save(buf, "PNG")
        else:
            small.resize((item.width, item.height), Image.Resampling.NEAREST).save(buf, "JPEG", quality=30)
        return buf.getvalue()

    def describe(self, item: RealItem, rng: random.Random) -> str:
        return caption(item.origin, item.label, rng, colour=item.colour, ground=item.ground)

    def partly_wrong(self, item: RealItem, rng: random.Random) -> str:
        return partly_wrong_caption(item.origin, item.label, rng, colour=item.colour, ground=item.ground)

    def describe_other(self, label: str, rng: random.Random) -> str:
        other = rng.choice([c for c in data.FASHION_CLASSES if c != label])
        return caption("fashion", other, rng, colour=rng.choice(tuple(TINTS)), ground=rng.choice(tuple(GROUNDS)))


def _shrunk(item: RealItem) -> RealItem:
    """The item on a canvas of the same shape, about 128 px on its short side."""
    k = max(1, min(item.width, item.height) // 128)
    return replace(item, width=max(1, item.width // k), height=max(1, item.height // k))


def _tint(grey: np.ndarray, tint: tuple[int, int, int], ground: tuple[int, int, int]) -> Image.Image:
    """A Fashion-MNIST photo (bright garment on black) as a garment of `tint` on `ground`."""
    v = grey.astype(np.float32)[..., None] / 255.0
    alpha = np.clip(v * 1.8, 0.0, 1.0)  # the garment's silhouette, soft at the edges
    shade = np.asarray(tint, np.float32) * (0.55 + 0.45 * v)  # its folds and texture
    out = np.asarray(ground, np.float32) * (1 - alpha) + shade * alpha
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")
