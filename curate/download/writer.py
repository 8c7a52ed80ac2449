"""img2dataset's webdataset writer, made atomic and given a fail_reason column.

img2dataset writes NNNNN.tar and NNNNN.parquet in place and marks a shard finished by
writing NNNNN_stats.json last. A kill mid-shard would leave a truncated tar under the
final name; here both files are written under the temporary name of shards/atomic.py,
put in key order (shards/reorder.py) and renamed only when complete, so a
finished-looking tar is always whole and the same input always gives the same shards.
A pool on an object store (img2dataset hands an s3:// folder to every worker) gets the
same bytes by shards/atomic.py's rule: the shard is written and put in key order in a
local staging folder, then each file is uploaded to its final key in one put, tar first.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import fsspec
import pyarrow as pa
import webdataset as wds
from img2dataset.writer import BufferedParquetWriter, WebDatasetSampleWriter

from curate.download.reasons import failure_reason
from shards.atomic import temporary_name
from shards.reorder import shard_in_key_order
from shards.writer import FIXED_MTIME


class PoolShardWriter(WebDatasetSampleWriter):
    def __init__(self, shard_id, output_folder, save_caption, oom_shard_count, schema, encode_format):
        # Deliberately not calling super().__init__: it opens the final file names directly.
        self.oom_shard_count = oom_shard_count
        self.shard_id = shard_id
        shard_name = f"{shard_id:0{oom_shard_count}d}"
        fs, output_path = fsspec.core.url_to_fs(output_folder)
        self.fs = fs
        self.final_paths = [f"{output_path}/{shard_name}.tar", f"{output_path}/{shard_name}.parquet"]
        # A local folder is written beside the targets; a remote one is staged on local disk
        # (the parquet writer and the key-order rewrite need local files).
        self.staging = None if _is_local(fs) else tempfile.mkdtemp(prefix=f"clipcurate-shard-{shard_name}-")
        self.write_paths = [self._write_path(final) for final in self.final_paths]
        self.tar_fd = open(self.write_paths[0], "wb")
        # A fixed whole-second mtime: webdataset's default, time.time(), is a float, which
        # tarfile can only store in a PAX header, adding 1 KiB to every member (3x the tar of
        # a small image) and doubling the header parsing of every later read; and any clock
        # time would make a refetched shard (a resumed run) differ from the first fetch.
        self.tarwriter = wds.TarWriter(self.tar_fd, mtime=FIXED_MTIME)
        self.save_caption = save_caption
        if "fail_reason" not in schema.names:
            schema = schema.append(pa.field("fail_reason", pa.string()))
        self.buffered_parquet_writer = BufferedParquetWriter(self.write_paths[1], schema, 100)
        self.encode_format = encode_format

    def write(self, img_str, key, caption, meta):
        meta["fail_reason"] = failure_reason(meta.get("status"), meta.get("error_message"))
        super().write(img_str, key, caption, meta)

    def _write_path(self, final: str) -> str:
        """Where a file is written before it takes its final name: its temporary name (shards/atomic.py)."""
        if self.staging is None:
            return temporary_name(final)
        return f"{self.staging}/{temporary_name(final.rsplit('/', 1)[-1])}"

    def close(self):
        super().close()
        shard_in_key_order(Path(self.write_paths[0]), Path(self.write_paths[1]))
        try:
            for written, final in zip(self.write_paths, self.final_paths):  # tar first: a parquet never describes a missing tar
                if self.staging is None:
                    self.fs.mv(written, final)
                else:
                    self.fs.put_file(written, final)  # one put: all or nothing
        finally:
            if self.staging is not None:
                shutil.rmtree(self.staging, ignore_errors=True)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "file" in protocols or "local" in protocols
