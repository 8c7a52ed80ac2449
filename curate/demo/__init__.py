"""The demo pool: a procedurally drawn, fully known image-text pool with web-style noise
and faults, served over loopback by curate.serve (docs/design.md, "The demo pool")."""
from __future__ import annotations

from curate.demo.captions import EVAL_TEMPLATES
from curate.demo.faults import HUGE_MIN_PIXELS, MIN_SIDE
from curate.demo.pool import DEFAULT_FRACTIONS, EXPECTED_OUTCOME, KINDS, kind_counts, make_demo_pool
from curate.demo.render import COLOURS
from curate.demo.shapes import CLASSES

__all__ = [
    "CLASSES", "COLOURS", "DEFAULT_FRACTIONS", "EVAL_TEMPLATES", "EXPECTED_OUTCOME", "HUGE_MIN_PIXELS",
    "KINDS", "MIN_SIDE", "kind_counts", "make_demo_pool",
]
