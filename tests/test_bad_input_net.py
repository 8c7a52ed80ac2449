"""Bad input, part two: scoring damaged shards and checkpoints, images past the pixel cap,
and the download's address guard (SSRF) on loopback only: the guard must refuse before
any connection is made, so a spy on socket.connect proves no traffic left; and its other
half, public addresses and names that resolve to them reaching connect (refused there by
the spy, so nothing leaves the machine either)."""
from __future__ import annotations

import http.server
import io
import socket
import tarfile
import threading
import urllib.error
import urllib.request

import pyarrow.parquet as pq
import pytest
import torch

from clihelp import run_curate
from curate.download import guard
from poolfactory import make_pool
from test_bad_input import _add_member, png_header_only, refused

MODEL = "tiny-vit-32"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    import open_clip

    from zoo.models import register_model_configs

    register_model_configs()
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "tiny.pt"
    torch.save(open_clip.create_model(MODEL).state_dict(), path)
    return path


@pytest.fixture
def pool(tmp_path):
    return make_pool(tmp_path / "pool", shards=1, per_shard=6, tags=(), dedup_names=()).path


def _score(pool, weights, *extra):
    return ["score", pool, "--model", MODEL, "--pretrained", weights, "--workers", "0", *extra]


def test_score_refuses_a_dotdot_member(pool, weights):
    tar = pool / "shards/00000.tar"
    _add_member(tar, "../x")
    refused(_score(pool, weights), f"pool shard refused: {tar}: unsafe member name '../x'; nothing of it was scored "
            "(re-download it: delete its _stats.json and rerun `curate download`)", pool / "shards")
    assert not list(pool.glob("scores/*/*.parquet"))


def test_score_refuses_a_truncated_tar(pool, weights):
    tar = pool / "shards/00000.tar"
    tar.write_bytes(tar.read_bytes()[:1500])
    refused(_score(pool, weights), f"pool shard refused: {tar}: unreadable tar (ReadError: truncated header); nothing "
            "of it was scored (re-download it: delete its _stats.json and rerun `curate download`)", pool / "shards")


@pytest.mark.parametrize("content, reason", [
    (b"junk", "UnpicklingError: Weights only load failed. In PyTorch 2.6, we changed the default value of the `weig"),
    (b"", "EOFError: Ran out of input"),
])
def test_score_refuses_a_corrupt_checkpoint(pool, tmp_path, content, reason):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    done = run_curate("score", pool, "--checkpoint", bad)
    line = done.stderr.strip()
    assert done.returncode == 2 and "\n" not in line and line.startswith(f"curate: error: checkpoint {bad} is corrupt"), line
    assert line.endswith("; use another checkpoint") and not (pool / "scores").exists()


def test_score_refuses_corrupt_pretrained_weights(pool, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02garbage")
    done = run_curate("score", pool, "--model", MODEL, "--pretrained", bad)
    line = done.stderr.strip()
    assert done.returncode == 2 and "\n" not in line
    assert line.startswith(f"curate: error: cannot load weights {bad} into {MODEL}: ") and not (pool / "scores").exists()


@pytest.mark.parametrize("side, error", [
    (7072, "image area too large (7072x7072 px, 50,013,184 pixels over the 50,000,000 cap; refused before decoding)"),
    (13400, "undecodable image: DecompressionBombError: Image size (179560000 pixels) exceeds limit of 178956970 "
            "pixels, could be decompression bomb DOS attack."),  # over PIL's 179 Mpx
])
def test_score_never_decodes_a_huge_image(pool, weights, side, error):
    """A shard is untrusted: an image over 50 Mpx (a few KB of PNG) is refused from its header."""
    tar = pool / "shards/00000.tar"
    with tarfile.open(tar) as src:
        members = [(m, src.extractfile(m).read()) for m in src.getmembers()]
    first = members[0][0].name.split(".")[0]
    with tarfile.open(tar, "w") as out:
        for member, data in members:
            if member.name == f"{first}.jpg":
                member.name, data = f"{first}.png", png_header_only(side, side)
            member.size = len(data)
            out.addfile(member, io.BytesIO(data))
    done = run_curate(*_score(pool, weights, "--tag", "t"))
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["key"]: r for r in pq.read_table(pool / "scores/t/00000.parquet").to_pylist()}
    assert rows[first]["error"] == error and rows[first]["clip_score"] is None
    assert sum(r["error"] is None for r in rows.values()) == len(rows) - 1


