"""Where pools and shard sets live: a local folder, or any fsspec URL (s3://bucket/pool, gs://, ...).

`as_path(location)` is the one place that decides. A plain path (or a file:// URL) is a
pathlib.Path, exactly what every stage used before; anything else is a universal-pathlib
UPath over fsspec (s3fs for s3://), which has the same methods the stages call (`/`,
exists, is_file, is_dir, iterdir, glob, open, read_text, stat, unlink, mkdir). What an
object store cannot do the pathlib way goes through the helpers here, whose local branch
is the old call unchanged:

- reading parquet and .npy (pyarrow and numpy want an OS path or a filesystem; a remote
  .npy is read whole instead of memory-mapped: one shard's embeddings at a time),
- removing a folder (shutil.rmtree locally, fs.rm(recursive) remotely),
- reading a shard as a stream (`open_stream`: also `pipe:COMMAND`, open_clip's shard URLs),
  and telling which of many shards are missing with one listing per remote folder,
- writing: shards/atomic.py stages a remote file locally and uploads it in one PUT.

Remote listings are never cached (use_listings_cache=False): img2dataset's workers and
other processes write into the same prefix, and a stale listing would hide their shards.
`open_root` adds one request to the store so a wrong endpoint, missing credentials or a
missing bucket is a one-line UserError before any work.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Union
from urllib.parse import unquote, urlparse

from clikit.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from upath import UPath

# A pool or shard-set location: Path for a local folder, UPath for a URL.
StoragePath = Union[Path, "UPath"]

URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# A shard given as a command whose stdout is the tar (webdataset's and open_clip's `pipe:aws s3 cp URL -`).
PIPE_PREFIX = "pipe:"
# Plain HTTP(S): no bucket to ask first, and no folder listing (a folder's page is whatever
# the server makes of it), so each file is asked for itself.
PLAIN_HTTP = frozenset({"http", "https"})


def is_url(location: str) -> bool:
    """True for `scheme://...` (file:// included)."""
    return URL_SCHEME.match(location) is not None


def as_path(location: str | Path | "UPath") -> StoragePath:
    """A local Path, or a UPath for any other fsspec URL. Creates nothing, asks nothing."""
    if isinstance(location, Path):
        return location
    if not isinstance(location, str):  # a UPath already
        return location
    match = URL_SCHEME.match(location)
    if match is None:
        return Path(location)
    if match.group(1).lower() == "file":
        return Path(unquote(urlparse(location).path))
    try:
        from upath import UPath  # only for URLs: the s3 extra
    except ImportError:
        raise UserError(f"{location} is a URL; reading and writing URLs needs pip install 'clipcurate[s3]'") from None
    try:
        return UPath(location, use_listings_cache=False)
    except (ValueError, ImportError) as exc:  # an unknown protocol, or its fsspec package missing
        raise UserError(f"{location}: {exc}") from None


def file_stamps(paths: "list[StoragePath] | list[Path]") -> list[list]:
    """[name, size, modification time in ns] of each file: what a stage records of its inputs,
    so that a rerun can tell whether they changed since."""
    return [[str(path), (stat := path.stat()).st_size, stat.st_mtime_ns] for path in paths]


def is_remote(path: StoragePath) -> bool:
    return not isinstance(path, Path)


# What each failure of the first request means, and what the user sets to fix it:
# (exception class names, problem). Matched by name, so no store's client is imported here.
_STORE_PROBLEMS = (
    (("NoCredentialsError", "PartialCredentialsError", "NoAuthTokenError"),
     "no credentials were found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"),
    (("ImportError",), "the fsspec package for this protocol is not installed"),
    (("FileNotFoundError",), "its bucket does not exist; create it first (e.g. `aws s3 mb s3://BUCKET`)"),
    (("PermissionError", "ClientError"), "access was refused; check the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE)"),
    (("EndpointConnectionError", "ConnectionError", "TimeoutError", "OSError"),
     "the store cannot be reached; set AWS_ENDPOINT_URL to its address (e.g. http://127.0.0.1:9000 for a local server)"),
)


def _store_problem(exc: BaseException) -> str:
    names = {cls.__name__ for cls in type(exc).__mro__}
    for classes, problem in _STORE_PROBLEMS:
        if names.intersection(classes):
            return problem
    return "the store refused the first request"


def open_root(location: str | Path | "UPath", what: str = "pool") -> StoragePath:
    """as_path, and for a URL one request to its bucket: a UserError naming the URL and what to set if it fails.
    An http(s) URL has no bucket: its files are asked for when they are read."""
    path = as_path(location)
    if is_remote(path) and path.protocol not in PLAIN_HTTP:
        try:
            path.fs.info(path.anchor.rstrip("/") or path.path)
        except Exception as exc:  # noqa: BLE001 - every store client raises its own types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"{what} {path}: {_store_problem(exc)} ({type(exc).__name__}: {first})") from None
    return path


def register_with_duckdb(con: Any, path: StoragePath) -> None:
    """Let a DuckDB connection read `path`'s store through fsspec (DuckDB's httpfs wheels lag
    the installed DuckDB); nothing for a local path."""
    if is_remote(path):
        con.register_filesystem(path.fs)


def read_parquet(path: StoragePath, **options: Any) -> "pa.Table":
    import pyarrow.parquet as pq  # heavy: imported when a stage reads

    if is_remote(path):
        return pq.read_table(path.path, filesystem=path.fs, **options)
    return pq.read_table(path, **options)


def parquet_schema(path: StoragePath) -> "pa.Schema":
    import pyarrow.parquet as pq  # heavy: imported when a stage reads

    if is_remote(path):
        return pq.read_schema(path.path, filesystem=path.fs)
    return pq.read_schema(path)


def parquet_metadata(path: StoragePath) -> "pq.FileMetaData":
    import pyarrow.parquet as pq  # heavy: imported when a stage reads

    if is_remote(path):
        return pq.read_metadata(path.path, filesystem=path.fs)
    return pq.read_metadata(path)


def parquet_file(path: StoragePath) -> "pq.ParquetFile":
    """A ParquetFile to read batch by batch (a remote one through its store's filesystem)."""
    import pyarrow.parquet as pq  # heavy: imported when a stage reads

    if is_remote(path):
        return pq.ParquetFile(path.path, filesystem=path.fs)
    return pq.ParquetFile(path)


def load_npy(path: StoragePath, mmap: bool = True) -> "np.ndarray":
    """np.load, memory-mapped for a local file; a remote file is read whole (no mmap over HTTP)."""
    import io

    import numpy as np  # heavy: imported when a stage reads

    if is_remote(path):
        return np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def remove_tree(path: StoragePath) -> None:
    """Remove a folder and everything in it; nothing if it is not there."""
    if is_remote(path):
        if path.exists():
            path.fs.rm(path.path, recursive=True)
        return
    shutil.rmtree(path, ignore_errors=True)


def upload(local: Path, path: StoragePath) -> None:
    """Put a finished local file at a remote path: one PUT, all or nothing (shards/atomic.py)."""
    path.fs.put_file(str(local), path.path)


def open_stream(location: str | StoragePath) -> BinaryIO:
    """A binary stream reading LOCATION from its start: `pipe:COMMAND` runs the command through
    webdataset's gopen (as open_clip's --train-data does), a path or URL opens through as_path."""
    if isinstance(location, str) and location.startswith(PIPE_PREFIX):
        import webdataset as wds  # heavy: only for pipe: shards

        return wds.gopen(location)
    return as_path(location).open("rb")


def missing_files(locations: list[str]) -> list[str]:
    """The LOCATIONS (paths or URLs, in their order) that are not files. A remote folder is
    listed once rather than asked once per file (a shard set can hold thousands of shards)."""
    listings: dict[str, set[str] | None] = {}
    missing = []
    for location in locations:
        path = as_path(location)
        if is_remote(path) and path.protocol not in PLAIN_HTTP:
            folder = str(path.parent)
            if folder not in listings:
                listings[folder] = _file_names(path.parent)
            found = path.name in listings[folder] if listings[folder] is not None else path.is_file()
        else:
            found = path.is_file()
        if not found:
            missing.append(location)
    return missing


def _file_names(folder: StoragePath) -> set[str] | None:
    """Names of the files in a remote folder; empty when it does not exist, None when it cannot be listed."""
    try:
        entries = folder.fs.ls(folder.path, detail=True)
    except FileNotFoundError:
        return set()
    except (OSError, NotImplementedError):
        return None
    return {entry["name"].rstrip("/").rsplit("/", 1)[-1] for entry in entries if entry.get("type") == "file"}
