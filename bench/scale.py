"""Scale bench: time and peak RSS of dedup, cluster, filter (every recipe), sql and export planning
on a synthetic 100M-row catalog and a 10M-row pool slice, each stage in a fresh process.

    nice python bench/scale.py [--dir /work/scratch/scale-bench] [--catalog-rows 100000000]
        [--pool-rows 10000000] [--steps generate,dedup,cluster,filter,sql,export] [--clean]

What it makes (once, under --dir, only what the steps read: the pool for dedup and cluster,
the catalog for the others; a rerun with the same sizes reuses it):

- catalog/: a pool of --catalog-rows rows as `curate download` and `curate score` leave it,
  minus the images: shards/NNNNN.parquet (1M rows each: uid, key, url, caption, status,
  error_message, width, height; a zero-byte .tar and a _stats.json mark each shard
  finished), scores/synth/NNNNN.parquet (the rows that downloaded: uid, key, clip_score,
  width, height, phash) and dedup/synth/groups.parquet (uid, group_id, group_size, keep,
  method, contaminated; nine in ten kept). Written by DuckDB, shard by shard (bounded
  memory). A real LAION catalog row holds a ~100-character url and a ~60-character
  caption; here urls are ~40 characters and captions 1-9 words from a 400-word vocabulary
  (~35 characters; 1 in 41 a camera file name such as IMG_4821.jpg, 1 in 53 null), since
  the recipes read the caption only through length, word count and two regexes. 1 in 13
  rows failed to download. Scores take 10,000 distinct values, so the top-k cut has ties.
  What the curation-lab recipes read (their `-- @needs` headers), in the stages' column
  contracts (docs/design.md): `original_width`/`original_height` on the samples; a second
  scores tag `dfn` (another score per row: the dfn recipe's ranker); annotations/NNNNN.parquet
  (`curate annotate`: caption_language, 8 in 10 'en'; entry_ids LIST<INT32>, 0-3 of 50,000
  entries drawn head-heavy, so metaclip's cap binds on the common ones; class_ids, 1 in 20 rows
  one of 1,000 classes) with entries.parquet; clusters/synth/assignments.parquet (`curate
  cluster`: one of rows/1000 clusters, centroid_similarity, semdedup_similarity null for 1 in
  50 (a cluster's first) else uniform in [0, 1), target_hits >= 1 for 1 cluster in 5,
  target_similarity).
- pool/: --pool-rows scored rows (the first rows of the catalog, same uids) with what
  dedup reads: scores/synth/NNNNN.parquet (100k rows each: uid, key, clip_score,
  image_sha256, phash, 16x16 grey thumbnail `pixels`, 4x4 colour grid `colours`) and
  embeddings/synth/NNNNN.npy (--dim float16, clustered like CLIP embeddings:
  tests/synthetic_embeddings.py). Planted: near copies for knn (cosine 0.96-0.99), byte
  copies (same sha256), near copies for phash-pixels (hash 1-3 bits off, thumbnail a
  little noisy, embedding cosine 0.9-0.99) and a flood of one placeholder picture
  (50,000 rows, one phash, one thumbnail, other bytes), over the per-bucket cap.

What it measures, each in a fresh child (bench/measure.py: wall time, peak RSS of the
child's own process tree), each next to a baseline from the same run:

- dedup on the pool: `curate dedup --method exact,phash-pixels` (the default) and
  `--method knn` (IVF). Recall of the planted knn pairs (their exact cosine, recomputed
  from the stored rows, >= the threshold) and of every pair that exact search finds among
  the first --sample-rows rows (FAISS flat range search, the baseline, timed too): a pair
  counts as found when both rows end in one group. Exact search over all rows is
  n^2 x dim (~10^17 flops at 10M): the sample is what is affordable.
- cluster on the pool: `curate cluster --scores synth` (sqrt(n) clusters; SemDeDup's
  similarity within each), against the pre-streaming algorithm (every vector in one n x dim
  float32 array, every uid a Python str: 2 GiB at 1M x 512, 20 GiB at 10M) on the first
  --baseline-rows rows of the pool (a folder of links to its first shards), where both
  run; their cluster ids and semdedup similarities must be equal. Then at the whole pool
  when it is larger.
- filter: `curate filter` with every recipe of `curate.filter.recipes.list_recipes()`
  (a recipe with $fraction/$count gets --top 40%; one that reads a column the catalog
  lacks is reported as skipped, with the binder's reason; `--scores synth`, the dfn recipe
  ranking by tag dfn), against a scan floor: DuckDB reading the columns the recipes read
  (score, caption) once.
- sql: `curate sql` printing the first 50 rows of a large result and counting the rest,
  at the full catalog and at a slice of --baseline-rows rows, against the pre-streaming
  way (the whole result as one Arrow table) on that slice.
- export planning: curate.export.plan_export over the top_fraction subset at the full
  catalog and at the slice, against the pre-streaming plan (DuckDB semi-join fetched as
  Python rows) on the slice.
  Both baselines run with DuckDB's own memory default (80% of the machine), as before the
  catalog capped it; the pre-streaming plan runs out of memory under the 4GB cap.

Each line prints wall time, samples/s (the rows the step reads over its wall time), peak RSS
and, next to a baseline, the ratios of time and peak to it (the baselines load what the
streamed side loads, e.g. curate.export's webdataset and torch, so the ratio is the work's).
Peak RSS must stay under --limit-gb (8) for every stage; the knn recall must reach 0.99.
Data (check `df -h` first): the 100M-row catalog 26 GB (23 min to make), the 10M-row pool 15 GB
(4 min); 2.6 GB at a 2M-row catalog and 1M-row pool. The pool steps at 10M rows take about 35 min
on 2 cores (knn 21 of them). --clean deletes the data at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from measure import Child, run_child  # noqa: E402 - bench/measure.py (the script's folder is on the path)

STEPS = ("generate", "dedup", "cluster", "filter", "sql", "export")
POOL_STEPS = {"generate", "dedup", "cluster"}  # the steps that read the pool; the others read the catalog
TAG = "synth"
CATALOG_SHARD_ROWS = 1_000_000
POOL_SHARD_ROWS = 100_000
THRESHOLD = 0.95  # knn's default cosine bar
SLACK = 2e-4  # curate.dedup.vectors.SLACK: the exact baseline searches with the same radius
FLOOD = 50_000
SQL_QUERY = "SELECT uid, caption, clip_score FROM scored WHERE clip_score >= 0.2"
EXPORT_SUBSET = "top_fraction"  # made by the filter step


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "NO_ALBUMENTATIONS_UPDATE": "1"}


# ---------------------------------------------------------------- generation: catalog
def _words() -> list[str]:
    syllables = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "an", "el", "or", "us", "ba", "de", "fi", "gu",
                 "ho", "ja", "ke", "ly"]
    rng = np.random.default_rng(7)
    return sorted({"".join(rng.choice(syllables, rng.integers(1, 4))) for _ in range(2000)})[:400]


def _sql_list(words: list[str]) -> str:
    return "[" + ", ".join(f"'{w}'" for w in words) + "]"


CATALOG_VERSION = 2  # 2: the curation-lab recipes' inputs (annotations, clusters, tag dfn, original sizes)
RANKER_TAG = "dfn"  # queries/dfn.sql's default $ranker
ENTRIES, CLASSES = 50_000, 1_000


def generate_catalog(root: Path, rows: int) -> None:
    """The 100M-row catalog, written shard by shard by DuckDB (see the module docstring)."""
    import duckdb

    from shards.layout import Pool

    marker = root / "made.json"
    made = {"rows": rows, "version": CATALOG_VERSION}
    if marker.is_file() and json.loads(marker.read_text()) == made:
        return
    shutil.rmtree(root, ignore_errors=True)
    layout = Pool(root)
    shards, scores, ranker = root / "shards", root / "scores" / TAG, root / "scores" / RANKER_TAG
    for folder in (shards, scores, ranker, layout.annotations_dir):
        folder.mkdir(parents=True)
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = true")
    words = _sql_list(_words())
    rows_sql = ("SELECT i, h, md5(i::VARCHAR) AS uid, lpad(i::VARCHAR, 9, '0') AS key, (h % 13 = 0) AS failed "
                "FROM (SELECT range AS i, (hash(range) >> 1)::BIGINT AS h FROM range({a}, {b}))")
    t0 = time.perf_counter()
    for k, a in enumerate(range(0, rows, CATALOG_SHARD_ROWS)):
        b = min(rows, a + CATALOG_SHARD_ROWS)
        base = rows_sql.format(a=a, b=b)
        con.execute(f"""COPY (
            SELECT uid, key, 'https://img' || (i % 97) || '.example.com/i/' || i || '.jpg' AS url,
                   CASE WHEN h % 53 = 0 THEN NULL
                        WHEN h % 41 = 0 THEN 'IMG_' || (1000 + i % 9000) || '.jpg'
                        ELSE array_to_string(list_transform(range(1 + (h >> 8) % 9),
                                 lambda j: {words}[(1 + hash(i * 16 + j) % 400)::BIGINT]), ' ') END AS caption,
                   CASE WHEN failed THEN 'failed_to_download' ELSE 'success' END AS status,
                   CASE WHEN failed THEN 'timeout' END AS error_message,
                   CASE WHEN NOT failed THEN (24 + (h >> 16) % 1000)::INTEGER END AS width,
                   CASE WHEN NOT failed THEN (24 + (h >> 26) % 1000)::INTEGER END AS height,
                   CASE WHEN NOT failed THEN (24 + (h >> 16) % 1000)::INTEGER END AS original_width,
                   CASE WHEN NOT failed THEN (24 + (h >> 26) % 1000)::INTEGER END AS original_height
            FROM ({base})) TO '{shards / f"{k:05d}.parquet"}' (FORMAT parquet, ROW_GROUP_SIZE 122880)""")
        con.execute(f"""COPY (
            SELECT uid, key, (((h >> 36) % 10000) / 25000.0)::FLOAT AS clip_score,
                   (24 + (h >> 16) % 1000)::INTEGER AS width, (24 + (h >> 26) % 1000)::INTEGER AS height,
                   hash(i * 7 + 3)::UBIGINT AS phash
            FROM ({base}) WHERE NOT failed) TO '{scores / f"{k:05d}.parquet"}' (FORMAT parquet, ROW_GROUP_SIZE 122880)""")
        con.execute(f"""COPY (
            SELECT uid, key, ((hash(i * 11 + 5) % 10000) / 25000.0)::FLOAT AS clip_score
            FROM ({base}) WHERE NOT failed) TO '{ranker / f"{k:05d}.parquet"}' (FORMAT parquet, ROW_GROUP_SIZE 122880)""")
        # curate annotate's columns: a row per shard row; entries head-heavy (u^3), so a few are common
        con.execute(f"""COPY (
            SELECT uid,
                   CASE hash(i * 11 + 6) % 10 WHEN 8 THEN 'de' WHEN 9 THEN NULL ELSE 'en' END AS caption_language,
                   list_transform(range((hash(i * 11 + 7) % 4)::BIGINT),
                       lambda j: ({ENTRIES} * pow((hash(i * 16 + j + 8) % 1000000) / 1000000.0, 3))::INTEGER
                   )::INTEGER[] AS entry_ids,
                   CASE WHEN hash(i * 11 + 9) % 20 = 0 THEN [(hash(i * 11 + 10) % {CLASSES})::INTEGER]
                        ELSE []::INTEGER[] END AS class_ids
            FROM ({base})) TO '{layout.annotations_parquet(k)}' (FORMAT parquet, ROW_GROUP_SIZE 122880)""")
        (shards / f"{k:05d}.tar").write_bytes(b"")  # export planning reads the parquet only
        (shards / f"{k:05d}_stats.json").write_text(json.dumps({"count": b - a}))
        print(f"\r  catalog shard {k + 1}/{-(-rows // CATALOG_SHARD_ROWS)} ({time.perf_counter() - t0:.0f} s)",
              end="", flush=True)
    (root / "scores" / TAG / "model.json").write_text(json.dumps({"model": "synthetic", "dim": 0, "tag": TAG}))
    groups = root / "dedup" / TAG / "groups.parquet"
    groups.parent.mkdir(parents=True)
    con.execute(f"""COPY (
        SELECT uid, (CASE WHEN h % 10 = 0 THEN i - 1 ELSE i END)::BIGINT AS group_id,
               (CASE WHEN h % 10 = 0 THEN 2 ELSE 1 END)::BIGINT AS group_size, h % 10 <> 0 AS keep,
               CASE WHEN h % 10 = 0 THEN 'phash-pixels' END AS method, false AS contaminated
        FROM ({rows_sql.format(a=0, b=rows)}) WHERE NOT failed) TO '{groups}' (FORMAT parquet, ROW_GROUP_SIZE 122880)""")
    (ranker / "model.json").write_text(json.dumps({"model": "synthetic", "dim": 0, "tag": RANKER_TAG}))
    con.execute(f"""COPY (
        SELECT * FROM (SELECT 'metadata' AS list, range::INTEGER AS id, 'entry' || range AS entry FROM range({ENTRIES}))
        UNION ALL
        SELECT * FROM (SELECT 'classes', range::INTEGER, 'class' || range FROM range({CLASSES}))
    ) TO '{layout.annotation_entries}' (FORMAT parquet)""")
    layout.annotations_json.write_text(json.dumps({"synthetic": True, "entries": ENTRIES, "classes": CLASSES}))
    clusters = max(1, rows // 1000)
    assignments = layout.cluster_assignments(TAG)
    assignments.parent.mkdir(parents=True)
    con.execute(f"""COPY (
        SELECT uid, cluster_id, (0.5 + (hash(i * 11 + 2) % 1000) / 2000.0)::FLOAT AS centroid_similarity,
               CASE WHEN hash(i * 11 + 3) % 50 = 0 THEN NULL
                    ELSE ((hash(i * 11 + 4) % 1000) / 1000.0)::FLOAT END AS semdedup_similarity,
               CASE WHEN cluster_id % 5 = 0 THEN (1 + cluster_id % 3)::INTEGER ELSE 0 END AS target_hits,
               (0.2 + (cluster_id % 100) / 200.0)::FLOAT AS target_similarity
        FROM (SELECT *, (hash(i * 11 + 1) % {clusters})::INTEGER AS cluster_id FROM ({rows_sql.format(a=0, b=rows)}))
        WHERE NOT failed) TO '{assignments}' (FORMAT parquet, ROW_GROUP_SIZE 122880)""")
    print(f"\r  catalog: {rows} rows in {time.perf_counter() - t0:.0f} s" + " " * 20)
    marker.write_text(json.dumps(made))


def make_slice(catalog: Path, root: Path, rows: int) -> None:
    """The first `rows` rows of the catalog as a pool of its own (links to its shards), with
    the catalog's export subset: the baselines run here."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "shards").mkdir(parents=True)
    for tag in (TAG, RANKER_TAG):
        (root / "scores" / tag).mkdir(parents=True)
    (root / "subsets").mkdir(parents=True)
    for k in range(max(1, rows // CATALOG_SHARD_ROWS)):
        for name in (f"{k:05d}.parquet", f"{k:05d}.tar", f"{k:05d}_stats.json"):
            (root / "shards" / name).symlink_to(catalog / "shards" / name)
        for tag in (TAG, RANKER_TAG):  # export plans a score per tag
            (root / "scores" / tag / f"{k:05d}.parquet").symlink_to(catalog / "scores" / tag / f"{k:05d}.parquet")
    for suffix in (".parquet", ".npy"):
        (root / "subsets" / (EXPORT_SUBSET + suffix)).symlink_to(catalog / "subsets" / (EXPORT_SUBSET + suffix))


def make_pool_slice(pool: Path, root: Path, rows: int) -> None:
    """The first `rows` rows of the pool (whole shards) as a pool of its own: links to its
    scores parquet and embeddings (the cluster baseline runs here)."""
    from shards.layout import Pool

    shutil.rmtree(root, ignore_errors=True)
    src, dst = Pool(pool), Pool(root)
    dst.scores_dir(TAG).mkdir(parents=True)
    dst.embeddings_dir(TAG).mkdir(parents=True)
    (dst.scores_dir(TAG) / "model.json").symlink_to(src.scores_dir(TAG) / "model.json")
    for k in range(max(1, rows // POOL_SHARD_ROWS)):
        dst.scores_parquet(TAG, k).symlink_to(src.scores_parquet(TAG, k))
        dst.image_embeddings(TAG, k).symlink_to(src.image_embeddings(TAG, k))


# ---------------------------------------------------------------- generation: pool slice
def _hex_strings(raw: np.ndarray, width: int):
    """Rows of random bytes -> an Arrow string array of their lowercase hex."""
    import binascii

    import pyarrow as pa

    text = binascii.hexlify(np.ascontiguousarray(raw).tobytes())
    n = len(raw)
    offsets = np.arange(0, width * 2 * n + 1, width * 2, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text))


def _fixed_binary(raw: np.ndarray):
    import pyarrow as pa

    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(raw.shape[1]), len(raw), [None, pa.py_buffer(raw.tobytes())])


def _plant(n: int, seed: int) -> dict[str, np.ndarray]:
    """Disjoint planted rows: (src, dst) pairs per kind, and the flood's rows."""
    rng = np.random.default_rng(seed)
    knn, exact, phash = n // 200, n // 500, n // 500
    rows = rng.choice(n, size=2 * (knn + exact + phash) + FLOOD, replace=False)
    cut = np.cumsum([2 * knn, 2 * exact, 2 * phash])
    return {"knn": np.sort(rows[: cut[0]].reshape(-1, 2), axis=1),
            "exact": np.sort(rows[cut[0] : cut[1]].reshape(-1, 2), axis=1),
            "phash": np.sort(rows[cut[1] : cut[2]].reshape(-1, 2), axis=1),
            "flood": np.sort(rows[cut[2] :])}


def generate_pool(root: Path, rows: int, dim: int) -> None:
    """The pool slice dedup reads (see the module docstring): base shards, then the planted
    rows patched in shard by shard (parquet rewritten, embeddings through a writable map)."""
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    from shards.layout import Pool
    from synthetic_embeddings import near_copy, random_vectors, unit_rows

    marker = root / "made.json"
    if marker.is_file() and json.loads(marker.read_text()) == {"rows": rows, "dim": dim}:
        return
    shutil.rmtree(root, ignore_errors=True)
    layout = Pool(root)
    layout.scores_dir(TAG).mkdir(parents=True)
    layout.embeddings_dir(TAG).mkdir(parents=True)
    con = duckdb.connect()
    t0 = time.perf_counter()
    starts = list(range(0, rows, POOL_SHARD_ROWS))
    for k, a in enumerate(starts):
        b = min(rows, a + POOL_SHARD_ROWS)
        n = b - a
        rng = np.random.default_rng([1, k])
        ids = con.sql(f"SELECT md5(range::VARCHAR) AS uid, lpad(range::VARCHAR, 9, '0') AS key "
                      f"FROM range({a}, {b})").to_arrow_table()
        table = pa.table({
            "uid": ids.column("uid"), "key": ids.column("key"),
            "clip_score": pa.array(rng.uniform(0.0, 0.4, n).astype(np.float32)),
            "image_sha256": _hex_strings(rng.integers(0, 256, (n, 32), dtype=np.uint8), 32),
            "phash": pa.array(rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)),
            "pixels": _fixed_binary(rng.integers(0, 256, (n, 256), dtype=np.uint8)),
            "colours": _fixed_binary(rng.integers(0, 256, (n, 48), dtype=np.uint8)),
        })
        pq.write_table(table, layout.scores_parquet(TAG, k))
        np.save(layout.image_embeddings(TAG, k), random_vectors(n, dim, rng, clustered=True).astype(np.float16))
        print(f"\r  pool shard {k + 1}/{len(starts)} ({time.perf_counter() - t0:.0f} s)", end="", flush=True)
    (layout.scores_dir(TAG) / "model.json").write_text(json.dumps({"model": "synthetic", "dim": dim, "tag": TAG}))

    planted = _plant(rows, seed=2)
    rng = np.random.default_rng(3)
    # what each planted row takes from its source (read before any shard is patched)
    src = np.concatenate([planted[kind][:, 0] for kind in ("knn", "exact", "phash")] + [planted["flood"][:1]])
    order = np.argsort(src)
    from curate.dedup.scored_pool import gather_rows, open_scored_pool

    scored = open_scored_pool(root, TAG)
    vec = np.empty((src.size, dim), np.float32)
    vec[order] = gather_rows(scored, src[order])
    cols = {}
    for k in np.unique(src // POOL_SHARD_ROWS).tolist():
        sel = np.flatnonzero(src // POOL_SHARD_ROWS == k)
        t = pq.read_table(layout.scores_parquet(TAG, k), columns=["image_sha256", "phash", "pixels", "colours"])
        for name in t.column_names:
            cols.setdefault(name, {})
            values = t.column(name).take(pa.array(src[sel] % POOL_SHARD_ROWS)).to_pylist()
            cols[name].update(zip(src[sel].tolist(), values))
    patch: dict[int, dict] = {}  # dst row -> new column values
    nk, ne, nph = len(planted["knn"]), len(planted["exact"]), len(planted["phash"])
    at = {s: i for i, s in enumerate(src.tolist())}
    knn_cos = rng.uniform(0.96, 0.99, nk)
    copies_knn = near_copy(unit_rows(vec[:nk]), knn_cos, rng)
    copies_phash = near_copy(unit_rows(vec[nk + ne : nk + ne + nph]), rng.uniform(0.9, 0.99, nph), rng)
    flood_vec = near_copy(np.repeat(unit_rows(vec[-1:]), FLOOD, 0), np.full(FLOOD, 0.99), rng)
    new_vec: dict[int, np.ndarray] = {}
    for (s, d), v in zip(planted["knn"].tolist(), copies_knn):
        new_vec[d] = v
    for s, d in planted["exact"].tolist():  # a byte copy: everything the same
        new_vec[d] = vec[at[s]]
        patch[d] = {name: cols[name][s] for name in cols}
    for (s, d), v in zip(planted["phash"].tolist(), copies_phash):
        new_vec[d] = v
        grey = np.frombuffer(cols["pixels"][s], np.uint8).astype(np.int16) + rng.integers(-3, 4, 256)
        colour = np.frombuffer(cols["colours"][s], np.uint8).astype(np.int16) + rng.integers(-2, 3, 48)
        flips = rng.choice(64, rng.integers(1, 4), replace=False)
        patch[d] = {"phash": cols["phash"][s] ^ int(sum(1 << int(f) for f in flips)),
                    "pixels": np.clip(grey, 0, 255).astype(np.uint8).tobytes(),
                    "colours": np.clip(colour, 0, 255).astype(np.uint8).tobytes()}
    placeholder = src[-1]
    for d, v in zip(planted["flood"].tolist(), flood_vec):
        new_vec[d] = v
        patch[d] = {"phash": cols["phash"][placeholder], "pixels": cols["pixels"][placeholder],
                    "colours": cols["colours"][placeholder]}
    dsts = np.array(sorted(set(new_vec) | set(patch)), dtype=np.int64)
    for k in np.unique(dsts // POOL_SHARD_ROWS).tolist():
        here = dsts[dsts // POOL_SHARD_ROWS == k]
        path = layout.scores_parquet(TAG, k)
        table = pq.read_table(path)
        columns = {name: table.column(name).to_pylist() if name in ("image_sha256", "phash", "pixels", "colours")
                   else table.column(name) for name in table.column_names}
        for d in here.tolist():
            for name, value in patch.get(d, {}).items():
                columns[name][d % POOL_SHARD_ROWS] = value
        pq.write_table(pa.table({name: (pa.array(v, table.schema.field(name).type) if isinstance(v, list) else v)
                                 for name, v in columns.items()}), path)
        emb = np.load(layout.image_embeddings(TAG, k), mmap_mode="r+")
        for d in here.tolist():
            if d in new_vec:
                emb[d % POOL_SHARD_ROWS] = new_vec[d].astype(np.float16)
        emb.flush()
        del emb
    np.savez(root / "planted.npz", **planted)
    print(f"\r  pool: {rows} rows x {dim} in {time.perf_counter() - t0:.0f} s" + " " * 20)
    marker.write_text(json.dumps({"rows": rows, "dim": dim}))


# ---------------------------------------------------------------- measurement
EXACT_SAMPLE = r"""
import sys, numpy as np, faiss
from pathlib import Path
from curate.dedup.scored_pool import open_scored_pool, iter_embedding_batches
pool, rows, radius, out = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
parts = []
for start, x in iter_embedding_batches(open_scored_pool(pool, "synth")):
    if start >= rows:
        break
    parts.append(x[: rows - start])
x = np.concatenate(parts)
index = faiss.IndexFlatIP(x.shape[1])
index.add(x)
lims, _, ids = index.range_search(x, radius)
q = np.repeat(np.arange(len(x)), np.diff(lims).astype(np.int64))
keep = q < ids
np.save(out, np.stack([q[keep], ids[keep].astype(np.int64)], 1))
"""
CLUSTER_IN_MEMORY = r"""
import sys
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
import curate.cluster.run  # noqa: F401 - what `curate cluster` loads, as the streamed side does
from curate.cluster.semdedup import earlier_similarity
from curate.dedup.scored_pool import check_embeddings, iter_embedding_batches, open_scored_pool
from curate.dedup.vectors import default_clusters, train_centroids
from shards.storage import read_parquet
# curate cluster before it streamed: every vector in one float32 array, every uid a Python str
scored = open_scored_pool(sys.argv[1], "synth")
n, dim = scored.size, check_embeddings(scored)
kmeans = train_centroids(scored, dim, default_clusters(n), seed=0)
vectors = np.empty((n, dim), np.float32)
cluster, sim = np.empty(n, np.int64), np.empty(n, np.float32)
for start, x in iter_embedding_batches(scored):
    s, i = kmeans.index.search(x, 1)
    vectors[start:start + len(x)], cluster[start:start + len(x)], sim[start:start + len(x)] = x, i[:, 0], s[:, 0]
failed = ~np.any(vectors != 0, axis=1)
cluster[failed], sim[failed] = -1, np.nan
uid = np.asarray([u for s in scored.shards for u in read_parquet(scored.scores_path(s), columns=["uid"])["uid"].to_pylist()],
                 dtype=object)
rank = np.empty(n, np.int64)
rank[np.argsort(uid, kind="stable")] = np.arange(n)
order = np.lexsort((rank, sim, np.where(cluster < 0, np.iinfo(np.int64).max, cluster)))
best = np.full(n, np.nan, np.float32)
for members in np.split(order, np.flatnonzero(np.diff(cluster[order])) + 1):
    if len(members) and cluster[members[0]] >= 0:
        best[members] = earlier_similarity(vectors, members)
pq.write_table(pa.table({"uid": pa.array(uid.tolist(), pa.string()),
                         "cluster_id": pa.array(cluster.astype(np.int32), pa.int32(), mask=failed),
                         "semdedup_similarity": pa.array(best, pa.float32(), mask=np.isnan(best))}), sys.argv[2])
"""
SCAN_FLOOR = r"""
import sys
from curate.catalog import open_catalog
with open_catalog(sys.argv[1], scores="synth") as c:
    print(c.con.sql("SELECT count(*), sum(clip_score), sum(width) FROM scores").fetchall())
    print(c.con.sql("SELECT sum(length(caption)) FROM samples").fetchall())
"""
SQL_MATERIALISED = r"""
import sys
from curate.catalog import open_catalog
with open_catalog(sys.argv[1], scores="synth") as c:
    table = c.con.sql(sys.argv[2]).to_arrow_table()  # what `curate sql` did before it streamed
print(table.slice(0, 50).to_pylist()[:1], table.num_rows)
"""
PLAN = r"""
import sys
from pathlib import Path
from curate.export import plan_export
plan, tags = plan_export(Path(sys.argv[1]), sys.argv[2])
print(len(plan), plan.missing, tags)
"""
PLAN_SQL_ROWS = r"""
import sys
import curate.export  # noqa: F401 - what `curate export` loads (webdataset, torch: ~0.5 GB), as the streamed side does
from curate.catalog import open_catalog
from shards.layout import Pool
# export's plan before it read subsets as sorted uid arrays: a semi-join fetched as Python rows
pool, subset = sys.argv[1], sys.argv[2]
with open_catalog(pool) as catalog:
    con = catalog.con
    con.execute("CREATE TEMP TABLE wanted AS SELECT DISTINCT uid FROM read_parquet($path)",
                {"path": str(Pool(pool).subset_parquet(subset))})
    rows = con.sql(
        "SELECT s.uid, s.url, s.caption, s.shard, s.key, s.width, s.height, "
        "(SELECT map(list(tag), list(clip_score)) FROM scores_all sc WHERE sc.uid = s.uid) AS scores "
        "FROM samples s SEMI JOIN wanted w ON s.uid = w.uid WHERE s.status = 'success' ORDER BY s.shard, s.key"
    ).fetchall()
names = ["uid", "url", "caption", "shard", "key", "width", "height", "scores"]
records = [dict(zip(names, row)) for row in rows]
print(len(records))
"""


class Report:
    """Figures as they come: one line each, and the table at the end. samples/s is the rows
    the step reads (pool or catalog rows) over its wall time."""

    def __init__(self, limit_gb: float):
        self.limit_mb = limit_gb * 1024
        self.lines: list[tuple[str, str, Child | None, int | None, str]] = []

    def add(self, stage: str, what: str, child: Child | None, rows: int | None = None, note: str = "") -> None:
        self.lines.append((stage, what, child, rows, note))
        print(self._line(stage, what, child, rows, note), flush=True)

    def _line(self, stage, what, child, rows, note) -> str:
        if child is None:
            return f"{stage:<8} {what:<58} {'':>9} {'':>11} {'':>9}       {note}"
        ok = "ok" if child.peak_mb < self.limit_mb else "OVER"
        rate = f"{rows / child.wall_s:>11,.0f}" if rows else f"{'':>11}"
        return f"{stage:<8} {what:<58} {child.wall_s:>9.1f} {rate} {child.peak_mb / 1024:>9.2f} {ok:>5}  {note}"

    def table(self) -> None:
        print()
        print(f"{'stage':<8} {'what':<58} {'wall s':>9} {'samples/s':>11} {'peak GiB':>9} "
              f"{'<' + str(self.limit_mb / 1024):>5}  note")
        for line in self.lines:
            print(self._line(*line))


def _versus(child: Child, baseline: Child) -> str:
    """The streamed side against the baseline on the same rows: time and peak memory ratios."""
    return f"{child.wall_s / baseline.wall_s:.2f}x the baseline's time, {child.peak_mb / baseline.peak_mb:.2f}x its peak"


def _child(args: list, **extra_env: str) -> Child:
    return run_child([str(a) for a in args], env={**env(), **extra_env})


def _duckdb_default() -> dict[str, str]:
    """The baselines' DuckDB memory: its own default, 80% of the machine (the catalog caps
    it at 4GB since it streams; the pre-streaming plan runs out of memory under that cap)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"CLIPCURATE_DUCKDB_MEMORY": f"{int(0.8 * total / 2**20)}MB"}


def _groups(pool: Path, name: str) -> np.ndarray:
    import pyarrow.parquet as pq

    return pq.read_table(pool / "dedup" / name / "groups.parquet", columns=["group_id"]).column("group_id").to_numpy()


def _together(groups: np.ndarray, pairs: np.ndarray) -> float:
    return float((groups[pairs[:, 0]] == groups[pairs[:, 1]]).mean()) if len(pairs) else 1.0


def measure_dedup(pool: Path, work: Path, args, report: Report) -> None:
    from curate.dedup.scored_pool import gather_rows, open_scored_pool

    planted = dict(np.load(pool / "planted.npz"))
    runs = {"default": "exact,phash-pixels", "knn": "knn"}
    for name, method in runs.items():
        shutil.rmtree(pool / "dedup" / name, ignore_errors=True)  # a finished run with the same arguments is skipped
        child = _child([sys.executable, "-m", "curate", "dedup", pool, "--scores", TAG, "--method", method,
                        "--name", name, "--overwrite", "--quiet"])
        summary = json.loads((pool / "dedup" / name / "summary.json").read_text())
        steps = ", ".join(f"{k} {v:.0f} s" for k, v in summary["seconds"].items() if k != "total")
        report.add("dedup", f"curate dedup --method {method} ({args.pool_rows:,} rows)", child, args.pool_rows,
                   f"{summary['groups']} groups; {steps}; search {json.dumps(summary['search'])[:300]}")
    default, knn = _groups(pool, "default"), _groups(pool, "knn")
    flood_together = float((default[planted["flood"]] == default[planted["flood"][0]]).mean())
    oversized = json.loads((pool / "dedup" / "default" / "summary.json").read_text())["oversized_groups"]
    report.add("dedup", "  default: planted byte copies / phash copies / flood rows grouped", None,
               note=f"{_together(default, planted['exact']):.4f} / {_together(default, planted['phash']):.4f} / "
                    f"{flood_together:.4f} (groups over --max-group, split: {len(oversized)})")
    # knn truth: the planted pairs whose exact cosine (from the stored float16 rows) meets the bar
    pairs = np.concatenate([planted["knn"], planted["exact"], planted["phash"]])
    scored = open_scored_pool(pool, TAG)
    flat = pairs.ravel()
    order = np.argsort(flat)
    rows = np.empty((flat.size, args.dim), np.float32)
    rows[order] = gather_rows(scored, flat[order])
    rows = rows.reshape(len(pairs), 2, -1)
    truth = pairs[(rows[:, 0] * rows[:, 1]).sum(1) >= THRESHOLD]
    recall = _together(knn, truth)
    report.add("dedup", f"  knn: recall of {len(truth):,} planted pairs at cosine >= {THRESHOLD}", None,
               note=f"{recall:.4f} ({'met' if recall >= 0.99 else 'MISSED'}: >= 0.99)")
    out = work / "exact-sample.npy"
    child = _child([sys.executable, "-c", EXACT_SAMPLE, pool, args.sample_rows, THRESHOLD - SLACK, out])
    exact = np.load(out)
    recall = _together(knn, exact)
    report.add("dedup", f"  baseline: exact flat range search, first {args.sample_rows:,} rows", child, args.sample_rows,
               f"{len(exact):,} pairs; knn found {recall:.4f} of them ({'met' if recall >= 0.99 else 'MISSED'}: >= 0.99)")


def measure_cluster(pool: Path, work: Path, args, report: Report) -> None:
    import pyarrow.parquet as pq

    rows = min(args.baseline_rows, args.pool_rows)
    piece = pool if rows >= args.pool_rows else work / "pool-slice"
    if piece != pool:
        make_pool_slice(pool, piece, rows)
    out = work / "cluster-in-memory.parquet"
    baseline = _child([sys.executable, "-c", CLUSTER_IN_MEMORY, piece, out])
    report.add("cluster", f"baseline: all vectors in memory ({rows:,} rows)", baseline, rows)
    for where, n in ((piece, rows), (pool, args.pool_rows)) if piece != pool else ((pool, rows),):
        shutil.rmtree(where / "clusters" / "bench", ignore_errors=True)  # a finished run with the same arguments is skipped
        child = _child([sys.executable, "-m", "curate", "cluster", where, "--scores", TAG, "--name", "bench",
                        "--overwrite", "--quiet"])
        summary = json.loads((where / "clusters" / "bench" / "summary.json").read_text())
        steps = ", ".join(f"{k} {v:.0f} s" for k, v in summary["seconds"].items() if k != "total")
        note = f"{summary['clusters']} clusters (largest {summary['largest_cluster']}); {steps}"
        if where == piece:
            columns = ["uid", "cluster_id", "semdedup_similarity"]
            same = pq.read_table(where / "clusters" / "bench" / "assignments.parquet", columns=columns).equals(
                pq.read_table(out, columns=columns))
            note += f"; {_versus(child, baseline)}; output {'equal to' if same else 'DIFFERENT from'} the baseline's"
        report.add("cluster", f"curate cluster ({n:,} rows)", child, n, note)


def _recipe_args(name: str, catalog: Path) -> tuple[list[str] | None, str]:
    """The filter arguments for one recipe, or None and why it is skipped: a need of its
    `-- @needs` header the catalog lacks, or a column its SQL reads (bound with LIMIT 0, no work)."""
    from clikit.errors import UserError
    from curate.catalog import open_catalog
    from curate.filter.candidates import build_candidates, check_needs, run_query
    from curate.filter.recipes import load_recipe

    recipe = load_recipe(name)
    extra = ["--top", "40%"] if {"fraction", "count"} <= set(recipe.defaults) else []
    params = {**recipe.defaults, **({"fraction": 0.4} if extra else {})}
    try:
        with open_catalog(catalog, scores=TAG) as c:
            build_candidates(c, "clip_score", False, None)
            check_needs(c, recipe)
            run_query(c, f"SELECT uid FROM (\n{recipe.sql}\n) AS recipe LIMIT 0", params).fetchall()
    except UserError as exc:
        return None, str(exc)
    return ["--recipe", name, "--scores", TAG, *extra], " ".join(extra)


def measure_filter(catalog: Path, args, report: Report) -> None:
    import pyarrow.parquet as pq

    from curate.filter.recipes import list_recipes

    floor = _child([sys.executable, "-c", SCAN_FLOOR, catalog])
    report.add("filter", "baseline: DuckDB scans score/width and caption once", floor, args.catalog_rows)
    for name in [r for r in list_recipes() if not args.recipes or r in args.recipes.split(",")]:
        extra, note = _recipe_args(name, catalog)
        if extra is None:
            report.add("filter", f"--recipe {name}: skipped", None, note=note)
            continue
        child = _child([sys.executable, "-m", "curate", "filter", catalog, "--name", name, *extra, "--overwrite"])
        meta = json.loads(pq.read_schema(catalog / "subsets" / f"{name}.parquet").metadata[b"clipcurate"])
        report.add("filter", f"curate filter --recipe {name} {note}".rstrip(), child, args.catalog_rows,
                   f"{meta['count']:,} kept; {child.wall_s / floor.wall_s:.1f}x the scan floor's time")
        if name != EXPORT_SUBSET:  # 15 subsets of a 100M-row catalog take ~15 GB; export reads only its own
            for path in (catalog / "subsets").glob(f"{name}.*"):
                path.unlink()


def measure_sql(catalog: Path, piece: Path, args, report: Report) -> None:
    baseline = _child([sys.executable, "-c", SQL_MATERIALISED, piece, SQL_QUERY], **_duckdb_default())
    report.add("sql", f"baseline: whole result as one table ({args.baseline_rows:,} rows)", baseline,
               args.baseline_rows, f"{baseline.stdout.split()[-1]} rows")
    for where, rows in ((piece, args.baseline_rows), (catalog, args.catalog_rows)):
        child = _child([sys.executable, "-m", "curate", "sql", where, SQL_QUERY, "--scores", TAG])
        versus = f"; {_versus(child, baseline)}" if where == piece else ""
        report.add("sql", f"curate sql (streams; {rows:,}-row catalog)", child, rows,
                   child.stdout.strip().splitlines()[-1][:60] + versus)


def measure_export(catalog: Path, piece: Path, args, report: Report) -> None:
    if not (catalog / "subsets" / f"{EXPORT_SUBSET}.parquet").is_file():
        report.add("export", "planning: skipped", None, note=f"no subset {EXPORT_SUBSET} (run the filter step first)")
        return
    baseline = _child([sys.executable, "-c", PLAN_SQL_ROWS, piece, EXPORT_SUBSET], **_duckdb_default())
    report.add("export", f"baseline: SQL plan as Python rows ({args.baseline_rows:,} rows)", baseline,
               args.baseline_rows, f"{int(baseline.stdout.split()[-1]):,} samples planned")
    for where, rows in ((piece, args.baseline_rows), (catalog, args.catalog_rows)):
        child = _child([sys.executable, "-c", PLAN, where, EXPORT_SUBSET])
        planned, missing = child.stdout.split()[:2]
        versus = f"; {_versus(child, baseline)}" if where == piece else ""
        report.add("export", f"plan_export, subset {EXPORT_SUBSET} ({rows:,}-row catalog)", child, rows,
                   f"{int(planned):,} samples planned, {int(missing):,} not in the pool{versus}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("/work/scratch/scale-bench"))
    ap.add_argument("--catalog-rows", type=int, default=100_000_000)
    ap.add_argument("--pool-rows", type=int, default=10_000_000)
    ap.add_argument("--baseline-rows", type=int, default=10_000_000,
                    help="rows of the catalog slice the pre-streaming baselines run on")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--sample-rows", type=int, default=100_000, help="rows of the exact-search recall baseline")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {', '.join(STEPS)}")
    ap.add_argument("--limit-gb", type=float, default=8.0)
    ap.add_argument("--recipes", default="", help="comma-separated recipes for the filter step (default: every one)")
    ap.add_argument("--clean", action="store_true", help="delete the generated data at the end")
    args = ap.parse_args()
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        ap.error(f"unknown step(s) {', '.join(unknown)}; use {', '.join(STEPS)}")
    catalog, pool, piece, work = args.dir / "catalog", args.dir / "pool", args.dir / "slice", args.dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.dir).free / 2**30
    print(f"data under {args.dir} ({free:.0f} GiB free)")
    t0 = time.perf_counter()
    if set(steps) - POOL_STEPS or "generate" in steps:  # each returns at once when its sizes are made
        generate_catalog(catalog, args.catalog_rows)
    if set(steps) & POOL_STEPS:
        generate_pool(pool, args.pool_rows, args.dim)
    print(f"data ready ({time.perf_counter() - t0:.0f} s)")
    report = Report(args.limit_gb)
    if "dedup" in steps:
        measure_dedup(pool, work, args, report)
    if "cluster" in steps:
        measure_cluster(pool, work, args, report)
    if "filter" in steps:
        measure_filter(catalog, args, report)
    if "sql" in steps or "export" in steps:
        make_slice(catalog, piece, args.baseline_rows)
    if "sql" in steps:
        measure_sql(catalog, piece, args, report)
    if "export" in steps:
        measure_export(catalog, piece, args, report)
    report.table()
    if args.clean:
        shutil.rmtree(args.dir)


if __name__ == "__main__":
    main()
