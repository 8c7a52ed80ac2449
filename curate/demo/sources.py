"""Where the demo pool's pictures come from: a Source draws items, encodes and describes them.

pool.py plans the rows (kinds, duplicates, faults, URLs, tables) once for every source;
a source only says what one row shows. An item is anything with `label`, `width`,
`height` and `ext`. Every method that takes an rng draws from the stream it is given and
nothing else, so the output depends only on the pool's arguments.

- ShapesSource: shapes drawn with PIL (curate.demo.render), the default.
- RealSource (curate.demo.real): Fashion-MNIST photos, named GNOME icons and a few
  scikit-image photos.
"""
from __future__ import annotations

import random
from dataclasses import replace
from typing import Any, Callable, Protocol, Sequence

from curate.demo.captions import EVAL_TEMPLATES, describe, partly_wrong
from curate.demo.faults import huge_size, tiny_size
from curate.demo.real import RealSource
from curate.demo.render import COLOURS, ImageSpec, render_bytes, render_flat_huge, sample_spec
from curate.demo.shapes import CLASSES
from curate.demo.streams import demo_rng
from clikit.errors import UserError


class Source(Protocol):
    """What pool.py and files.py need from a source of pictures and captions."""

    name: str
    classes: tuple[str, ...]  # every label a pool row or seed row can have
    eval_classes: tuple[str, ...]  # the labels with held-out eval images
    eval_templates: tuple[str, ...]

    def plan(self, kinds: Sequence[str], rngs: Sequence[random.Random], seed: int) -> list[Any]:
        """One item per pool row, drawn in order; rngs[i] is row i's stream."""

    def encode(self, item: Any) -> bytes:
        """The item's image in its own format (a JPEG when the row is 'truncated')."""

    def encode_huge(self, item: Any) -> bytes:
        """A 'huge' row's image: item.width x item.height, flat, small on disk."""

    def describe(self, item: Any, rng: random.Random) -> str:
        """A true caption naming the class in the eval folder's words."""

    def partly_wrong(self, item: Any, rng: random.Random) -> str:
        """A caption right about the class, wrong about one detail."""

    def describe_other(self, label: str, rng: random.Random) -> str:
        """A true caption of some item of another class (mismatched rows of tiny pools)."""

    def seed_items(self, labels: Sequence[str], rngs: Sequence[random.Random], seed: int) -> list[Any]:
        """Seed-set items of the given labels (seed row k draws from rngs[k]), apart from the pool's."""

    def eval_items(self, label: str, count: int, seed: int) -> list[Any]:
        """Held-out items of one eval class."""

    def info(self) -> dict[str, Any]:
        """Extra summary entries for demo.json (the data used and its versions)."""


class ShapesSource:
    """Shapes drawn with PIL: 22 classes, 9 colours, 1-3 objects on patterned grounds."""

    name = "shapes"
    classes: tuple[str, ...] = tuple(CLASSES)
    eval_classes: tuple[str, ...] = tuple(CLASSES)
    eval_templates: tuple[str, ...] = EVAL_TEMPLATES

    def plan(self, kinds: Sequence[str], rngs: Sequence[random.Random], seed: int) -> list[ImageSpec]:
        specs, huge_seen = [], 0
        for kind, rng in zip(kinds, rngs):
            specs.append(_spec_for(kind, rng, huge_seen))
            huge_seen += kind == "huge"
        return specs

    def encode(self, item: ImageSpec) -> bytes:
        return render_bytes(item)

    def encode_huge(self, item: ImageSpec) -> bytes:
        return render_flat_huge(item)

    def describe(self, item: ImageSpec, rng: random.Random) -> str:
        return describe(item, rng)

    def partly_wrong(self, item: ImageSpec, rng: random.Random) -> str:
        return partly_wrong(item, rng)[0]

    def describe_other(self, label: str, rng: random.Random) -> str:
        other = rng.choice([c for c in CLASSES if c != label])
        return describe(sample_spec(rng, label=other), rng)

    def seed_items(self, labels: Sequence[str], rngs: Sequence[random.Random], seed: int) -> list[ImageSpec]:
        return [sample_spec(rng, label=label) for label, rng in zip(labels, rngs)]

    def eval_items(self, label: str, count: int, seed: int) -> list[ImageSpec]:
        return [sample_spec(demo_rng(seed, "eval", label, k), label=label) for k in range(count)]

    def info(self) -> dict[str, Any]:
        return {}


def _spec_for(kind: str, rng: random.Random, huge_index: int) -> ImageSpec:
    if kind == "tiny":
        w, h = tiny_size(rng)
        return sample_spec(rng, width=w, height=h)
    if kind == "huge":
        w, h = huge_size(rng)
        # 1-bit PNG / grey JPEG: black object on a plain ground, so the caption says so.
        spec = sample_spec(rng, width=w, height=h, fmt="PNG" if huge_index % 2 == 0 else "JPEG")
        return replace(spec, colour="black", rgb=COLOURS["black"], background="plain", count=1,
                       objects=spec.objects[:1])
    if kind == "truncated":
        return sample_spec(rng, fmt="JPEG")
    return sample_spec(rng)


# Each source by name, and how to make it (the real one checks what is installed).
SOURCES: dict[str, Callable[[], Source]] = {"shapes": ShapesSource, "real": RealSource.load}


def get_source(name: str) -> Source:
    """The source called `name` (a key of SOURCES); a UserError names the choices otherwise."""
    if name not in SOURCES:
        raise UserError(f"--source must be one of {', '.join(SOURCES)}, got {name!r}")
    return SOURCES[name]()
