"""`curate download`: img2dataset into a pool, with stable uids, safety checks and exact resume."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.download.distributors import get_distributor
from curate.download.fetch import RESIZE_MODES, DownloadSettings, run_img2dataset
from curate.download.inputs import normalise_input, read_input_table, resolve_mapping
from curate.download.pool import read_shard_tables, repair_unfinished
from curate.download.retry import retry_failed_samples
from clikit.errors import UserError
from clikit.versions import installed_versions
from shards.atomic import replacing, write_json_atomic
from shards.layout import Pool
from shards.storage import StoragePath, open_root, remove_tree

__all__ = ["DownloadResult", "DownloadSettings", "download_pool", "summarise"]

# The packages whose versions pool.json records: what made the shards.
RECORDED_PACKAGES = ("clipcurate", "img2dataset", "webdataset", "pyarrow", "pillow", "opencv-python-headless")


@dataclass
class DownloadResult:
    pool: StoragePath
    input_rows: int
    success: int
    failed: int
    failures_by_reason: dict[str, int] = field(default_factory=dict)
    shards: int = 0
    seconds: float = 0.0
    fetched_shards: int = 0


def _check_pool_dir(pool: StoragePath) -> None:
    if pool.exists() and not pool.is_dir():
        raise UserError(f"POOL {pool} is a file; give a folder (new or an earlier pool to resume)")


def _fingerprint(table: pa.Table, mapping: dict, samples_per_shard: int) -> str:
    digest = hashlib.sha256()
    for uid in table.column("uid").to_pylist():
        digest.update(uid.encode())
    digest.update(json.dumps([mapping, samples_per_shard], sort_keys=True).encode())
    return digest.hexdigest()


def summarise(pool: Pool) -> tuple[int, int, dict[str, int]]:
    table = read_shard_tables(pool, columns=["status", "fail_reason"])
    if table.num_rows == 0:
        return 0, 0, {}
    success = pc.sum(pc.equal(table["status"], "success")).as_py() or 0
    reasons: dict[str, int] = {}
    for reason in table["fail_reason"].to_pylist():
        if reason is not None:
            reasons[reason] = reasons.get(reason, 0) + 1
    return success, table.num_rows - success, dict(sorted(reasons.items(), key=lambda kv: -kv[1]))


def download_pool(
    input_path: Path,
    pool: str | StoragePath,
    *,
    preset: str | None = None,
    url_col: str | None = None,
    caption_col: str | None = None,
    settings: DownloadSettings | None = None,
    retry_failed: bool = False,
) -> DownloadResult:
    """Download INPUT's images into POOL, a folder or an fsspec URL (see docs/design.md, The pool).
    Resumes a killed run."""
    settings = settings or DownloadSettings()
    if settings.resize_mode not in RESIZE_MODES:
        raise UserError(f"unknown --resize-mode {settings.resize_mode!r}; choose one of {', '.join(RESIZE_MODES)}")
    if settings.samples_per_shard < 1 or settings.processes < 1 or settings.threads < 1:
        raise UserError("--samples-per-shard, --processes and --threads must be at least 1")
    get_distributor(settings.distributor)  # an unknown name or a missing engine, before anything is written
    input_path, pool = Path(input_path), open_root(pool)
    _check_pool_dir(pool)
    url_name, caption_name = resolve_mapping(preset, url_col, caption_col)
    table, mapping = normalise_input(read_input_table(input_path), url_name, caption_name, str(input_path))
    fingerprint = _fingerprint(table, mapping.as_dict(), settings.samples_per_shard)

    pool.mkdir(parents=True, exist_ok=True)
    layout = Pool(pool)
    pool_json = layout.pool_json
    previous = json.loads(pool_json.read_text()) if pool_json.exists() else None
    if previous and previous.get("fingerprint") != fingerprint:
        raise UserError(
            f"{pool} already holds a download of another input or with other --samples-per-shard "
            f"({previous.get('source')}); use a new POOL folder"
        )
    input_parquet = layout.input_parquet()
    input_parquet.parent.mkdir(parents=True, exist_ok=True)
    if not input_parquet.exists():
        with replacing(input_parquet) as tmp:
            pq.write_table(table, tmp)

    started = time.time()
    repair_unfinished(layout)
    finished_before = set(layout.finished_shards())
    expected_shards = -(-table.num_rows // settings.samples_per_shard)
    if len(finished_before) < expected_shards:
        run_img2dataset(input_parquet, layout.shards_dir, mapping.extra, settings)
    if retry_failed:
        retry_failed_samples(layout, mapping.extra, settings)
    repair_unfinished(layout)
    finished = layout.finished_shards()
    if len(finished) < expected_shards:
        raise UserError(
            f"{expected_shards - len(finished)} of {expected_shards} shards did not finish; "
            "run the same command again to resume"
        )
    success, failed, reasons = summarise(layout)
    if success + failed != table.num_rows:
        raise UserError(f"pool {pool} accounts for {success + failed} rows but the input has {table.num_rows}; rerun to repair")
    remove_tree(layout.retry_dir)
    result = DownloadResult(
        pool=pool, input_rows=table.num_rows, success=success, failed=failed, failures_by_reason=reasons,
        shards=len(finished), seconds=time.time() - started, fetched_shards=len(set(finished) - finished_before),
    )
    write_json_atomic(
        pool_json,
        {
            "source": [str(input_path.resolve())],
            "preset": preset,
            "columns": mapping.as_dict(),
            "fingerprint": fingerprint,
            "settings": {k: v for k, v in vars(settings).items()},
            "counts": {"input_rows": table.num_rows, "success": success, "failed": failed, "shards": len(finished),
                       "failures_by_reason": reasons},
            "versions": installed_versions(*RECORDED_PACKAGES),
            "created": previous.get("created") if previous else time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        sort_keys=True,
        default=str,
    )
    if success == 0:  # kept on disk (inspectable, resumable) but surely not what the user meant
        why = ", ".join(f"{k} {v}" for k, v in reasons.items())
        hint = "; pass --allow-private for a loopback or private server" if "private-address" in reasons else ""
        raise UserError(f"no image was downloaded: all {failed} rows failed ({why}){hint}; see {pool}/shards/*.parquet")
    return result
