"""Drawing the demo pool's images: colours, grounds, placement, sampling and encoding.

sample_spec draws an ImageSpec (class, colour, count, ground, canvas, format); render
paints the ground, then the class's primitives from curate.demo.shapes, each placed,
rotated and scaled into its cell, through a mask (255 = paint, 0 = cut out, in order) so
that holes show the ground. Images are drawn at twice their size and reduced, which
smooths the edges without a slow antialiasing path.
"""
from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, replace

from PIL import Image, ImageDraw

from curate.demo.shapes import CLASSES, FREE_ROTATION, SHAPES

SUPERSAMPLE = 2

# Saturated object colours; names are the words captions use.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 15),
    "yellow": (240, 205, 25),
    "green": (35, 155, 55),
    "blue": (35, 85, 215),
    "purple": (135, 55, 185),
    "pink": (240, 110, 180),
    "brown": (125, 75, 35),
    "black": (20, 20, 20),
}

# Muted background tones; a pattern's second tone is a shade of the first, so the
# object (saturated, far from the background) always stands out.
BACKGROUND_TONES: tuple[tuple[int, int, int], ...] = (
    (250, 250, 250),
    (215, 215, 215),
    (245, 235, 210),
    (205, 222, 240),
    (212, 236, 212),
    (236, 214, 226),
    (75, 75, 75),
    (35, 45, 85),
)

BACKGROUNDS: tuple[str, ...] = ("plain", "striped", "dotted", "gradient", "checkered")

MIN_CONTRAST = 140.0  # Euclidean RGB distance between object colour and background


@dataclass(frozen=True)
class ObjectPlacement:
    cx: float  # centre, pixels
    cy: float
    radius: float  # half extent, pixels
    angle: float  # degrees


@dataclass(frozen=True)
class ImageSpec:
    """Everything needed to draw one image and to describe it in words."""

    label: str
    colour: str
    count: int
    background: str
    width: int
    height: int
    size_word: str | None  # "small", "large" or None when the object is medium
    rgb: tuple[int, int, int]
    bg_rgb: tuple[int, int, int]
    bg_rgb2: tuple[int, int, int]
    bg_param: int  # stripe width / dot spacing / check size / gradient direction, pixels
    objects: tuple[ObjectPlacement, ...]
    fmt: str  # "JPEG" or "PNG"
    quality: int

    @property
    def ext(self) -> str:
        return "jpg" if self.fmt == "JPEG" else "png"

    def with_size(self, width: int, height: int, rng: random.Random) -> "ImageSpec":
        """The same content laid out again on a canvas of another size."""
        return replace(self, width=width, height=height,
                       objects=_layout(rng, self.count, width, height, self.label, self.size_word))


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)  # type: ignore[return-value]


def _layout(rng: random.Random, count: int, width: int, height: int, label: str,
            size_word: str | None) -> tuple[ObjectPlacement, ...]:
    """Non-overlapping cells along the long side, one object per cell, kept large."""
    horizontal = width >= height
    long_side, short_side = (width, height) if horizontal else (height, width)
    cell = long_side / count
    lo, hi = {"small": (0.5, 0.6), "large": (0.84, 0.94), None: (0.62, 0.82)}[size_word]
    objects = []
    for k in range(count):
        half = min(cell, short_side) / 2
        radius = half * rng.uniform(lo, hi)
        slack = half - radius
        along = cell * (k + 0.5) + rng.uniform(-slack, slack) * 0.8
        across = short_side / 2 + rng.uniform(-slack, slack) * 0.8
        if label in FREE_ROTATION:
            angle = rng.choice((0.0, 90.0, 180.0, 270.0)) + rng.uniform(-20, 20)
        else:
            angle = rng.uniform(-12, 12)
        cx, cy = (along, across) if horizontal else (across, along)
        objects.append(ObjectPlacement(cx, cy, radius, angle))
    return tuple(objects)


