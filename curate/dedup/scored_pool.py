"""Read what `curate score` wrote: scores/TAG/NNNNN.parquet and embeddings/TAG/NNNNN.npy.

Rows are addressed by a global position (shard order, then row order inside the shard),
the same order the embeddings are stored in, so no stage here ever copies all vectors
just to find a row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from clikit.errors import UserError
from shards.layout import Pool
from shards.storage import StoragePath, load_npy, open_root, parquet_metadata, parquet_schema, read_parquet

SCORE_COLUMNS = ("uid", "clip_score", "image_sha256", "phash")


@dataclass(frozen=True)
class ScoredPool:
    """The scored shards of one pool and tag: names, row counts and global offsets."""

    pool: StoragePath
    tag: str
    shards: tuple[str, ...]  # "00000", ...
    rows: tuple[int, ...]
    offsets: tuple[int, ...]  # global position of each shard's first row

    @property
    def size(self) -> int:
        return self.offsets[-1] + self.rows[-1] if self.shards else 0

    def scores_path(self, shard: str) -> StoragePath:
        return Pool(self.pool).scores_parquet(self.tag, shard)

    def embeddings_path(self, shard: str) -> StoragePath:
        return Pool(self.pool).image_embeddings(self.tag, shard)


def open_scored_pool(pool: str | StoragePath, tag: str) -> ScoredPool:
    """The shards of scores/TAG; a UserError naming the available tags when it is missing."""
    pool = open_root(pool)
    if not pool.is_dir():
        raise UserError(f"pool folder {pool} does not exist; pass the folder `curate download` wrote")
    layout = Pool(pool)
    tags = layout.score_tags()
    if tag not in tags:
        have = ", ".join(tags) if tags else "none: run `curate score` first"
        raise UserError(f"no scores tag {tag!r} in {pool} (available: {have}); pass one with --scores")
    shards = layout.scored_shards(tag)
    rows = []
    for shard in shards:
        path = layout.scores_parquet(tag, shard)
        try:
            meta = parquet_metadata(path)
        except Exception as exc:  # a truncated or foreign file
            raise UserError(f"{path} is not a readable parquet file ({exc}); rerun `curate score`") from exc
        missing = [c for c in SCORE_COLUMNS if c not in meta.schema.names]
        if missing:
            raise UserError(f"{path} lacks column(s) {', '.join(missing)}; rerun `curate score` with this version")
        rows.append(meta.num_rows)
    offsets = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(int).tolist() if rows else []
    return ScoredPool(pool, tag, tuple(shards), tuple(rows), tuple(offsets))


def check_pixel_columns(scored: ScoredPool) -> None:
    """phash-pixels reads the thumbnails `curate score` stores since they were added."""
    for shard in scored.shards:
        path = scored.scores_path(shard)
        if "pixels" not in parquet_schema(path).names:
            raise UserError(f"{path} has no pixel thumbnails (scored by an older clipcurate); rerun `curate score` "
                            f"with the same --tag (it rescores such shards), or use --method exact,phash-knn")


@dataclass
class ScoreColumns:
    """The score columns dedup needs, concatenated over shards in global row order."""

    uid: "object"  # pyarrow ChunkedArray of strings: no Python object per uid (10M rows: 0.4 GB, not 1 GB)
    clip_score: np.ndarray  # float64, NaN where null
    sha256: np.ndarray  # (n, 4) uint64 keys of image_sha256 (hashes.sha256_keys), not its text
    sha256_valid: np.ndarray  # bool: the row has an image_sha256
    phash: np.ndarray  # uint64
    phash_valid: np.ndarray  # bool


def read_score_columns(scored: ScoredPool) -> ScoreColumns:
    """uid, clip_score, image_sha256 and phash of every scored row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from curate.dedup.hashes import sha256_keys

    tables, keys, has_key = [], [], []
    for shard in scored.shards:  # the sha256 text becomes 32-byte keys a shard at a time
        piece = read_parquet(scored.scores_path(shard), columns=list(SCORE_COLUMNS))
        k, v = sha256_keys(piece.column("image_sha256"))
        keys.append(k)
        has_key.append(v)
        tables.append(piece.drop_columns(["image_sha256"]))
    table = pa.concat_tables(tables, promote_options="permissive") if tables else None
    if table is None or table.num_rows == 0:
        raise UserError(f"scores tag {scored.tag!r} in {scored.pool} has no rows; nothing to deduplicate")
    if table.column("uid").null_count:
        raise UserError(f"scores tag {scored.tag!r} has rows without a uid; rerun `curate score`")
    phash = table.column("phash")
    valid = pc.is_valid(phash).to_numpy(zero_copy_only=False)
    phash_np = pc.fill_null(phash.cast(pa.uint64()), 0).to_numpy()
    score = pc.fill_null(table.column("clip_score").cast(pa.float64()), float("nan")).to_numpy()
    return ScoreColumns(
        uid=table.column("uid"),
        clip_score=np.asarray(score, dtype=np.float64),
        sha256=np.concatenate(keys),
        sha256_valid=np.concatenate(has_key),
        phash=np.asarray(phash_np, dtype=np.uint64),
        phash_valid=np.asarray(valid, dtype=bool),
    )


