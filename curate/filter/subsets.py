"""Subsets on disk: subsets/NAME.parquet and DataComp's subsets/NAME.npy.

A subset is subsets/NAME.parquet (column `uid`, sorted; JSON under key `clipcurate` in
the parquet metadata: the SQL, parameters, input tags, counts) and subsets/NAME.npy
(DataComp's format: a sorted 1-D array of dtype np.dtype("u8,u8"), the uid's high and
low 64 bits). Paths come from shards.layout.Pool; both files are written through
shards.atomic, the .npy first: the parquet's presence is what marks the subset made.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clikit.errors import UserError
from curate.filter.datacomp_uids import (
    DATACOMP_UID_DTYPE, UidBlock, UidFormatError, pairs_to_text, sorted_order, text_to_arrow,
)
from shards.atomic import replacing
from shards.layout import Pool
from shards.storage import StoragePath, load_npy, parquet_schema

if TYPE_CHECKING:
    import pyarrow as pa

METADATA_KEY = b"clipcurate"
ROW_GROUP_ROWS = 1 << 20  # pyarrow's default row group: the file is what one write_table wrote
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_subset_name(name: str) -> str:
    """A subset name is a plain file name: letters, digits, '.', '_', '-'."""
    if not name or not _NAME.match(name):
        raise UserError(f"subset name {name!r} is not a plain name; use letters, digits, '.', '_' or '-'")
    return name


def check_subset_free(pool: str | StoragePath, name: str, overwrite: bool, metadata: dict[str, Any],
                      pairs: np.ndarray) -> bool:
    """Refuse to replace an existing subsets/NAME.parquet unless `overwrite`, or unless it is
    the subset about to be written (the same sorted uid `pairs` and provenance `metadata`, less
    the time it was made): then True, and the caller leaves it as is. An identical rerun (one killed after its subset was written,
    say) succeeds; a different selection under the same name is refused, naming the difference."""
    parquet_path = Pool(pool).subset_parquet(name)
    if overwrite or not parquet_path.exists():
        return False
    differs = _difference(Pool(pool), name, metadata, pairs)
    if differs is None:
        return True
    raise UserError(f"subset {name!r} already exists in {parquet_path.parent} ({differs}); "
                    "pick another --name or pass --overwrite")


def _difference(layout: Pool, name: str, metadata: dict[str, Any], pairs: np.ndarray) -> str | None:
    """What differs between the subset on disk and the one about to be written, or None. The
    uids are compared through the .npy (16 bytes a uid, memory-mapped), written before the parquet."""
    try:
        old_meta = json.loads((parquet_schema(layout.subset_parquet(name)).metadata or {}).get(METADATA_KEY, b"{}"))
        old_pairs = load_npy(layout.subset_npy(name))
    except Exception:  # noqa: BLE001 - pyarrow and numpy raise several types for a damaged file
        return "the files there are unreadable"
    # When and from which file versions it was made (`inputs`) do not make another subset: a
    # rerun after a stage rewrote its files with the same rows still finds the same uids.
    for key in [*metadata, *(k for k in old_meta if k not in metadata)]:  # what was asked comes first
        if key not in ("created", "inputs") and old_meta.get(key) != metadata.get(key):
            return f"made with another {key}"
    if old_pairs.dtype != pairs.dtype or not np.array_equal(old_pairs, pairs):
        return "other uids"
    return None


def _decode(uids: pa.Array | pa.ChunkedArray | list[str]) -> UidBlock:
    try:
        return UidBlock.from_arrow(uids)
    except UidFormatError as exc:
        raise UserError(str(exc)) from None


def uids_to_pairs(uids: pa.Array | pa.ChunkedArray | list[str]) -> np.ndarray:
    """32-hex uids (pyarrow string array or list) -> unsorted np.dtype("u8,u8") array.

    A null, short or non-hex uid is a UserError.
    """
    return _decode(uids).pairs


def write_subset(
    pool: str | StoragePath, name: str, uids: pa.Array | pa.ChunkedArray | list[str], metadata: dict[str, Any],
    overwrite: bool = False,
) -> int:
    """Write subsets/NAME.parquet and .npy (both sorted by uid); returns the uid count.

    `uids`: a pyarrow string (Chunked)Array or a list of 32-hex uids. Duplicate uids are
    dropped. Both files are written under temporary names and renamed when complete, the
    .npy first: the parquet's presence is what marks the subset made.
    """
    check_subset_name(name)
    return write_uid_block(pool, name, _decode(uids), None, metadata, overwrite=overwrite)


def write_uid_block(
    pool: str | StoragePath,
    name: str,
    block: UidBlock,
    rows: np.ndarray | None,
    metadata: dict[str, Any],
    overwrite: bool = False,
) -> int:
    """write_subset for uids already decoded (curate.filter.datacomp_uids); `rows` picks some of them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_subset_name(name)
    order = sorted_order(block.pairs, rows)
    pairs = block.pairs[order]
    if len(pairs) > 1:
        fresh = np.ones(len(pairs), dtype=bool)
        fresh[1:] = (pairs["f0"][1:] != pairs["f0"][:-1]) | (pairs["f1"][1:] != pairs["f1"][:-1])
        if not fresh.all():
            metadata = {**metadata, "duplicates_dropped": int((~fresh).sum())}
            pairs, order = pairs[fresh], order[fresh]
    del order
    metadata = {**metadata, "name": name, "count": int(len(pairs))}
    recorded = json.dumps(metadata, default=str)
    if check_subset_free(pool, name, overwrite, json.loads(recorded), pairs):
        return int(len(pairs))  # the same subset is there already: left as is
    schema = pa.schema([("uid", pa.string())], metadata={METADATA_KEY: recorded.encode()})
    layout = Pool(pool)
    # both written before either is renamed; the inner (.npy) is renamed first
    with replacing(layout.subset_parquet(name)) as tmp_parquet, replacing(layout.subset_npy(name)) as tmp_npy:
        with open(tmp_npy, "wb") as handle:  # np.save given a path would append ".npy"
            np.save(handle, pairs)
        # uids are unique random hex: a dictionary or compression costs time and saves little
        with pq.ParquetWriter(tmp_parquet, schema, use_dictionary=False, compression="none") as writer:
            for start in range(0, max(1, len(pairs)), ROW_GROUP_ROWS):
                # spelt again from the sorted pairs (always the canonical lowercase spelling),
                # a row group at a time: the text of 100M uids would be 3.2 GB
                text = text_to_arrow(pairs_to_text(pairs[start : start + ROW_GROUP_ROWS]))
                writer.write_table(pa.table({"uid": text}, schema=schema))
    return int(len(pairs))


