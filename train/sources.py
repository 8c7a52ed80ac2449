"""Where training data is: the tar shards --data names (a shard set, a pool, a folder
of tars, a brace pattern, one tar; each local or at a URL: s3://, gs://, http(s)://, or
`pipe:COMMAND` shards as open_clip takes them), the uids --subset keeps, and a fail-fast
check of the first shard. The pool's layout comes from shards.layout, the manifest from
shards.manifest, and what a URL means from shards.storage."""
from __future__ import annotations

from pathlib import Path
from tarfile import TarError
from typing import Any

from clikit.errors import UserError
from shards.layout import Pool
from shards.manifest import MANIFEST_NAME, read_manifest
from shards.reader import iter_tar_samples
from shards.storage import PIPE_PREFIX, StoragePath, as_path, is_url, missing_files, open_root, parquet_metadata
from shards.uid_arrays import SortedUids


def resolve_shards(data: str | Path) -> list[str]:
    """Tar paths or URLs for DATA: a shard set (manifest.json), a pool (shards/*.tar), a dir of
    tars, a brace pattern (`dir/{00000..00009}.tar`) or one tar file, local or at a URL;
    `pipe:COMMAND` shards (brace patterns too) are taken as they are, read when training opens them."""
    import webdataset as wds

    text = str(data)
    if text.startswith(PIPE_PREFIX):  # a command: nothing to list; check_first_shard runs the first
        return wds.shardlists.expand_urls(text)
    path = open_root(text, "--data") if is_url(text) else Path(text)
    if path.is_dir():
        pool = Pool(path)
        manifest = _read_manifest(path)
        if manifest is not None:
            tars = _manifest_tars(path, manifest)
        elif pool.is_pool():
            tars = sorted(str(p) for p in pool.shards_dir.glob("*.tar"))
        else:
            tars = sorted(str(p) for p in path.glob("*.tar"))
        if not tars:
            raise UserError(
                f"no .tar shards in {path}; point --data at a shard set, a pool with shards/, or a tar pattern"
            )
        return tars
    if "{" in text or "::" in text:
        tars = wds.shardlists.expand_urls(text)
    elif path.suffix == ".tar":
        tars = [text]
    else:
        raise UserError(f"--data {text}: no such directory or tar file; give a shard set, a pool or a tar pattern")
    missing = missing_files(tars)
    if missing:
        raise UserError(f"{len(missing)} of {len(tars)} shards are missing (first: {missing[0]}); check --data")
    return tars


def _read_manifest(root: StoragePath) -> Any:
    """The shard set's manifest, None when ROOT has none; UserError when it is not JSON."""
    try:
        return read_manifest(root)
    except (OSError, ValueError) as exc:
        raise UserError(f"{root / MANIFEST_NAME} is not readable JSON ({exc}); re-run `curate export`") from exc


def _manifest_tars(root: StoragePath, meta: Any) -> list[str]:
    """The tars a manifest lists, found next to it (shard entries by name, path or file,
    or plain strings); the tars in ROOT when it lists none."""
    names: list[str] = []
    for shard in meta.get("shards", []) if isinstance(meta, dict) else []:
        name = shard.get("name") or shard.get("path") or shard.get("file") if isinstance(shard, dict) else shard
        if name:
            names.append(str(root / Path(str(name)).name))
    if not names:  # a manifest without a shard list: take the tars next to it
        names = sorted(str(p) for p in root.glob("*.tar"))
    missing = missing_files(names)
    if missing:
        raise UserError(f"{root / MANIFEST_NAME} lists {len(missing)} missing shards (first: {missing[0]}); re-run `curate export`")
    return names


def load_subset_uids(subset: str | Path, data: str | Path | None = None) -> SortedUids:
    """uids of a subset: a parquet path or URL, or a NAME under DATA/subsets/NAME.parquet (DATA a pool,
    local or at a URL); held as sorted (high, low) uint64 pairs, 16 bytes a uid, not Python strings."""
    path = as_path(subset)
    if not path.is_file() and data is not None:
        candidate = Pool(data).subset_parquet(str(subset))
        if candidate.is_file():
            path = candidate
    if not path.is_file():
        raise UserError(
            f"subset {subset!r} not found (looked for {path} and POOL/subsets/{subset}.parquet); "
            "run `curate filter` or give a parquet path"
        )
    try:
        uids = SortedUids.from_parquet(path)
        rows = parquet_metadata(path).num_rows
    except Exception as exc:  # pyarrow raises several types for bad files
        raise UserError(f"{path} has no readable `uid` column ({exc})") from exc
    if not len(uids):
        raise UserError(f"subset {path} is empty (or holds no 32-hex-digit sample uids); nothing to train on")
    if len(uids) < rows:
        raise UserError(f"subset {path}: {rows - len(uids)} of its {rows} rows are not distinct sample uids "
                        "(32 lowercase hex digits); make it with `curate filter`")
    return uids


def check_first_shard(shards: list[str]) -> None:
    """Fail fast with a clear error when the first shard is not a readable tar: its first
    sample is read by shards.reader, as the other stages read shards."""
    try:
        first = next(iter_tar_samples(shards[0]), None)
    except (TarError, EOFError, OSError) as exc:
        raise UserError(f"shard {shards[0]} is not a readable tar ({exc}); check --data") from exc
    if first is None:
        raise UserError(f"shard {shards[0]} is empty; check --data")
