"""The arguments of one dedup run: the methods chosen (their defaults are on their records,
methods.py), what is recorded in summary.json (`args`, `args.resolved`) and the checks made
before any work."""
from __future__ import annotations

import re
from dataclasses import InitVar, asdict, dataclass
from pathlib import Path
from typing import Any

from curate.dedup.hashes import MAX_PHASH_BITS
from curate.dedup.keep import KEEP_POLICIES
from curate.dedup.methods import METHODS, Method
from clikit.errors import UserError

# The recommended default: byte copies, plus near copies whose phashes are close AND whose
# stored thumbnails (grey shape and colour grid) agree. phash alone is fooled by flat grounds;
# confirming by the seed model's embeddings (phash-knn) is only as good as that model, and no
# one cosine bar held for both seed models on the real demo pool (phash_pixels.py), while
# the thumbnails gave near-pair precision >= 0.93 and recall >= 0.96 on six demo pools
# (shapes and real), any seed. Even measured on the pool, phash-knn's bar reached only
# 0.96 / 0.86 (scratch seed) and 0.76 / 0.88 (LiT seed) near-pair precision / recall on a
# second real pool draw. Each method's own defaults are on its record (methods.py).
DEFAULT_METHOD = "exact,phash-pixels"
AGAINST_THRESHOLD = 0.95  # --against's cosine bar when --threshold is not given
INDEX_KINDS = ("auto", "flat", "ivf")
# Runaway-group guard: a group larger than this (default: 1% of the pool, at least 50) is
# near pairs chaining look-alikes, not copies of one picture; its near pairs are dropped.
MIN_GROUP_LIMIT = 50
GROUP_LIMIT_FRACTION = 0.01
FORMAT_VERSION = 3  # 3: runaway-group guard (max_group, oversized_groups)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def parse_methods(text: str) -> tuple[str, ...]:
    """'exact,phash-knn' -> ("exact", "phash-knn"): names checked, `all` expanded, repeats
    dropped, in the order METHODS run (exact first, so byte copies are labelled exact)."""
    names = [m.strip() for m in str(text).split(",") if m.strip()]
    if not names:
        raise UserError(f"--method {text!r} names no method; use one or more of {', '.join(METHODS)} or all, comma-separated")
    chosen: set[str] = set()
    for name in names:
        if name == "all":
            chosen.update(m.name for m in METHODS.values() if m.in_all)
        elif name in METHODS:
            chosen.add(name)
        else:
            raise UserError(f"--method {name!r} is not one of {', '.join(METHODS)}, all (comma-separate several)")
    return tuple(m for m in METHODS if m in chosen)