def sample_spec(rng: random.Random, label: str | None = None, width: int | None = None,
                height: int | None = None, fmt: str | None = None) -> ImageSpec:
    """Draw a random image description: class, colour, count, background, size, format."""
    label = label if label is not None else rng.choice(CLASSES)
    colour = rng.choice(tuple(COLOURS))
    rgb = _jitter(COLOURS[colour], rng, 12)
    count = rng.choices((1, 2, 3), weights=(0.6, 0.27, 0.13))[0]
    if width is None or height is None:
        # Several objects get a wide (or tall) canvas so each stays large in its cell.
        aspect = {1: rng.uniform(1.0, 1.5), 2: rng.uniform(1.6, 2.0), 3: rng.uniform(2.2, 2.6)}[count]
        short = rng.randint(64, 144) if count == 1 else rng.randint(64, 104)
        long_ = min(256, int(round(short * aspect)))
        width, height = (long_, short) if rng.random() < 0.75 else (short, long_)
    tones = [t for t in BACKGROUND_TONES if math.dist(t, rgb) >= MIN_CONTRAST]
    bg_rgb = _jitter(rng.choice(tones), rng, 6)
    shade = rng.choice((-1, 1)) * rng.randint(22, 40)
    if sum(bg_rgb) / 3 + shade > 250 or sum(bg_rgb) / 3 + shade < 10:
        shade = -shade
    bg_rgb2 = tuple(max(0, min(255, c + shade)) for c in bg_rgb)
    background = rng.choice(BACKGROUNDS)
    bg_param = rng.randint(5, 14)
    size_word = rng.choices(("small", None, "large"), weights=(0.2, 0.55, 0.25))[0]
    fmt = fmt if fmt is not None else ("PNG" if rng.random() < 0.35 else "JPEG")
    quality = rng.randint(75, 95)
    objects = _layout(rng, count, width, height, label, size_word)
    return ImageSpec(label, colour, count, background, width, height, size_word, rgb, bg_rgb,
                     bg_rgb2, bg_param, objects, fmt, quality)  # type: ignore[arg-type]


def _draw_background(spec: ImageSpec, w: int, h: int, s: int) -> Image.Image:
    img = Image.new("RGB", (w, h), spec.bg_rgb)
    draw = ImageDraw.Draw(img)
    p = spec.bg_param * s
    if spec.background == "striped":
        vertical = p % 2 == 0
        for x in range(0, (w if vertical else h), 2 * p):
            draw.rectangle((x, 0, x + p - 1, h) if vertical else (0, x, w, x + p - 1), fill=spec.bg_rgb2)
    elif spec.background == "dotted":
        r = max(1, p // 4)
        for y in range(p // 2, h, p):
            for x in range(p // 2, w, p):
                draw.ellipse((x - r, y - r, x + r, y + r), fill=spec.bg_rgb2)
    elif spec.background == "checkered":
        for y in range(0, h, p):
            for x in range((y // p) % 2 * p, w, 2 * p):
                draw.rectangle((x, y, x + p - 1, y + p - 1), fill=spec.bg_rgb2)
    elif spec.background == "gradient":
        # A linear ramp between the two tones, vertical or horizontal.
        ramp = Image.linear_gradient("L").resize((w, h) if p % 2 else (h, w))
        if not p % 2:
            ramp = ramp.transpose(Image.Transpose.ROTATE_90)
        img = Image.composite(Image.new("RGB", (w, h), spec.bg_rgb2), img, ramp)
    return img


def _draw_objects(draw: ImageDraw.ImageDraw, spec: ImageSpec, scale: float, paint: int, cut: int) -> None:
    for obj in spec.objects:
        a = math.radians(obj.angle)
        ca, sa = math.cos(a), math.sin(a)
        r = obj.radius * scale
        for value, poly in SHAPES[spec.label]():
            pts = [(obj.cx * scale + r * (x * ca - y * sa), obj.cy * scale + r * (x * sa + y * ca)) for x, y in poly]
            draw.polygon(pts, fill=paint if value else cut)


def draw_mask(spec: ImageSpec, w: int, h: int, scale: float) -> Image.Image:
    """The objects of a spec as an L mask of size (w, h); scale maps spec pixels to mask pixels."""
    mask = Image.new("L", (w, h), 0)
    _draw_objects(ImageDraw.Draw(mask), spec, scale, 255, 0)
    return mask


def render(spec: ImageSpec) -> Image.Image:
    """Draw a spec as an RGB image of exactly (spec.width, spec.height)."""
    s = SUPERSAMPLE
    w, h = spec.width * s, spec.height * s
    img = _draw_background(spec, w, h, s)
    img.paste(spec.rgb, (0, 0, w, h), draw_mask(spec, w, h, s))
    return img.reduce(s)


def encode(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    """Image bytes in the given format; the same input always gives the same bytes."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=quality)
    else:
        img.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def render_bytes(spec: ImageSpec) -> bytes:
    """A spec rendered and encoded in its own format and quality."""
    return encode(render(spec), spec.fmt, spec.quality)


def render_flat_huge(spec: ImageSpec) -> bytes:
    """A very large image that stays small on disk: one flat object on a flat ground.

    PNGs are 1-bit (black object on white), JPEGs greyscale at low quality: drawing and
    encoding 80+ Mpx in RGB would take seconds each.
    """
    w, h = spec.width, spec.height
    buf = io.BytesIO()
    if spec.fmt == "PNG":
        img = Image.new("1", (w, h), 1)
        _draw_objects(ImageDraw.Draw(img), spec, 1.0, 0, 1)
        img.save(buf, "PNG")
    else:
        img = Image.new("L", (w, h), 235)
        _draw_objects(ImageDraw.Draw(img), spec, 1.0, 30, 235)
        img.save(buf, "JPEG", quality=30)
    return buf.getvalue()
