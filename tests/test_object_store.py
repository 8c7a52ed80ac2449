"""Pools and shard sets on object storage: the whole curate pipeline against a real
S3-compatible server (moto's, on 127.0.0.1, started and stopped here) gives the bytes the
same pipeline gives in a local folder, writes nothing locally, and `train run` trains on
the shard set in the store, writing only its run folder."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("s3fs", reason="s3fs is not installed (pip install -e '.[s3]')")
pytest.importorskip("moto", reason="moto is not installed (pip install -e '.[s3]')")

from curate.annotate.run import annotate_pool  # noqa: E402 - after the skips
from curate.cluster.run import ClusterSettings, run_cluster  # noqa: E402
from curate.dedup.run import run_dedup  # noqa: E402
from curate.dedup.settings import DedupSettings  # noqa: E402
from curate.download.run import DownloadSettings, download_pool  # noqa: E402
from curate.export import export_subset  # noqa: E402
from curate.filter.run import run_filter  # noqa: E402
from curate.score.run import ScoreSettings, score_pool  # noqa: E402
from engines import s3_server  # noqa: E402
from test_score import MODEL, weights  # noqa: E402,F401 - weights is the tiny model's fixture

DOWNLOAD = ["--preset", "laion", "--allow-private", "--samples-per-shard", "20", "--threads", "4",
            "--image-size", "32", "--timeout", "5"]
DEDUP = "exact+phash-pixels"  # the default methods' run name
TRAIN = ["--model", MODEL, "--workers", "1", "--threads", "1", "--no-progress", "--shuffle-buffer", "8"]


@pytest.fixture
def s3(monkeypatch):
    """The server's environment set for this test (and its subprocesses); a bucket `bkt`; the s3fs filesystem."""
    import s3fs

    with s3_server() as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        s3fs.S3FileSystem.clear_instance_cache()  # an instance made for another server keeps its endpoint
        fs = s3fs.S3FileSystem(use_listings_cache=False)
        fs.mkdir("bkt")
        yield fs
        s3fs.S3FileSystem.clear_instance_cache()


def cli(tool: str, *args: str, cwd: Path, code: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", tool, *map(str, args)], cwd=cwd, capture_output=True,
                            stdin=subprocess.DEVNULL, text=True, timeout=300)
    assert result.returncode == code, f"{tool} {' '.join(map(str, args))}:\n{result.stderr[-3000:]}"
    return result


def curate(*args: str, cwd: Path) -> str:
    return cli("curate", *args, cwd=cwd).stdout


def local_files(root: Path, *patterns: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for pattern in patterns for p in sorted(root.glob(pattern))}


def remote_files(fs, root: str, *patterns: str) -> dict[str, bytes]:
    return {path[len(root) + 1:]: fs.cat_file(path) for pattern in patterns for path in sorted(fs.glob(f"{root}/{pattern}"))}


def subset_uids(data: bytes) -> list[str]:
    import io

    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(data))["uid"].to_pylist()


