"""Generate the demo pool: a fully known image-text pool to curate, served over loopback.

Every row's kind (clean, noisy caption, duplicate, fault) is decided up front from the
seed, then each row draws from its own random stream, so the output depends only on
(size, seed, base_url, seed_size, eval_per_class) and not on the order of the work.
"""
from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

from PIL import Image

from curate.demo.captions import generic_alt_text
from curate.demo.faults import near_duplicate, truncate
from curate.demo.files import progress_bar, write_eval_set, write_file, write_seed_set, write_tables
from curate.demo.sources import Source, get_source
from curate.demo.streams import demo_rng, file_stem
from clikit.errors import UserError
from curate.serve import HTML_PREFIX, REDIRECT_PREFIX, SLOW_PREFIX
from shards.uid import sample_uid

GENERATOR_VERSION = 1  # bump when the same arguments would draw different bytes

KINDS: tuple[str, ...] = (
    "clean", "mismatched", "generic", "partial", "dup-exact", "dup-near", "broken-404",
    "not-image", "truncated", "slow", "redirect", "tiny", "huge",
)

# Fraction of the pool per kind; "clean" is the rest (originals of duplicates included).
DEFAULT_FRACTIONS: dict[str, float] = {
    "mismatched": 0.10,  # the caption of another image (of another class)
    "generic": 0.05,  # alt text saying nothing: "IMG_0231.jpg", "click here"
    "partial": 0.07,  # right class, one attribute wrong (mostly the colour)
    "dup-exact": 0.03,  # the same bytes under another URL
    "dup-near": 0.04,  # re-encoded / resized / cropped / recoloured copy
    "broken-404": 0.02,
    "not-image": 0.015,  # an HTML page where an image was expected
    "truncated": 0.015,  # a JPEG cut part-way
    "slow": 0.005,  # answered after slow_seconds (still succeeds)
    "redirect": 0.01,  # 302 to the real file (succeeds)
    "tiny": 0.015,  # a side below 32 px
    "huge": 0.004,  # 81-88 Mpx, flat, small on disk
}

# What the downloader should report for each kind (docs/design.md, fail_reason).
EXPECTED_OUTCOME: dict[str, str] = {
    "broken-404": "http-404",
    "not-image": "not-image",
    "truncated": "truncated",
    "tiny": "too-small",
    "huge": "too-large",
}

_NO_FILE = ("broken-404", "not-image")
_ROUTE = {"slow": SLOW_PREFIX, "redirect": REDIRECT_PREFIX, "not-image": HTML_PREFIX}


def kind_counts(size: int) -> dict[str, int]:
    """Rows per kind for a pool of `size`: every kind appears at least twice from 100 rows."""
    minimum = 2 if size >= 100 else 1 if size >= 30 else 0
    counts = {k: max(minimum, round(f * size)) for k, f in DEFAULT_FRACTIONS.items()}
    counts = {"clean": size - sum(counts.values()), **counts}
    if counts["clean"] < 1 and size > 0:
        raise UserError(f"--size {size} is too small for the demo pool; use at least 30")
    return counts


def _plan(size: int, seed: int) -> list[str]:
    """Kind of each generation index (before the final shuffle)."""
    return [kind for kind, n in kind_counts(size).items() for _ in range(n)]


def _summary_matches(existing: dict[str, Any], params: dict[str, Any]) -> bool:
    # A shapes pool's demo.json has no "source": it must not pass for a real pool, nor back.
    same_source = existing.get("source", "shapes") == params.get("source", "shapes")
    return same_source and all(existing.get(k) == v for k, v in params.items())