@pytest.mark.parametrize("content, problem", [
    ("huge", "image area too large (8000x8000 px, 64,000,000 pixels over the 50,000,000 cap; refused before decoding)"),
    ("broken", "cannot identify image file"),
])
def test_dedup_against_refuses_a_huge_or_broken_image_by_name(pool, weights, tmp_path, content, problem):
    """--against embeds a folder the user trusts to be whole: a bad image is named, never skipped."""
    done = run_curate(*_score(pool, weights, "--tag", "t"))
    assert done.returncode == 0, done.stderr[-2000:]
    folder = tmp_path / "eval"
    folder.mkdir()
    bad = folder / "x.png"
    bad.write_bytes(png_header_only(8000, 8000) if content == "huge" else b"\x89PNG\r\n\x1a\nbroken")
    before = sorted(p.name for p in pool.iterdir())
    done = run_curate("dedup", pool, "--scores", "t", "--method", "exact", "--against", folder)
    line = done.stderr.strip().splitlines()[-1]  # after dedup's progress line
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert line.startswith(f"curate: error: cannot use {bad} for --against: ") and problem in line
    assert line.endswith("; fix or remove it") and sorted(p.name for p in pool.iterdir()) == before
    assert not (pool / "dedup").exists() or not list((pool / "dedup").rglob("groups.parquet"))


# --- the address guard -------------------------------------------------------------------

@pytest.mark.parametrize("address", [
    "127.0.0.1", "::1", "::ffff:127.0.0.1", "169.254.169.254", "10.1.2.3", "172.16.0.1", "192.168.1.1",
    "100.64.0.1", "0.0.0.0", "fd00::1", "fe80::1%lo", "::ffff:169.254.169.254", "224.0.0.1",
])
def test_non_public_addresses(address):
    assert not guard.is_public_address(address)


def guarded_fetch_error(url: str) -> urllib.error.URLError:
    """The error urlopen raises for `url` through the download's address guard (it must raise)."""
    guard.install_address_guard(allow_private=False)
    try:
        with pytest.raises(urllib.error.URLError) as caught:
            urllib.request.urlopen(url, timeout=5)
    finally:
        urllib.request.install_opener(None)
    return caught.value


@pytest.fixture
def no_connect(monkeypatch):
    """Every socket.connect is recorded and refused: a guard that lets one through fails the test."""
    attempts: list = []

    def spy(self, address):
        attempts.append(address)
        raise AssertionError(f"connected to {address}")

    monkeypatch.setattr(socket.socket, "connect", spy)
    return attempts