def test_pipeline_on_s3_gives_the_local_bytes_and_writes_nothing_locally(s3, small_demo, weights, tmp_path, monkeypatch):
    # The same pipeline in a local folder, in this process: the bytes the store must hold.
    local = tmp_path / "local"
    download_pool(small_demo, local / "pool", preset="laion", settings=DownloadSettings(
        image_size=32, threads=4, samples_per_shard=20, timeout=5, allow_private=True))
    score_pool(local / "pool", model=MODEL, pretrained=str(weights), tag="t",
               settings=ScoreSettings(batch_size=16, workers=1, progress=False))
    run_dedup(local / "pool", DedupSettings(scores="t", progress=False))
    run_filter(local / "pool", "half", top="50%", dedup=DEDUP)
    export_subset(local / "pool", "half", local / "set", samples_per_shard=10)
    annotate_pool(local / "pool", metadata="none", progress=False)
    run_cluster(local / "pool", ClusterSettings(scores="t", progress=False))

    # Every stage through the CLI on s3://, from an empty folder, staging in a temp dir of its own.
    work, staging = tmp_path / "work", tmp_path / "staging"
    work.mkdir(), staging.mkdir()
    monkeypatch.setenv("TMPDIR", str(staging))
    curate("download", small_demo, "s3://bkt/pool", *DOWNLOAD, cwd=work)
    curate("score", "s3://bkt/pool", "--model", MODEL, "--pretrained", weights, "--tag", "t", "--batch-size", "16",
           "--workers", "1", cwd=work)
    curate("dedup", "s3://bkt/pool", "--scores", "t", cwd=work)
    curate("filter", "s3://bkt/pool", "--top", "50%", "--name", "half", "--dedup", DEDUP, cwd=work)
    curate("export", "s3://bkt/pool", "s3://bkt/set", "--subset", "half", "--samples-per-shard", "10", cwd=work)
    assert ": ok (" in curate("verify", "s3://bkt/set", cwd=work)
    curate("annotate", "s3://bkt/pool", "--metadata", "none", "--quiet", cwd=work)
    curate("cluster", "s3://bkt/pool", "--scores", "t", "--quiet", cwd=work)
    # One pass over the shard set in the store, in batches that divide it, read through the opener stage.
    count = sum(shard["count"] for shard in json.loads(s3.cat_file("bkt/set/manifest.json"))["shards"])
    batch = max(b for b in range(1, count // 2 + 1) if count % b == 0)
    run = work / "runs" / "s3"
    trained = cli("train", "run", "--data", "s3://bkt/set", "--out", run, "--samples", count, "--batch-size", batch,
                  *TRAIN, cwd=work)
    # A sweep over the pool in the store: its cell trains on the pool's subset there (--data POOL --subset half).
    sweep_file = tmp_path / "s3.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "pool": "s3://bkt/pool", "scores": "t", "dedup": DEDUP,
        "train": {"batch_size": batch, "workers": 0, "threads": 1, "shuffle_buffer": 8},
        "experiments": {"s3": {"data": {"subset": ["half"]}, "models": [MODEL], "strategies": ["clip"],
                               "budgets": {"samples": [count]}, "seeds": [0]}}}))
    cli("train", "sweep", sweep_file, "--out", work / "runs" / "sweep", "--no-report", cwd=work)

    shards = ("shards/*.tar", "shards/*.parquet")
    assert remote_files(s3, "bkt/pool", *shards) == local_files(local / "pool", *shards) != {}
    scored = ("scores/t/*.parquet", "embeddings/t/*.npy")
    assert remote_files(s3, "bkt/pool", *scored) == local_files(local / "pool", *scored) != {}
    groups = f"dedup/{DEDUP}/groups.parquet"
    assert remote_files(s3, "bkt/pool", groups) == local_files(local / "pool", groups) != {}
    [remote_subset], [local_subset] = (remote_files(s3, "bkt/pool", "subsets/half.parquet").values(),
                                       local_files(local / "pool", "subsets/half.parquet").values())
    assert subset_uids(remote_subset) == subset_uids(local_subset) != []
    assert remote_files(s3, "bkt/set", "*.tar", "sizes.json") == local_files(local / "set", "*.tar", "sizes.json")
    manifest = json.loads(s3.cat_file("bkt/set/manifest.json"))
    assert manifest["train_data"] == "s3://bkt/set/{000000..%06d}.tar" % (len(manifest["shards"]) - 1)
    assert [s["sha256"] for s in manifest["shards"]] == [
        hashlib.sha256(data).hexdigest() for data in local_files(local / "set", "*.tar").values()]
    assert not s3.glob("bkt/**/.*partial*") and not s3.exists("bkt/set/.export-parts")
    annotated = ("annotations/*.parquet", "annotations/entries.parquet")
    assert remote_files(s3, "bkt/pool", *annotated) == local_files(local / "pool", *annotated) != {}
    clustered = ("clusters/t/assignments.parquet", "clusters/t/centroids.npy")
    assert remote_files(s3, "bkt/pool", *clustered) == local_files(local / "pool", *clustered) != {}

    summary = json.loads(trained.stdout.strip().splitlines()[-1])
    assert summary["samples"] == count and summary["step"] == count // batch >= 2
    [last] = sorted((run / "checkpoints").glob("step_*.pt"))
    assert torch.load(last, weights_only=True)["data"]["positions"] == [[count]]  # every sample of the set read once
    assert torch.load(run / "final.pt", weights_only=True)["samples"] == count
    [cell] = [json.loads(p.read_text()) for p in (work / "runs" / "sweep" / "cells").glob("*.json")
              if not p.name.endswith(".identity.json")]
    assert cell["status"] == "ok" and cell["summary"]["samples"] == count, cell
    assert (cell["config"]["data"], cell["config"]["subset"]) == ("s3://bkt/pool", "half")
    assert sorted(p.name for p in work.iterdir()) == ["runs"], "a stage wrote into the working folder"
    assert [p.name for p in staging.iterdir() if p.name.startswith("clipcurate-")] == [], "staging files were left"


