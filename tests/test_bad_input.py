"""Bad input through the real `curate` CLI: one exact line on stderr, exit status 2, and
nothing already written lost or changed (every file under the pool and OUT hashed before
and after). Pools come from tests/poolfactory.py (no downloads), so each case is one CLI call."""
from __future__ import annotations

import hashlib
import io
import shutil
import struct
import tarfile
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clihelp import run_curate
from curate.filter.run import run_filter
from poolfactory import make_pool


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under the roots (missing roots count as empty)."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for root in roots if root.exists() for p in sorted(root.rglob("*")) if p.is_file()}


def refused(args: list, message: str, *roots: Path) -> None:
    """The CLI exits 2 with exactly `curate: error: MESSAGE` and leaves every file as it was."""
    before = snapshot(*roots)
    done = run_curate(*args)
    assert (done.returncode, done.stderr.strip()) == (2, f"curate: error: {message}"), done.stderr[-2000:]
    assert snapshot(*roots) == before, "a refused command changed what was already written"


@pytest.fixture
def pool(tmp_path):
    fp = make_pool(tmp_path / "pool", shards=2, per_shard=12)
    run_filter(fp.path, "top", top="60%")
    return fp.path


def png_header_only(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height whose pixels are zeros (small on disk, huge decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\x00" * (1 + (width + 7) // 8)
    body = zlib.compressobj(9)
    data = b"".join(body.compress(row) for _ in range(height)) + body.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


# --- download: the input list ------------------------------------------------------------

def _input(tmp_path: Path, captions, urls=None, name="in.parquet") -> Path:
    urls = urls or [f"http://127.0.0.1:9/{i}.jpg" for i in range(len(captions))]
    path = tmp_path / name
    pq.write_table(pa.table({"URL": urls, "TEXT": captions}), path)
    return path


def _invalid_utf8_strings() -> pa.Array:
    offsets = pa.py_buffer(struct.pack("<3i", 0, 1, 4))
    return pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(b"a\xc3(\xff")])


@pytest.mark.parametrize("case, make, message", [
    ("duplicate rows", lambda t: _input(t, ["a", "b", "a"], ["http://h/1", "http://h/2", "http://h/1"]),
     "{src} rows 0 and 2 have the same url and caption (uid {uid}); 1 repeated row in all: "
     "drop the repeats (rows count from 0)"),
    ("NUL in caption", lambda t: _input(t, ["fine", "bad\x00caption"]),
     "{src} row 1: the caption holds a NUL byte (at offset 3); remove it"),
    ("NUL in url", lambda t: _input(t, ["a", "b"], ["http://h/1", "http://h/\x002"]),
     "{src} row 1: the url holds a NUL byte (at offset 9); remove it"),
    ("binary caption, invalid UTF-8", lambda t: _input(t, pa.array([b"ok", b"caf\xe9"], pa.binary())),
     "{src} row 1: the caption is not valid UTF-8 (byte 0xe9 at offset 3); re-encode the input as UTF-8"),
    ("string caption, invalid UTF-8", lambda t: _input(t, _invalid_utf8_strings()),
     "{src} row 1: the caption is not valid UTF-8 (byte 0xc3 at offset 0); re-encode the input as UTF-8"),
])
def test_download_refuses_bad_rows_before_writing(case, make, message, tmp_path):
    from shards.uid import sample_uid

    src = make(tmp_path)
    out = tmp_path / "pool"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    refused(["download", src, out], message.format(src=src, uid=sample_uid("http://h/1", "a")), tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_download_csv_with_invalid_utf8(tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes(b"URL,TEXT\nhttp://h/1,caf\xe9\n")
    refused(["download", src, tmp_path / "pool"],
            f"{src} row 0: the caption is not valid UTF-8 (byte 0xe9 at offset 3); re-encode the input as UTF-8", tmp_path)


# --- export -----------------------------------------------------------------------------

def _add_member(tar_path: Path, name: str) -> None:
    with tarfile.open(tar_path, "a") as tar:
        info = tarfile.TarInfo(name)
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))


def test_export_refuses_a_dotdot_member(pool, tmp_path):
    tar = pool / "shards/00000.tar"
    _add_member(tar, "../x")
    refused(["export", pool, tmp_path / "out", "--subset", "top"],
            f"pool shard refused: {tar}: unsafe member name '../x'; re-download it (delete its _stats.json, "
            "rerun `curate download`) and rerun the export", pool)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_export_refuses_a_truncated_tar(pool, tmp_path):
    tar = pool / "shards/00000.tar"
    tar.write_bytes(tar.read_bytes()[:1500])
    refused(["export", pool, tmp_path / "out", "--subset", "top"],
            f"pool shard refused: {tar}: unreadable tar (ReadError: truncated header); re-download it "
            "(delete its _stats.json, rerun `curate download`) and rerun the export", pool)


