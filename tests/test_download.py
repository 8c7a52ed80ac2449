"""`curate download` and `curate inspect` against the real img2dataset and a loopback server."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clikit.errors import UserError
from curate.download.run import DownloadSettings, download_pool
from curate.pool_report import inspect_pool
from shards.uid import sample_uid


def shard_rows(pool: Path) -> list[dict]:
    rows = []
    for path in sorted((pool / "shards").glob("*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


def tar_samples(pool: Path) -> dict[str, dict]:
    """key -> {suffix: bytes} over every tar of the pool; asserts no key appears twice."""
    samples: dict[str, dict] = {}
    for path in sorted((pool / "shards").glob("*.tar")):
        with tarfile.open(path) as tar:  # raises on a truncated tar
            for member in tar.getmembers():
                key, suffix = member.name.split(".", 1)
                assert suffix not in samples.get(key, {}), f"{member.name} twice"
                samples.setdefault(key, {})[suffix] = tar.extractfile(member).read()
    return samples


def assert_key_order(pool: Path) -> None:
    """Each shard's tar members and parquet rows are in key order, however downloads finished."""
    for tar_path in sorted((pool / "shards").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            keys = [m.name.split(".", 1)[0] for m in tar.getmembers()]
        assert keys == sorted(keys) and len(keys) > 0, tar_path.name
        parquet_keys = pq.read_table(tar_path.with_suffix(".parquet"), columns=["key"])["key"].to_pylist()
        assert parquet_keys == sorted(parquet_keys), tar_path.name
        assert set(keys) <= set(parquet_keys)


def test_download_accounts_for_every_row_with_the_right_reason(demo_dir, pool_dir):
    truth = {r["uid"]: r for r in pq.read_table(demo_dir / "truth.parquet").to_pylist()}
    rows = shard_rows(pool_dir)
    assert sorted(r["uid"] for r in rows) == sorted(truth), "every input row exactly once, by uid"
    for row in rows:
        expected = truth[row["uid"]]
        assert row["uid"] == sample_uid(row["url"], row["caption"])
        if expected["expect"] == "success":
            assert row["status"] == "success", (expected["kind"], row["error_message"])
        else:
            assert row["status"] != "success", expected["kind"]
            assert row["fail_reason"] == expected["expect"], (expected["kind"], row["error_message"])
    kinds = {truth[r["uid"]]["kind"] for r in rows if r["status"] == "success"}
    assert {"clean", "slow", "redirect", "dup-exact", "dup-near"} <= kinds
    huge = [r for r in rows if truth[r["uid"]]["kind"] == "huge"]
    assert huge and all("refused before decoding" in r["error_message"] for r in huge)


def test_tar_json_carries_uid_and_matches_parquet(pool_dir):
    rows = {r["key"]: r for r in shard_rows(pool_dir) if r["status"] == "success"}
    samples = tar_samples(pool_dir)
    assert set(samples) == set(rows)
    for key, members in samples.items():
        meta = json.loads(members["json"])
        assert meta["uid"] == rows[key]["uid"] == sample_uid(meta["url"], meta["caption"])
        assert members["txt"].decode() == rows[key]["caption"]
        assert "jpg" in members
    assert_key_order(pool_dir)


def test_pool_json_records_source_mapping_counts_and_versions(demo_dir, pool_dir):
    info = json.loads((pool_dir / "pool.json").read_text())
    truth = pq.read_table(demo_dir / "truth.parquet").to_pylist()
    n_success = sum(r["expect"] == "success" for r in truth)
    assert info["columns"]["url"] == "URL" and info["columns"]["caption"] == "TEXT"
    assert info["counts"]["input_rows"] == len(truth)
    assert info["counts"]["success"] == n_success
    assert info["counts"]["failed"] == len(truth) - n_success
    assert "img2dataset" in info["versions"] and info["source"][0].endswith("metadata.parquet")


def test_inspect_matches_truth(demo_dir, pool_dir):
    truth = pq.read_table(demo_dir / "truth.parquet").to_pylist()
    report = inspect_pool(pool_dir)
    assert report["samples"] == len(truth)
    expected_reasons: dict[str, int] = {}
    for r in truth:
        if r["expect"] != "success":
            expected_reasons[r["expect"]] = expected_reasons.get(r["expect"], 0) + 1
    assert report["failures_by_reason"] == expected_reasons
    assert sum(report["width_histogram"].values()) == report["success"]
    out = subprocess.run([sys.executable, "-m", "curate", "inspect", str(pool_dir), "--json"],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["success"] == report["success"]


def test_coyo_preset_gives_the_same_uids_and_carries_extra_columns(demo_dir, tmp_path):
    coyo = pq.read_table(demo_dir / "metadata_coyo.parquet").slice(0, 40)
    pq.write_table(coyo, tmp_path / "coyo.parquet")
    pool = tmp_path / "pool"
    result = download_pool(tmp_path / "coyo.parquet", pool, preset="coyo",
                           settings=DownloadSettings(image_size=64, threads=16, allow_private=True))
    assert result.input_rows == 40
    rows = shard_rows(pool)
    expected = {sample_uid(u, t): i for u, t, i in zip(coyo["url"].to_pylist(), coyo["text"].to_pylist(), coyo["id"].to_pylist())}
    assert {r["uid"]: r["id"] for r in rows} == expected
    json_ids = {json.loads(m["json"])["id"] for m in tar_samples(pool).values()}
    assert json_ids == {r["id"] for r in rows if r["status"] == "success"}


def _small_site(tmp_path: Path, demo_dir: Path, n: int) -> list[str]:
    """Copy n demo images into a folder of our own; returns their file names."""
    site = tmp_path / "site"
    site.mkdir()
    names = []
    for src in sorted((demo_dir / "images").iterdir()):
        if len(names) == n:
            break
        try:
            with Image.open(src) as im:
                im.load()
                if min(im.size) < 32 or im.size[0] * im.size[1] > 4_000_000:
                    continue
        except Exception:
            continue
        shutil.copy(src, site / src.name)
        names.append(src.name)
    return names


def test_retry_failed_fetches_only_the_failures(demo_dir, tmp_path):
    from curate.serve import start_server

    names = _small_site(tmp_path, demo_dir, 10)
    site = tmp_path / "site"
    held_back = names[:3]
    for name in held_back:  # missing on the first pass: 404
        shutil.move(site / name, tmp_path / name)
    with start_server(site, port=0) as server:
        urls = [f"{server.url}/{name}" for name in names]
        pq.write_table(pa.table({"URL": urls, "TEXT": [f"caption {i}" for i in range(10)]}), tmp_path / "in.parquet")
        settings = DownloadSettings(image_size=64, threads=4, samples_per_shard=4, allow_private=True)
        first = download_pool(tmp_path / "in.parquet", tmp_path / "pool", settings=settings)
        assert (first.success, first.failed) == (7, 3)
        assert first.failures_by_reason == {"http-404": 3}
        before = tar_samples(tmp_path / "pool")
        for name in held_back:
            shutil.move(tmp_path / name, site / name)
        for name in names[3:]:  # refetching a success would now fail: proves only failures are fetched
            (site / name).unlink()
        second = download_pool(tmp_path / "in.parquet", tmp_path / "pool", settings=settings, retry_failed=True)
    assert (second.success, second.failed) == (10, 0)
    rows = shard_rows(tmp_path / "pool")
    assert len(rows) == 10 and len({r["uid"] for r in rows}) == 10
    after = tar_samples(tmp_path / "pool")
    assert len(after) == 10
    for key, members in before.items():
        assert after[key] == members, "an earlier success was changed"
    for key, members in after.items():
        assert json.loads(members["json"])["key"] == key
    assert_key_order(tmp_path / "pool")  # retried samples go back to their place, not the end


def test_placeholder_images_are_flagged(demo_dir, tmp_path):
    from curate.serve import start_server

    names = _small_site(tmp_path, demo_dir, 3)
    site = tmp_path / "site"
    for i in range(4):  # the same bytes under four URLs, like a "no image" placeholder
        shutil.copy(site / names[0], site / f"placeholder{i}.jpg")
    with start_server(site, port=0) as server:
        urls = [f"{server.url}/{n}" for n in names] + [f"{server.url}/placeholder{i}.jpg" for i in range(4)]
        pq.write_table(pa.table({"URL": urls + urls[:1], "TEXT": [f"c{i}" for i in range(len(urls) + 1)]}), tmp_path / "in.parquet")
        download_pool(tmp_path / "in.parquet", tmp_path / "pool",
                      settings=DownloadSettings(image_size=64, threads=4, allow_private=True))
    report = inspect_pool(tmp_path / "pool")
    assert len(report["placeholder_images"]) == 1
    assert report["placeholder_images"][0]["urls"] == 5
    assert report["duplicate_urls"] == 1 and report["rows_with_duplicate_url"] == 2


def test_private_addresses_are_refused_by_default(demo_dir, tmp_path):
    from curate.serve import start_server

    names = _small_site(tmp_path, demo_dir, 2)
    with start_server(tmp_path / "site", port=0) as server:
        urls = [f"{server.url}/{names[0]}", f"http://localhost:{server.port}/{names[1]}"]
        pq.write_table(pa.table({"URL": urls, "TEXT": ["a", "b"]}), tmp_path / "in.parquet")
        with pytest.raises(UserError) as refused:  # zero successes: the pool is kept, the run is an error
            download_pool(tmp_path / "in.parquet", tmp_path / "pool", settings=DownloadSettings(threads=2))
        assert str(refused.value) == (
            "no image was downloaded: all 2 rows failed (private-address 2); pass --allow-private for a loopback "
            f"or private server; see {tmp_path / 'pool'}/shards/*.parquet")
        counts = json.loads((tmp_path / "pool" / "pool.json").read_text())["counts"]
        assert counts["success"] == 0 and counts["failures_by_reason"] == {"private-address": 2}
        allowed = download_pool(tmp_path / "in.parquet", tmp_path / "pool2",
                                settings=DownloadSettings(threads=2, image_size=64, allow_private=True))
        assert allowed.success == 2


def _curate(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("case", ["missing", "unreadable", "no-url-column", "empty", "pool-is-file"])
def test_bad_input_gives_one_line_error(case, tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"URL": ["http://example.com/a.jpg"], "TEXT": ["a"]}), good)
    pool = tmp_path / "pool"
    if case == "missing":
        args = [str(tmp_path / "nope.parquet"), str(pool)]
    elif case == "unreadable":
        (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
        args = [str(tmp_path / "bad.parquet"), str(pool)]
    elif case == "no-url-column":
        pq.write_table(pa.table({"link": ["x"], "TEXT": ["a"]}), tmp_path / "x.parquet")
        args = [str(tmp_path / "x.parquet"), str(pool)]
    elif case == "empty":
        pq.write_table(pa.table({"URL": pa.array([], pa.string()), "TEXT": pa.array([], pa.string())}), tmp_path / "e.parquet")
        args = [str(tmp_path / "e.parquet"), str(pool)]
    else:
        pool.write_text("I am a file")
        args = [str(good), str(pool)]
    result = _curate("download", *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("curate: error:")]
    assert len(error_lines) == 1, result.stderr
    if case == "no-url-column":
        assert "'URL'" in error_lines[0] and "--url-col" in error_lines[0]
    if case == "pool-is-file":
        assert pool.read_text() == "I am a file"


def _parses(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return False


def test_killed_download_resumes_exactly_once(demo_dir, tmp_path):
    """kill -9 the whole download part-way; the rerun completes, refetching only unfinished shards."""
    pool = tmp_path / "pool"
    args = [sys.executable, "-m", "curate", "download", str(demo_dir / "metadata.parquet"), str(pool),
            "--allow-private", "--samples-per-shard", "20", "--threads", "2", "--image-size", "64"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and sum(map(_parses, (pool / "shards").glob("*_stats.json"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # Finished as curate counts it (curate.download.pool.repair_unfinished): the stats json,
    # written last, parses. The kill often lands while img2dataset is still writing one
    # (a later shard's may be half-written at the kill); that shard is rightly refetched.
    done_before = {p.name: p.stat().st_mtime_ns for p in (pool / "shards").glob("*.tar")
                   if _parses((pool / "shards" / p.name.replace(".tar", "_stats.json")))}
    assert 3 <= len(done_before) < 15, "the kill must land part-way"
    for tar in (pool / "shards").glob("*.tar"):  # whatever carries a final name is a whole tar
        with tarfile.open(tar) as t:
            t.getmembers()
    result = _curate(*args[3:])
    assert result.returncode == 0, result.stderr[-2000:]
    truth_uids = sorted(pq.read_table(demo_dir / "truth.parquet")["uid"].to_pylist())
    rows = shard_rows(pool)
    assert sorted(r["uid"] for r in rows) == truth_uids
    samples = tar_samples(pool)
    assert len(samples) == sum(r["status"] == "success" for r in rows)
    for name, mtime in done_before.items():
        assert (pool / "shards" / name).stat().st_mtime_ns == mtime, f"{name} was fetched again"
    assert not list((pool / "shards").glob(".*.partial"))


def test_shard_order_rewrite_sorts_members_and_rows_and_keeps_samples_whole(tmp_path):
    """order.py on a shard written out of order: samples sorted by key, each sample's
    members in their order and unchanged, parquet rows sorted; a sorted shard is left alone."""
    import io

    from shards.reorder import parquet_in_key_order, tar_in_key_order

    keys = ["000000003", "000000000", "000000002", "000000001"]
    tar_path, parquet_path = tmp_path / "00000.tar", tmp_path / "00000.parquet"
    with tarfile.open(tar_path, "w") as tar:
        for key in keys:
            for suffix in ("jpg", "txt", "json"):
                data = f"{key}-{suffix}".encode()
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    pq.write_table(pa.table({"key": keys, "status": ["success"] * 4}), parquet_path)
    assert tar_in_key_order(tar_path) and parquet_in_key_order(parquet_path)
    with tarfile.open(tar_path) as tar:
        names = [m.name for m in tar.getmembers()]
        contents = [tar.extractfile(m).read().decode() for m in tar.getmembers()]
    assert names == [f"{k}.{s}" for k in sorted(keys) for s in ("jpg", "txt", "json")]
    assert contents == [n.replace(".", "-") for n in names]
    assert pq.read_table(parquet_path)["key"].to_pylist() == sorted(keys)
    before = tar_path.read_bytes()
    assert not tar_in_key_order(tar_path) and not parquet_in_key_order(parquet_path)
    assert tar_path.read_bytes() == before and not list(tmp_path.glob(".*partial"))