@pytest.mark.parametrize("case, env, url, says", [
    ("missing bucket", {}, "s3://nobucket/pool", "bucket does not exist"),
    ("no credentials", {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}, "s3://bkt/pool",
     "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
])
def test_store_problems_are_one_line_errors_naming_the_url_and_the_fix(s3, tmp_path, monkeypatch, case, env, url, says):
    # Hermetic: no credentials from files or an instance-metadata endpoint.
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for key, value in env.items():
        monkeypatch.delenv(key) if value is None else monkeypatch.setenv(key, value)
    result = subprocess.run([sys.executable, "-m", "curate", "inspect", url], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and url in lines[0] and says in lines[0], result.stderr


def _half_killed_shards(write) -> None:
    """What a killed download leaves: 00000 finished, 00001 without its stats json, 00002 with
    a stats json cut short, a temporary name and img2dataset's scratch folder."""
    for stem in ("00000", "00001", "00002"):
        write(f"shards/{stem}.tar", b"tar")
        write(f"shards/{stem}.parquet", b"parquet")
    write("shards/00000_stats.json", b'{"successes": 1}')
    write("shards/00002_stats.json", b'{"succ')
    write("shards/.00003.tar.partial", b"half")
    write("shards/_tmp/0.feather", b"input")


def test_finished_shards_and_repair_read_the_store_as_a_folder(s3, tmp_path):
    from curate.download.pool import repair_unfinished
    from shards.layout import Pool

    local = tmp_path / "pool"

    def write_local(name: str, data: bytes) -> None:
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(data)

    _half_killed_shards(write_local)
    _half_killed_shards(lambda name, data: s3.pipe_file(f"bkt/pool/{name}", data))
    remote = Pool("s3://bkt/pool")
    assert remote.finished_shards() == Pool(local).finished_shards() == ["00000"]
    assert sorted(repair_unfinished(remote)) == sorted(repair_unfinished(Pool(local)))
    left = sorted(p[len("bkt/pool/"):] for p in s3.find("bkt/pool"))
    # 00001's files stay: no stats json, so img2dataset fetches it again over them
    assert left == sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()) == [
        "shards/00000.parquet", "shards/00000.tar", "shards/00000_stats.json",
        "shards/00001.parquet", "shards/00001.tar"]


def _shard_set_missing_its_second_shard(s3, folder: Path) -> None:
    """s3://bkt/set: a manifest listing 00000.tar and 00001.tar, and only 00000.tar in the store."""
    from shapes_data import make_shape_shards

    make_shape_shards(folder, 16, per_shard=8)
    s3.put_file(str(folder / "00000.tar"), "bkt/set/00000.tar")
    s3.pipe_file("bkt/set/manifest.json", json.dumps({"shards": [{"name": "00000.tar"}, {"name": "00001.tar"}]}).encode())


def test_a_shard_missing_from_the_store_stops_train_run_in_one_line(s3, tmp_path):
    _shard_set_missing_its_second_shard(s3, tmp_path / "shards")
    result = cli("train", "run", "--data", "s3://bkt/set", "--out", tmp_path / "run", "--samples", "8",
                 "--batch-size", "4", *TRAIN, cwd=tmp_path, code=2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing" in lines[0] and "s3://bkt/set/00001.tar" in lines[0], result.stderr
    assert not (tmp_path / "run").exists()


def test_the_stream_stops_at_a_shard_it_cannot_open_rather_than_skip_it(s3, tmp_path):
    """What a shard that goes missing after --data was checked does in the loader: webdataset's
    own opener knows no s3:// and, under its skip-and-warn handler, trained on nothing."""
    from itertools import islice

    from train.data import ShardStream, StreamConfig

    _shard_set_missing_its_second_shard(s3, tmp_path / "shards")
    cfg = StreamConfig(shards=["s3://bkt/set/00000.tar", "s3://bkt/set/00001.tar"], batch_size=4, image_size=32,
                       context_length=32, tokenizer=None, need_text=False, num_workers=0, shuffle_buffer=4, seed=1)
    *read, last = islice(ShardStream(cfg), 10)  # batches until the stream stops (it never would, skipping)
    assert "s3://bkt/set/00001.tar cannot be read (FileNotFoundError" in last.get("error", ""), last
    assert read and all(len(b["images"]) == 4 for b in read)  # 00000.tar, first in seed 1's order, was read
