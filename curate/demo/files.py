"""The demo pool's files besides the row images: the metadata and truth tables, the seed
set and the eval set; and the seeded random streams and file names every part draws from.
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from curate.demo.captions import EVAL_TEMPLATES, describe
from curate.demo.render import render_bytes, sample_spec
from curate.demo.shapes import CLASSES


def demo_rng(seed: int, *parts: object) -> random.Random:
    """The random stream of one part of the pool (a row, the plan, a seed-set image...)."""
    # String seeds hash with SHA-512 inside random.Random: stable across runs and machines.
    return random.Random(":".join(["clipcurate-demo", str(seed), *map(str, parts)]))


def file_stem(seed: int, *parts: object) -> str:
    """A 12-hex file name that says nothing about the image's kind."""
    return hashlib.sha1(":".join([str(seed), *map(str, parts)]).encode()).hexdigest()[:12]


def write_file(path: Path, data: bytes) -> None:
    """Write bytes, creating the parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def progress_bar(total: int, enabled: bool, desc: str) -> Any:
    """A tqdm bar over `total` images (silent unless enabled)."""
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="img", leave=False)


def write_parquet(table: pa.Table, path: Path) -> None:
    """One parquet file, with pyarrow's defaults (the bytes the generator has always made)."""
    pq.write_table(table, path)


def write_tables(root: Path, records: list[dict[str, Any]], coyo_ids: list[int]) -> None:
    """metadata.parquet (LAION columns), metadata_coyo.parquet (COYO columns) and truth.parquet."""
    urls = [r["url"] for r in records]
    captions = [r["caption"] for r in records]
    widths = pa.array([r["width"] for r in records], pa.int64())
    heights = pa.array([r["height"] for r in records], pa.int64())
    write_parquet(pa.table({"URL": pa.array(urls, pa.string()), "TEXT": pa.array(captions, pa.string()),
                             "WIDTH": widths, "HEIGHT": heights}), root / "metadata.parquet")
    write_parquet(pa.table({"id": pa.array(coyo_ids, pa.int64()), "url": pa.array(urls, pa.string()),
                             "text": pa.array(captions, pa.string()), "width": widths, "height": heights}),
                   root / "metadata_coyo.parquet")
    schema = pa.schema([("uid", pa.string()), ("url", pa.string()), ("caption", pa.string()),
                        ("kind", pa.string()), ("dup_group", pa.int64()), ("label", pa.string()),
                        ("expect", pa.string()), ("path", pa.string()), ("width", pa.int64()),
                        ("height", pa.int64())])
    write_parquet(pa.Table.from_pylist(records, schema=schema), root / "truth.parquet")


def write_seed_set(root: Path, seed: int, base: str, count: int, progress: bool) -> int:
    """A clean, class-balanced set with its own images and URLs (images/seed/)."""
    labels = [CLASSES[k % len(CLASSES)] for k in range(count)]
    demo_rng(seed, "seed-order").shuffle(labels)
    urls, captions, widths, heights = [], [], [], []
    for k in progress_range(count, progress, "seed images"):
        rng = demo_rng(seed, "seedset", k)
        spec = sample_spec(rng, label=labels[k])
        rel = f"images/seed/{file_stem(seed, 'seedset', k)}.{spec.ext}"
        write_file(root / rel, render_bytes(spec))
        urls.append(f"{base}/{rel}")
        captions.append(describe(spec, rng))
        widths.append(spec.width)
        heights.append(spec.height)
    write_parquet(pa.table({"URL": pa.array(urls, pa.string()), "TEXT": pa.array(captions, pa.string()),
                             "WIDTH": pa.array(widths, pa.int64()), "HEIGHT": pa.array(heights, pa.int64())}),
                   root / "seed.parquet")
    return count


def write_eval_set(root: Path, seed: int, per_class: int, progress: bool) -> int:
    """Held-out renders: eval/<class>/NNN.png|jpg and the zero-shot prompt templates."""
    ev = root / "eval"
    ev.mkdir()
    (ev / "templates.txt").write_text("\n".join(EVAL_TEMPLATES) + "\n")
    bar = progress_bar(per_class * len(CLASSES), progress, "eval images")
    for label in CLASSES:
        (ev / label).mkdir()
        for k in range(per_class):
            spec = sample_spec(demo_rng(seed, "eval", label, k), label=label)
            write_file(ev / label / f"{k:03d}.{spec.ext}", render_bytes(spec))
            bar.update()
    bar.close()
    return per_class * len(CLASSES)


def progress_range(n: int, enabled: bool, desc: str) -> Iterable[int]:
    """range(n) with a tqdm bar (silent unless enabled)."""
    from tqdm import tqdm

    return tqdm(range(n), disable=not enabled, desc=desc, unit="img", leave=False)
