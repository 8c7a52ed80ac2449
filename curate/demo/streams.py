"""The seeded random streams and file names every part of the demo pool draws from, so the
output depends only on the pool's arguments (pool.py, files.py and each source)."""
from __future__ import annotations

import hashlib
import random


def demo_rng(seed: int, *parts: object) -> random.Random:
    """The random stream of one part of the pool (a row, the plan, a seed-set image...)."""
    # String seeds hash with SHA-512 inside random.Random: stable across runs and machines.
    return random.Random(":".join(["clipcurate-demo", str(seed), *map(str, parts)]))


def file_stem(seed: int, *parts: object) -> str:
    """A 12-hex file name that says nothing about the image's kind."""
    return hashlib.sha1(":".join([str(seed), *map(str, parts)]).encode()).hexdigest()[:12]
