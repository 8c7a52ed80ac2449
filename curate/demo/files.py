"""The demo pool's files besides the row images: the metadata and truth tables, the seed
set and the eval set (their random streams and file names: streams.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from curate.demo.sources import Source
from curate.demo.streams import demo_rng, file_stem


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


def write_seed_set(root: Path, src: Source, seed: int, base: str, count: int, progress: bool) -> int:
    """A clean, class-balanced set with its own images and URLs (images/seed/)."""
    labels = [src.classes[k % len(src.classes)] for k in range(count)]
    demo_rng(seed, "seed-order").shuffle(labels)
    rngs = [demo_rng(seed, "seedset", k) for k in range(count)]
    specs = src.seed_items(labels, rngs, seed)
    urls, captions, widths, heights = [], [], [], []
    for k in progress_range(count, progress, "seed images"):
        rng, spec = rngs[k], specs[k]
        rel = f"images/seed/{file_stem(seed, 'seedset', k)}.{spec.ext}"
        write_file(root / rel, src.encode(spec))
        urls.append(f"{base}/{rel}")
        captions.append(src.describe(spec, rng))
        widths.append(spec.width)
        heights.append(spec.height)
    write_parquet(pa.table({"URL": pa.array(urls, pa.string()), "TEXT": pa.array(captions, pa.string()),
                             "WIDTH": pa.array(widths, pa.int64()), "HEIGHT": pa.array(heights, pa.int64())}),
                   root / "seed.parquet")
    return count


def write_eval_set(root: Path, src: Source, seed: int, per_class: int, progress: bool) -> int:
    """Held-out images: eval/<class>/NNN.png|jpg and the zero-shot prompt templates."""
    ev = root / "eval"
    ev.mkdir()
    (ev / "templates.txt").write_text("\n".join(src.eval_templates) + "\n")
    bar = progress_bar(per_class * len(src.eval_classes), progress, "eval images")
    for label in src.eval_classes:
        (ev / label).mkdir()
        for k, spec in enumerate(src.eval_items(label, per_class, seed)):
            write_file(ev / label / f"{k:03d}.{spec.ext}", src.encode(spec))
            bar.update()
    bar.close()
    return per_class * len(src.eval_classes)


def progress_range(n: int, enabled: bool, desc: str) -> Iterable[int]:
    """range(n) with a tqdm bar (silent unless enabled)."""
    from tqdm import tqdm

    return tqdm(range(n), disable=not enabled, desc=desc, unit="img", leave=False)
