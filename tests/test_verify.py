"""`curate verify`: every way a shard set can be damaged is reported, by name."""
from __future__ import annotations

import io
import tarfile

import pytest

from clihelp import run_curate
from clikit.errors import UserError
from curate.export import export_subset
from curate.filter.run import run_filter
from curate.verify import verify_shardset
from poolfactory import make_pool
from shards.manifest import read_manifest, sha256_file, write_manifest
from shards.reader import UnsafeTarError, index_tar, is_plain_member_name


@pytest.fixture(scope="module")
def shardset(tmp_path_factory):
    fp = make_pool(tmp_path_factory.mktemp("v") / "pool")
    run_filter(fp.path, "all", top="100%")
    out = fp.path.parent / "set"
    export_subset(fp.path, "all", out, samples_per_shard=5)
    return out


@pytest.fixture
def copy(shardset, tmp_path):
    import shutil

    target = tmp_path / "set"
    shutil.copytree(shardset, target)
    return target


def _evil_tar(path, names):
    with tarfile.open(path, "w") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))


def test_clean_set_passes(shardset):
    report = verify_shardset(shardset)
    assert report.ok and report.samples == read_manifest(shardset)["count"]
    done = run_curate("verify", shardset)
    assert done.returncode == 0 and "ok" in done.stdout


def test_damage_is_listed(copy):
    (copy / "000000.tar").unlink()
    data = (copy / "000001.tar").read_bytes()
    (copy / "000001.tar").write_bytes(data[: len(data) // 2])
    flipped = bytearray((copy / "000002.tar").read_bytes())
    flipped[600] ^= 0xFF
    (copy / "000002.tar").write_bytes(bytes(flipped))
    (copy / "999999.tar").write_bytes(b"")
    problems = "\n".join(verify_shardset(copy).problems)
    assert "000000.tar: missing" in problems
    assert "000001.tar: truncated" in problems
    assert "000002.tar: wrong sha256" in problems
    assert "999999.tar: not listed" in problems
    done = run_curate("verify", copy)
    assert done.returncode == 1 and "000000.tar: missing" in done.stderr and "000001.tar: truncated" in done.stderr


def test_unsafe_member_names_are_reported_even_when_hashes_match(copy):
    _evil_tar(copy / "000000.tar", ["ok.txt", "../escape.txt", "/etc/passwd.txt", "dir/x.jpg"])
    manifest = read_manifest(copy)
    manifest["shards"][0].update(bytes=(copy / "000000.tar").stat().st_size, sha256=sha256_file(copy / "000000.tar"))
    write_manifest(copy, {k: v for k, v in manifest.items() if k != "format"})
    problems = "\n".join(verify_shardset(copy).problems)
    for name in ("../escape.txt", "/etc/passwd.txt", "dir/x.jpg"):
        assert f"unsafe member name {name!r}" in problems
    assert "'ok.txt'" not in problems
    with pytest.raises(UnsafeTarError):
        index_tar(copy / "000000.tar")


def test_plain_member_names():
    assert is_plain_member_name("0123abcd.jpg") and is_plain_member_name("000000001.json")
    for bad in ("../x", "/abs.jpg", "a/b.jpg", "..", ".hidden", "", "a\\b.jpg"):
        assert not is_plain_member_name(bad), bad


def test_unfinished_or_wrong_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no manifest"):
        verify_shardset(tmp_path)
    done = run_curate("verify", tmp_path / "nope")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