def read_subset_metadata(pool: str | StoragePath, name: str) -> dict[str, Any]:
    """The `clipcurate` JSON of subsets/NAME.parquet."""
    parquet_path = Pool(pool).subset_parquet(name)
    if not parquet_path.is_file():
        have = sorted(p.stem for p in parquet_path.parent.glob("*.parquet")) if parquet_path.parent.is_dir() else []
        raise UserError(
            f"subset {name!r} not found in {parquet_path.parent} (available: {', '.join(have) or 'none'}); "
            "make it with `curate filter --name`"
        )
    try:
        schema = parquet_schema(parquet_path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"subset file {parquet_path} is not a readable parquet file ({first}); "
                        "make it again with `curate filter --overwrite`") from None
    if "uid" not in schema.names:
        raise UserError(f"subset file {parquet_path} has no column 'uid' (columns: {', '.join(schema.names) or 'none'}); "
                        "make it again with `curate filter --overwrite`")
    raw = (schema.metadata or {}).get(METADATA_KEY)
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        raise UserError(f"subset file {parquet_path} has unreadable clipcurate metadata; "
                        "make it again with `curate filter --overwrite`") from None


def load_datacomp_npy(path: str | Path) -> np.ndarray:
    """Read a DataComp/DFN subset file, checking it is a 1-D array of two uint64 fields."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--from-npy {path} does not exist")
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise UserError(f"--from-npy {path} is not a readable .npy file ({exc})") from None
    names = array.dtype.names
    if (
        array.ndim != 1
        or names is None
        or len(names) != 2
        or any(array.dtype.fields[n][0] != np.dtype("<u8") for n in names)
    ):
        raise UserError(
            f"--from-npy {path} has dtype {array.dtype} and shape {array.shape}; "
            "a DataComp subset is a 1-D array of np.dtype('u8,u8') (uid high, low 64 bits)"
        )
    pairs = np.empty(len(array), DATACOMP_UID_DTYPE)
    pairs["f0"], pairs["f1"] = array[names[0]], array[names[1]]
    return pairs