def test_export_refuses_a_damaged_subset(pool, tmp_path):
    subset = pool / "subsets/top.parquet"
    subset.write_bytes(b"garbage")
    refused(["export", pool, tmp_path / "out", "--subset", "top"],
            f"subset file {subset} is not a readable parquet file (Parquet file size is 7 bytes, smaller than "
            "the minimum file footer (8 bytes)); make it again with `curate filter --overwrite`", pool, tmp_path / "out")


def test_export_refuses_a_subset_without_uids(pool, tmp_path):
    subset = pool / "subsets/top.parquet"
    pq.write_table(pa.table({"x": [1]}), subset)
    refused(["export", pool, tmp_path / "out", "--subset", "top"],
            f"subset file {subset} has no column 'uid' (columns: x); make it again with `curate filter --overwrite`",
            pool, tmp_path / "out")


# --- sql and filter over damaged parquet ------------------------------------------------

def _garbage(path: Path) -> str:
    path.write_bytes(b"not a parquet file at all")
    return ("Parquet magic bytes not found in footer. Either the file is corrupted or this is not a parquet file.")


def _drop_column(path: Path, column: str) -> None:
    pq.write_table(pq.read_table(path).drop([column]), path)


SQL = ["sql", "{pool}", "SELECT count(*) FROM samples"]
FILTER = ["filter", "{pool}", "--name", "new", "--top", "40%"]


@pytest.mark.parametrize("command", [SQL, FILTER], ids=["sql", "filter"])
def test_damaged_scores_parquet(command, pool):
    bad = pool / "scores/seed/00001.parquet"
    reason = _garbage(bad)
    refused([a.format(pool=pool) for a in command],
            f"{bad} is not a readable parquet file ({reason}); delete it and rerun `curate score`", pool)


@pytest.mark.parametrize("command", [SQL, FILTER], ids=["sql", "filter"])
def test_scores_parquet_without_clip_score(command, pool):
    bad = pool / "scores/seed/00000.parquet"
    _drop_column(bad, "clip_score")
    refused([a.format(pool=pool) for a in command],
            f"{bad} has no column 'clip_score' (a scores file needs uid, clip_score); "
            "delete it and rerun `curate score`", pool)


@pytest.mark.parametrize("command", [SQL, FILTER], ids=["sql", "filter"])
def test_damaged_shard_parquet(command, pool):
    bad = pool / "shards/00000.parquet"
    reason = _garbage(bad)
    refused([a.format(pool=pool) for a in command],
            f"{bad} is not a readable parquet file ({reason}); rerun `curate download` after deleting its _stats.json",
            pool)


def test_filter_dedup_groups_without_keep(pool):
    bad = pool / "dedup/default/groups.parquet"
    _drop_column(bad, "keep")
    refused(["filter", pool, "--name", "new", "--top", "40%", "--dedup", "default"],
            f"{bad} has no column 'keep' (a dedup file needs uid, keep); rerun `curate dedup` with --overwrite", pool)


# --- empty pools and pools with nothing downloaded --------------------------------------

@pytest.mark.parametrize("command, message", [
    (["inspect"], "{p} has no finished shards; run or resume `curate download` into it"),
    (["score", "--model", "tiny-vit-32"], "{p} is not a pool folder with shards/ (run `curate download INPUT {p}` first)"),
    (["sql", "SELECT 1 FROM samples"], "{p} holds no pool parquet (shards/*.parquet); run `curate download INPUT {p}` first"),
    (["filter", "--name", "x", "--top", "40%"], "{p} has no scores (no scores/TAG/*.parquet); run `curate score` first"),
    (["export", "OUT", "--subset", "x"],
     "subset 'x' not found in {p}/subsets (available: none); make it with `curate filter --name`"),
])
def test_empty_pool(command, message, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [command[0], empty, *[tmp_path / "out" if a == "OUT" else a for a in command[1:]]]
    refused(args, message.format(p=empty), tmp_path)


def test_pool_with_zero_successes(tmp_path):
    fp = make_pool(tmp_path / "zero", shards=1, per_shard=6, failed_every=1, tags=(), dedup_names=())
    refused(["filter", fp.path, "--name", "x", "--top", "40%"],
            f"{fp.path} has no scores (no scores/TAG/*.parquet); run `curate score` first", fp.path)
    report = run_curate("inspect", fp.path)
    assert report.returncode == 0 and "success 0 (0.0%), failed 6" in report.stdout, report.stderr[-2000:]
