"""img2dataset's webdataset writer, made atomic and given a fail_reason column.

img2dataset writes NNNNN.tar and NNNNN.parquet in place and marks a shard finished by
writing NNNNN_stats.json last. A kill mid-shard would leave a truncated tar under the
final name; here both files are written under the temporary name of shards/atomic.py,
put in key order (shards/reorder.py) and renamed only when complete, so a
finished-looking tar is always whole and the same input always gives the same shards.
"""
from __future__ import annotations

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
        self.tar_fd = fs.open(temporary_name(self.final_paths[0]), "wb")
        # A fixed whole-second mtime: webdataset's default, time.time(), is a float, which
        # tarfile can only store in a PAX header, adding 1 KiB to every member (3x the tar of
        # a small image) and doubling the header parsing of every later read; and any clock
        # time would make a refetched shard (a resumed run) differ from the first fetch.
        self.tarwriter = wds.TarWriter(self.tar_fd, mtime=FIXED_MTIME)
        self.save_caption = save_caption
        if "fail_reason" not in schema.names:
            schema = schema.append(pa.field("fail_reason", pa.string()))
        self.buffered_parquet_writer = BufferedParquetWriter(temporary_name(self.final_paths[1]), schema, 100)
        self.encode_format = encode_format

    def write(self, img_str, key, caption, meta):
        meta["fail_reason"] = failure_reason(meta.get("status"), meta.get("error_message"))
        super().write(img_str, key, caption, meta)

    def close(self):
        super().close()
        protocols = self.fs.protocol if isinstance(self.fs.protocol, (tuple, list)) else (self.fs.protocol,)
        if "file" in protocols:  # pools are local folders; a remote one keeps completion order
            shard_in_key_order(Path(temporary_name(self.final_paths[0])), Path(temporary_name(self.final_paths[1])))
        for final in self.final_paths:  # tar first: a parquet never describes a missing tar
            self.fs.mv(temporary_name(final), final)