@pytest.mark.parametrize("host, resolved", [
    ("[::1]", "::1"), ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"), ("169.254.169.254", "169.254.169.254"),
    ("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("127.1", "127.0.0.1"),
    ("localhost", "127.0.0.1"), ("0", "0.0.0.0"),
])
def test_guard_refuses_before_connecting(host, resolved, no_connect):
    reason = guarded_fetch_error(f"http://{host}:9/x.jpg").reason
    assert isinstance(reason, guard.PrivateAddressError) and no_connect == []
    name = host.strip("[]")
    assert str(reason).startswith(f"refused: private address {resolved}") or (
        name == "localhost" and str(reason).startswith("refused: private address ::1"))
    assert str(reason).endswith(f"for host {name!r} (--allow-private lifts this)")


def test_a_redirect_hop_to_a_private_address_is_refused(monkeypatch):
    """The first hop is 'public' (127.0.0.1 treated as the internet for this test); it
    redirects to 127.0.0.2, which the guard must refuse before connecting to it."""
    seen: list[str] = []

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            seen.append(self.path)
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.2:9/secret")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(guard, "is_public_address", lambda a: a == "127.0.0.1")
    connects: list = []
    real_connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", lambda s, a: (connects.append(a), real_connect(s, a))[1])
    try:
        error = guarded_fetch_error(f"http://127.0.0.1:{server.server_port}/start")
    finally:
        server.shutdown()
    assert seen == ["/start"] and [a[0] for a in connects] == ["127.0.0.1"]
    assert str(error.reason) == "refused: private address 127.0.0.2 for host '127.0.0.2' (--allow-private lifts this)"


# --- the guard's other half: public addresses, and names that resolve to them, pass ------

PUBLIC = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700::1", "2001:4860:4860::8888", "::ffff:93.184.216.34"]


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses(address):
    assert guard.is_public_address(address)


@pytest.fixture
def connect_refused(monkeypatch):
    """Every socket.connect is recorded and refused as a closed port would refuse it: no
    traffic leaves the machine, and the test sees which vetted address the guard let through."""
    attempts: list = []

    def refuse(self, address):
        attempts.append(address[0])
        raise ConnectionRefusedError(f"refused by the test: {address[0]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


@pytest.mark.parametrize("host, address", [
    ("93.184.216.34", "93.184.216.34"), ("[2606:4700::1]", "2606:4700::1"), ("8.8.8.8", "8.8.8.8"),
])
def test_guard_lets_a_public_address_through(host, address, connect_refused):
    reason = guarded_fetch_error(f"http://{host}:9/x.jpg").reason
    assert isinstance(reason, ConnectionRefusedError) and not isinstance(reason, guard.PrivateAddressError)
    assert connect_refused == [address]


def names(table: dict[str, str]) -> guard.Resolver:
    """A DNS lookup for names this test owns: each name answers with its literal address,
    looked up by the real getaddrinfo (numeric, so offline); any other name does not exist."""
    def resolve(host, port, family=0, type=0):
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is not a name of this test")
        return socket.getaddrinfo(table[host], port, family, type)
    return resolve


NAMES = {"images.example.org": "93.184.216.34", "cdn6.example.net": "2606:4700::1", "inside.example.org": "10.0.0.7"}


@pytest.mark.parametrize("name", ["images.example.org", "cdn6.example.net"])
def test_guard_lets_a_name_that_resolves_to_a_public_address_through(name, connect_refused):
    guard.install_address_guard(allow_private=False, resolve=names(NAMES))
    try:
        with pytest.raises(urllib.error.URLError) as caught:
            urllib.request.urlopen(f"http://{name}:9/x.jpg", timeout=5)
    finally:
        urllib.request.install_opener(None)
    assert isinstance(caught.value.reason, ConnectionRefusedError)
    assert connect_refused == [NAMES[name]]


def test_the_same_lookup_refuses_a_name_that_resolves_to_a_private_address(connect_refused):
    """The resolver is the guard's: a name it maps inside is refused before any connect."""
    guard.install_address_guard(allow_private=False, resolve=names(NAMES))
    try:
        with pytest.raises(urllib.error.URLError) as caught:
            urllib.request.urlopen("http://inside.example.org:9/x.jpg", timeout=5)
    finally:
        urllib.request.install_opener(None)
    assert str(caught.value.reason) == ("refused: private address 10.0.0.7 for host 'inside.example.org' "
                                        "(--allow-private lifts this)")
    assert connect_refused == []


@pytest.mark.parametrize("side, max_pixels, problem", [
    (13400, 1e9, "image area too large (refused before decoding)"),  # over PIL's 179 Mpx bomb limit
    (7072, 5e7, "image area too large (7072x7072 px, refused before decoding)"),
])
def test_download_refuses_huge_images_from_the_header(side, max_pixels, problem):
    assert guard.header_problem(png_header_only(side, side), 32, max_pixels) == problem
