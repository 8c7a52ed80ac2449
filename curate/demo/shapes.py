"""The demo pool's object classes: class name -> drawing (SHAPES), in unit coordinates.

Every drawing is a list of primitives (mask value, polygon): polygons in unit coordinates
(centre 0, extent [-1, 1], y down), painted in order, 255 = paint and 0 = cut out, so that
holes (ring, moon, door) show the background through them. curate.demo.render places,
rotates and scales them onto the canvas.
"""
from __future__ import annotations

import math
from typing import Callable

Point = tuple[float, float]
Primitive = tuple[int, list[Point]]  # (mask value 255 or 0, polygon)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 40) -> list[Point]:
    return [(cx + rx * math.cos(2 * math.pi * k / n), cy + ry * math.sin(2 * math.pi * k / n)) for k in range(n)]


def _rect(x0: float, y0: float, x1: float, y1: float) -> list[Point]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _regular(n: int, r: float = 1.0, phase: float = -math.pi / 2) -> list[Point]:
    return [(r * math.cos(phase + 2 * math.pi * k / n), r * math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]


def _star() -> list[Primitive]:
    pts = [((1.0 if k % 2 == 0 else 0.42) * math.cos(-math.pi / 2 + math.pi * k / 5),
            (1.0 if k % 2 == 0 else 0.42) * math.sin(-math.pi / 2 + math.pi * k / 5) + 0.08) for k in range(10)]
    return [(255, pts)]


def _heart() -> list[Primitive]:
    pts = []
    for k in range(60):
        t = 2 * math.pi * k / 60
        x = 16 * math.sin(t) ** 3
        y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
        pts.append((x / 17, (y + 2) / 17))
    return [(255, pts)]


def _cross() -> list[Primitive]:
    a = 0.34
    return [(255, [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a)])]


def _arrow() -> list[Primitive]:
    return [(255, [(-1, -0.22), (0.15, -0.22), (0.15, -0.62), (1, 0), (0.15, 0.62), (0.15, 0.22), (-1, 0.22)])]


def _moon() -> list[Primitive]:
    return [(255, _ellipse(0, 0, 1, 1)), (0, _ellipse(0.45, -0.2, 0.82, 0.82))]


def _ring() -> list[Primitive]:
    return [(255, _ellipse(0, 0, 1, 1)), (0, _ellipse(0, 0, 0.58, 0.58))]


def _house() -> list[Primitive]:
    return [
        (255, _rect(-0.72, -0.1, 0.72, 0.95)),
        (255, [(-0.98, -0.08), (0, -0.98), (0.98, -0.08)]),
        (0, _rect(-0.16, 0.42, 0.16, 0.95)),
    ]


def _tree() -> list[Primitive]:
    return [
        (255, _rect(-0.15, 0.45, 0.15, 1.0)),
        (255, [(0, -1), (0.58, -0.15), (-0.58, -0.15)]),
        (255, [(0, -0.6), (0.82, 0.5), (-0.82, 0.5)]),
    ]


def _flower() -> list[Primitive]:
    petals = [(255, _ellipse(0.62 * math.cos(a), 0.62 * math.sin(a), 0.36, 0.36, 24)) for a in
              (2 * math.pi * k / 6 for k in range(6))]
    return petals + [(0, _ellipse(0, 0, 0.26, 0.26, 24)), (255, _ellipse(0, 0, 0.14, 0.14, 16))]


def _car() -> list[Primitive]:
    return [
        (255, _rect(-1, -0.08, 1, 0.42)),
        (255, [(-0.58, -0.06), (-0.36, -0.52), (0.36, -0.52), (0.62, -0.06)]),
        (0, [(-0.42, -0.12), (-0.28, -0.42), (0.27, -0.42), (0.45, -0.12)]),
        (0, _ellipse(-0.55, 0.48, 0.3, 0.3, 24)),
        (0, _ellipse(0.55, 0.48, 0.3, 0.3, 24)),
        (255, _ellipse(-0.55, 0.48, 0.24, 0.24, 24)),
        (255, _ellipse(0.55, 0.48, 0.24, 0.24, 24)),
    ]