@dataclass
class DedupSettings:
    """Arguments of one dedup run; everything but `overwrite`/`progress` is recorded.

    `threshold` / `phash_bits` left as None take each method's default (its Method
    record); a given value applies to every method that uses it (the cosine threshold
    also to `against`).
    """

    scores: str
    method: str = DEFAULT_METHOD
    threshold: float | None = None
    # The dedup name asked for (--name): the run writes dedup/NAME/. None: the methods joined by '+'
    # (`name` is the one used either way). summary.json's args record it as "tag", --name's older spelling.
    dedup_name: str | None = None
    keep: str = "best-score"
    clusters: int | None = None
    phash_bits: int | None = None
    index: str = "auto"
    nlist: int | None = None
    nprobe: int | None = None
    against: str | None = None
    seed: int = 0
    max_group: int | None = None
    overwrite: bool = False
    progress: bool = False
    tag: InitVar[str | None] = None  # the older keyword of dedup_name, as --tag is of --name

    def __post_init__(self, tag: str | None) -> None:
        if tag is not None:
            if self.dedup_name is not None and self.dedup_name != tag:
                raise UserError(f"--name {self.dedup_name} and --tag {tag} disagree; give --name only")
            self.dedup_name = tag

    @property
    def name(self) -> str:
        """The dedup name the run writes under, dedup/NAME/: the one asked for, else the methods joined by '+'."""
        if self.dedup_name:
            return self.dedup_name
        if "," not in self.method:
            return self.method.strip()
        return "+".join(parse_methods(self.method))  # "exact,phash-knn" -> dedup/exact+phash-knn

    @property
    def methods(self) -> tuple[str, ...]:
        return parse_methods(self.method)

    @property
    def chosen(self) -> tuple[Method, ...]:
        """The Method records of `methods`, in the order they run."""
        return tuple(METHODS[name] for name in self.methods)

    @property
    def needs_vectors(self) -> bool:
        """Whether the run reads the image embeddings (a method needs them, or --against)."""
        return any(m.needs_vectors for m in self.chosen) or bool(self.against)

    def threshold_for(self, method: str) -> float | str:
        """The threshold `method` uses (its record's default unless --threshold); "auto"
        for phash-knn without --threshold: measured on the pool (calibrate.py)."""
        return self.threshold if self.threshold is not None else METHODS[method].threshold

    def against_threshold(self) -> float:
        """--against's cosine bar."""
        return self.threshold if self.threshold is not None else AGAINST_THRESHOLD

    def phash_bits_for(self, method: str) -> int:
        """The Hamming bound `method` uses (its record's default unless --phash-bits)."""
        return self.phash_bits if self.phash_bits is not None else METHODS[method].phash_bits

    def max_group_for(self, samples: int) -> int:
        """The runaway-group limit for a pool of `samples` (--max-group, else 1% / 50)."""
        if self.max_group is not None:
            return self.max_group
        return max(MIN_GROUP_LIMIT, int(GROUP_LIMIT_FRACTION * samples))

    def resolved(self) -> dict[str, dict[str, Any]]:
        """The parameters each method actually ran with (defaults filled in)."""
        out: dict[str, dict[str, Any]] = {}
        for m in self.chosen:
            params: dict[str, Any] = {}
            if m.phash_bits is not None:
                params["phash_bits"] = self.phash_bits_for(m.name)
            if m.threshold is not None:
                params["threshold"] = self.threshold_for(m.name)
            out[m.name] = params
        if self.against:
            out["against"] = {"threshold": self.against_threshold()}
        return out

    def recorded(self) -> dict[str, Any]:
        # the file's keys as they have always been: "tag" for the dedup name asked for
        args = {("tag" if key == "dedup_name" else key): value for key, value in asdict(self).items()}
        for key in ("overwrite", "progress"):
            args.pop(key)
        if args["against"]:
            args["against"] = str(Path(args["against"]).resolve())
        args["method"] = ",".join(self.methods)  # "all" and any spelling of one list: the same run
        args["resolved"] = self.resolved()
        return args


def validate(settings: DedupSettings) -> None:
    """Reject bad arguments before any work, with a message saying what to pass."""
    s = settings
    methods = parse_methods(s.method)
    if s.threshold is not None and not (0.0 < s.threshold <= 1.0):
        raise UserError(f"--threshold {s.threshold} is outside (0, 1]; it is a similarity (a cosine, or phash-pixels' thumbnail correlation), e.g. 0.95")
    if s.keep not in KEEP_POLICIES:
        raise UserError(f"--keep {s.keep!r} is not one of {', '.join(KEEP_POLICIES)}")
    if s.phash_bits is not None and not (0 <= s.phash_bits <= MAX_PHASH_BITS):
        raise UserError(f"--phash-bits {s.phash_bits} is outside 0..{MAX_PHASH_BITS} (Hamming distance of 64-bit hashes)")
    if s.index not in INDEX_KINDS:
        raise UserError(f"--index {s.index!r} is not one of {', '.join(INDEX_KINDS)}")
    for option, value in (("--clusters", s.clusters), ("--nlist", s.nlist), ("--nprobe", s.nprobe)):
        if value is not None and value < 1:
            raise UserError(f"{option} {value} must be at least 1 (or left out for the automatic choice)")
    if s.max_group is not None and s.max_group < 2:
        raise UserError(f"--max-group {s.max_group} must be at least 2 (samples in one duplicate group)")
    if s.clusters is not None and "semdedup" not in methods:
        raise UserError("--clusters applies to --method semdedup only")
    if not _NAME.match(s.name):
        raise UserError(f"--name {s.name!r} must be letters, digits, '.', '_', '+' or '-'")