def open_embedding_matrix(path: StoragePath, label: str, fix: str, rows: int | None = None, dim: int | None = None) -> np.ndarray:
    """A float (rows, dim) .npy, memory-mapped; a UserError naming `label` and `fix` otherwise.

    One check for every embeddings file dedup reads: the pool's own and --against's.
    """
    try:
        arr = load_npy(path)
    except Exception as exc:  # noqa: BLE001 - numpy raises several types for a bad file
        raise UserError(f"{label} {path} is not a readable .npy file ({exc}); {fix}") from None
    want_rows = rows if rows is not None else "n"
    want_dim = dim if dim is not None else "dim"
    if (arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating)
            or (rows is not None and arr.shape[0] != rows) or (dim is not None and arr.shape[1] != dim)):
        raise UserError(f"{label} {path} holds {arr.dtype} {arr.shape}, expected float ({want_rows}, {want_dim}); {fix}")
    return arr


def check_embeddings(scored: ScoredPool) -> int:
    """Validate every shard's embeddings file against its parquet; return the dimension."""
    dim = None
    for shard, rows in zip(scored.shards, scored.rows):
        path = scored.embeddings_path(shard)
        if not path.is_file():
            raise UserError(
                f"no embeddings for shard {shard} of tag {scored.tag!r} ({path} missing); "
                "rerun `curate score` (it writes embeddings/) or use --method exact/phash"
            )
        arr = open_embedding_matrix(path, "embeddings", f"rerun `curate score` to match {shard}.parquet", rows=rows)
        if dim is not None and arr.shape[1] != dim:
            raise UserError(f"{path} has dimension {arr.shape[1]}, other shards {dim}; rerun `curate score`")
        dim = arr.shape[1]
        del arr
    if dim is None:
        raise UserError(f"scores tag {scored.tag!r} has no shards")
    return dim


def normalized(block: np.ndarray) -> np.ndarray:
    """float32 copy with unit rows (zero rows stay zero): float16 storage loses ~1e-3 of norm."""
    x = np.array(block, dtype=np.float32)  # always a writable copy (mmaps are read-only)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def iter_embedding_batches(scored: ScoredPool, batch: int = 32768) -> Iterator[tuple[int, np.ndarray]]:
    """(global start, float32 unit rows) over all shards, each shard memory-mapped in turn."""
    for shard, start in zip(scored.shards, scored.offsets):
        arr = load_npy(scored.embeddings_path(shard))
        for i in range(0, arr.shape[0], batch):
            yield start + i, normalized(arr[i : i + batch])
        del arr  # unmap, so resident pages stay bounded by one shard


def gather_rows(scored: ScoredPool, positions: np.ndarray) -> np.ndarray:
    """float32 unit rows at sorted global positions (a training sample, a batch of cells),
    read shard by shard into one preallocated array."""
    bounds = np.asarray(scored.offsets + (scored.size,))
    out = None
    for k, shard in enumerate(scored.shards):
        lo, hi = np.searchsorted(positions, [bounds[k], bounds[k + 1]])
        if hi > lo:
            arr = load_npy(scored.embeddings_path(shard))
            if out is None:
                out = np.empty((len(positions), arr.shape[1]), dtype=np.float32)
            out[lo:hi] = normalized(arr[positions[lo:hi] - bounds[k]])
            del arr  # unmap, so resident pages stay bounded by one shard
    return out if out is not None else np.zeros((0, 0), np.float32)