def make_demo_pool(
    out: Path,
    size: int = 2000,
    seed: int = 0,
    base_url: str = "http://127.0.0.1:8000",
    seed_size: int | None = None,
    eval_per_class: int = 20,
    *,
    source: str = "shapes",
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Write the demo pool to `out` and return a summary (counts per kind, paths).

    `source` is "shapes" (drawn with PIL) or "real" (images that Debian and PyPI packages
    ship: curate.demo.real). If `out` already holds a finished pool made with the same
    arguments (and, for "real", the same installed data) it is reused;
    another non-empty `out` is an error unless overwrite=True. The pool is built under a
    temporary sibling name and renamed into place when complete.
    """
    out = Path(out)
    if size < 1:
        raise UserError(f"--size must be at least 1, got {size}")
    if seed_size is None:
        seed_size = max(200, size // 4)
    if seed_size < 0 or eval_per_class < 0:
        raise UserError("seed size and eval images per class must not be negative")
    base = base_url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise UserError(f"--base-url must start with http:// or https://, got {base_url!r}")
    params = {"version": GENERATOR_VERSION, "size": size, "seed": seed, "base_url": base,
              "seed_size": seed_size, "eval_per_class": eval_per_class}
    src = get_source(source)
    if src.name != "shapes":  # the shapes pool's demo.json stays as it always was
        params.update(source=src.name, **src.info())

    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give a directory path for the demo pool")
    if out.is_dir() and any(out.iterdir()):
        summary_file = out / "demo.json"
        if summary_file.is_file() and not overwrite:
            existing = json.loads(summary_file.read_text())
            if _summary_matches(existing, params):
                return _with_paths(existing, out)
        if not overwrite:
            raise UserError(f"{out} is not empty and holds no demo pool made with these arguments; "
                            "remove it, choose another directory, or pass --overwrite")

    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        summary = _generate(tmp, params, src, progress)
        (tmp / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _with_paths(summary, out)


def _with_paths(summary: dict[str, Any], out: Path) -> dict[str, Any]:
    names = {"metadata": "metadata.parquet", "metadata_coyo": "metadata_coyo.parquet",
             "truth": "truth.parquet", "seed": "seed.parquet", "images": "images", "eval": "eval",
             "templates": "eval/templates.txt", "summary": "demo.json"}
    return {**summary, "out": str(out), "paths": {k: str(out / v) for k, v in names.items()}}


def _generate(root: Path, params: dict[str, Any], src: Source, progress: bool) -> dict[str, Any]:
    size, seed, base = params["size"], params["seed"], params["base_url"]
    kinds = _plan(size, seed)
    plan_rng = demo_rng(seed, "plan")

    rngs = [demo_rng(seed, "row", i) for i in range(size)]
    specs = src.plan(kinds, rngs, seed)
    rows: list[dict[str, Any]] = [
        {"kind": kind, "rng": rng, "dup_group": None, "label": None if kind in _NO_FILE else spec.label,
         "width": spec.width, "height": spec.height, "ext": spec.ext}
        for kind, rng, spec in zip(kinds, rngs, specs)]

    # Duplicates copy an original chosen among the clean rows; a group holds 1-2 copies.
    clean_idx = [i for i, k in enumerate(kinds) if k == "clean"]
    dup_idx = [i for i, k in enumerate(kinds) if k in ("dup-exact", "dup-near")]
    plan_rng.shuffle(dup_idx)
    originals = plan_rng.sample(clean_idx, min(len(clean_idx), max(1, (len(dup_idx) + 1) // 2))) if dup_idx else []
    original_of: dict[int, int] = {}
    for n, i in enumerate(dup_idx):
        original_of[i] = originals[n % len(originals)]
    for group, i in enumerate(originals):
        rows[i]["dup_group"] = group
    for i, o in original_of.items():
        rows[i]["dup_group"] = rows[o]["dup_group"]
        specs[i] = specs[o]
        rows[i].update(label=specs[o].label, width=specs[o].width, height=specs[o].height, ext=specs[o].ext)

    # Image bytes: originals first, so that duplicates can copy or edit them.
    data: dict[int, bytes] = {}
    bar = progress_bar(size, progress, "pool images")
    for i, kind in enumerate(kinds):
        if kind in _NO_FILE or i in original_of:
            continue
        if kind == "huge":
            data[i] = src.encode_huge(specs[i])
        elif kind == "truncated":
            data[i] = truncate(src.encode(specs[i]), rows[i]["rng"])
        else:
            data[i] = src.encode(specs[i])
        bar.update()
    for i in dup_idx:
        if kinds[i] == "dup-exact":
            data[i] = data[original_of[i]]
        else:
            data[i], fmt, _ = near_duplicate(data[original_of[i]], rows[i]["rng"])
            with Image.open(io.BytesIO(data[i])) as im:
                rows[i].update(width=im.width, height=im.height, ext="jpg" if fmt == "JPEG" else "png")
        bar.update()
    bar.close()

    # Captions: true descriptions first; mismatched rows borrow one of another class.
    for i, kind in enumerate(kinds):
        rng = rows[i]["rng"]
        if kind == "generic":
            rows[i]["caption"] = generic_alt_text(rng)
        elif kind == "partial":
            rows[i]["caption"] = src.partly_wrong(specs[i], rng)
        elif kind != "mismatched":
            rows[i]["caption"] = src.describe(specs[i], rng)
    for i, kind in enumerate(kinds):
        if kind == "mismatched":
            rng = rows[i]["rng"]
            donors = [j for j in clean_idx if specs[j].label != specs[i].label]
            if donors:
                rows[i]["caption"] = rows[rng.choice(donors)]["caption"]
            else:  # a very small pool: describe an image of another class instead
                rows[i]["caption"] = src.describe_other(specs[i].label, rng)

    # Files and URLs. Rows are shuffled so that position says nothing about kind.
    order = list(range(size))
    plan_rng.shuffle(order)
    coyo_ids = plan_rng.sample(range(10**11, 10**12), size)
    images = root / "images"
    images.mkdir()
    records = []
    for i in order:
        row, kind = rows[i], kinds[i]
        rel = f"images/{file_stem(seed, 'pool', i)}.{row['ext']}"
        if i in data:
            write_file(root / rel, data[i])
        url = f"{base}{_ROUTE.get(kind, '/')}{rel}"
        records.append({
            "uid": sample_uid(url, row["caption"]), "url": url, "caption": row["caption"], "kind": kind,
            "dup_group": row["dup_group"], "label": row["label"],
            "expect": EXPECTED_OUTCOME.get(kind, "success"),
            "path": rel if i in data else None, "width": row["width"], "height": row["height"],
        })

    write_tables(root, records, coyo_ids)
    seed_count = write_seed_set(root, src, seed, base, params["seed_size"], progress)
    eval_count = write_eval_set(root, src, seed, params["eval_per_class"], progress)

    counts = kind_counts(size)
    return {
        **params,
        "kinds": {k: counts[k] for k in KINDS},
        "expect": {e: sum(1 for r in records if r["expect"] == e) for e in
                   ["success", *EXPECTED_OUTCOME.values()]},
        "dup_groups": len(originals),
        "seed_rows": seed_count,
        "classes": list(src.classes),
        "eval_images": eval_count,
    }