def _cloud() -> list[Primitive]:
    return [
        (255, _ellipse(-0.52, 0.12, 0.42, 0.42)),
        (255, _ellipse(0.0, -0.15, 0.56, 0.56)),
        (255, _ellipse(0.52, 0.12, 0.42, 0.42)),
        (255, _rect(-0.52, 0.12, 0.52, 0.54)),
    ]


def _lightning() -> list[Primitive]:
    return [(255, [(0.22, -1), (-0.58, 0.12), (-0.06, 0.12), (-0.3, 1), (0.62, -0.25), (0.08, -0.25), (0.42, -1)])]


def _umbrella() -> list[Primitive]:
    canopy = [(math.cos(a), 0.85 * math.sin(a) + 0.05) for a in (math.pi + math.pi * k / 30 for k in range(31))]
    return [
        (255, canopy),
        (0, _ellipse(-0.66, 0.05, 0.34, 0.2, 24)),
        (0, _ellipse(0.0, 0.05, 0.34, 0.2, 24)),
        (0, _ellipse(0.66, 0.05, 0.34, 0.2, 24)),
        (255, _rect(-0.06, -0.1, 0.06, 0.88)),
        (255, [(0.06, 0.8), (0.06, 1.0), (-0.4, 1.0), (-0.4, 0.72), (-0.28, 0.72), (-0.28, 0.88), (-0.06, 0.88), (-0.06, 0.8)]),
    ]


def _fish() -> list[Primitive]:
    return [
        (255, _ellipse(-0.15, 0, 0.68, 0.44)),
        (255, [(0.38, 0), (1, -0.52), (1, 0.52)]),
        (0, _ellipse(-0.5, -0.1, 0.09, 0.09, 16)),
    ]


def _sun() -> list[Primitive]:
    rays = []
    for k in range(8):
        a = 2 * math.pi * k / 8
        c, s = math.cos(a), math.sin(a)
        w = 0.1
        rays.append((255, [(0.62 * c - w * s, 0.62 * s + w * c), (1.0 * c, 1.0 * s), (0.62 * c + w * s, 0.62 * s - w * c)]))
    return [(255, _ellipse(0, 0, 0.5, 0.5))] + rays


def _boat() -> list[Primitive]:
    return [
        (255, [(-1, 0.38), (1, 0.38), (0.66, 0.82), (-0.66, 0.82)]),
        (255, _rect(-0.04, -1, 0.04, 0.38)),
        (255, [(0.1, -0.95), (0.1, 0.28), (0.82, 0.28)]),
        (255, [(-0.1, -0.72), (-0.1, 0.28), (-0.62, 0.28)]),
    ]


def _hourglass() -> list[Primitive]:
    return [
        (255, _rect(-0.75, -1, 0.75, -0.82)),
        (255, _rect(-0.75, 0.82, 0.75, 1)),
        (255, [(-0.62, -0.82), (0.62, -0.82), (0.08, 0), (0.62, 0.82), (-0.62, 0.82), (-0.08, 0)]),
    ]


# Class name -> drawing. Names are the words captions use and the eval folder names.
SHAPES: dict[str, Callable[[], list[Primitive]]] = {
    "circle": lambda: [(255, _ellipse(0, 0, 1, 1))],
    "square": lambda: [(255, _rect(-0.82, -0.82, 0.82, 0.82))],
    "triangle": lambda: [(255, [(0, -0.95), (1, 0.8), (-1, 0.8)])],
    "star": _star,
    "heart": _heart,
    "cross": _cross,
    "arrow": _arrow,
    "moon": _moon,
    "ring": _ring,
    "diamond": lambda: [(255, [(0, -1), (0.68, 0), (0, 1), (-0.68, 0)])],
    "hexagon": lambda: [(255, _regular(6, 1.0, 0.0))],
    "house": _house,
    "tree": _tree,
    "flower": _flower,
    "car": _car,
    "cloud": _cloud,
    "lightning bolt": _lightning,
    "umbrella": _umbrella,
    "fish": _fish,
    "sun": _sun,
    "boat": _boat,
    "hourglass": _hourglass,
}
CLASSES: tuple[str, ...] = tuple(SHAPES)

# Shapes whose identity survives any rotation get a free angle; the rest stay upright-ish.
FREE_ROTATION = {"arrow", "cross", "star", "moon", "hexagon", "diamond", "square", "triangle"}
