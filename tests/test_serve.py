"""The loopback server: files, 404, no path escape, the fault routes, 127.0.0.1 only."""
from __future__ import annotations

import http.client
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.demo import make_demo_pool
from curate.serve import start_server

SLOW = 0.6


@pytest.fixture
def site(tmp_path) -> Path:
    root = tmp_path / "site"
    (root / "sub").mkdir(parents=True)
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 20, 20)).save(buf, "JPEG")
    (root / "a.jpg").write_bytes(buf.getvalue())
    (root / "sub" / "b.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "secret.txt").write_text("outside the served folder")
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    return root


@pytest.fixture
def server(site):
    with start_server(site, port=0, slow_seconds=SLOW) as handle:
        yield handle


def _raw(handle, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One request with the path sent exactly as given (urllib would normalise it)."""
    conn = http.client.HTTPConnection("127.0.0.1", handle.port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_serves_files_with_their_type(server, site):
    assert server.url == f"http://127.0.0.1:{server.port}"
    with urllib.request.urlopen(f"{server.url}/a.jpg", timeout=10) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg"
        assert r.read() == (site / "a.jpg").read_bytes()
    status, headers, body = _raw(server, "/sub/b.png")
    assert (status, headers["content-type"], body) == (200, "image/png", (site / "sub" / "b.png").read_bytes())
    status, headers, body = _raw(server, "/a.jpg", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) == (site / "a.jpg").stat().st_size


def test_missing_files_and_folders_are_404(server):
    for path in ("/nope.jpg", "/sub", "/sub/", "/", "/slow/nope.jpg"):
        assert _raw(server, path)[0] == 404, path
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{server.url}/nope.jpg", timeout=10)
    assert info.value.code == 404


def test_paths_outside_the_folder_are_refused(server, site, tmp_path):
    secret = tmp_path / "secret.txt"
    for path in ("/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt", "/sub/%2E%2E/%2E%2E/secret.txt",
                 "//" + str(secret).lstrip("/"), str(secret), "/" + str(secret), "/slow/../secret.txt",
                 "/redirect/../secret.txt", "/link.txt", "/sub/..%2f..%2fsecret.txt", "/./a.jpg"):
        status, _, body = _raw(server, path)
        assert status in (404, 302) and b"outside" not in body, path
        if status == 302:  # a redirect must never lead outside either
            assert path.startswith("/redirect/")
    assert _raw(server, "/redirect/../secret.txt")[0] == 302
    location = _raw(server, "/redirect/../secret.txt")[1]["location"]
    assert _raw(server, location)[0] == 404


def test_slow_route_waits_then_serves_the_file(server, site):
    started = time.perf_counter()
    with urllib.request.urlopen(f"{server.url}/slow/a.jpg", timeout=10) as r:
        body = r.read()
    elapsed = time.perf_counter() - started
    assert body == (site / "a.jpg").read_bytes()
    assert SLOW <= elapsed < SLOW + 2


def test_a_slow_request_does_not_hold_up_others(server):
    slow = threading.Thread(target=lambda: _raw(server, "/slow/a.jpg"))
    slow.start()
    time.sleep(0.05)
    started = time.perf_counter()
    assert _raw(server, "/a.jpg")[0] == 200
    assert time.perf_counter() - started < SLOW / 2
    slow.join()


def test_default_slow_delay_stays_under_img2dataset_timeout(site):
    with start_server(site) as handle:
        started = time.perf_counter()
        assert _raw(handle, "/slow/a.jpg")[0] == 200
        assert 1.0 <= time.perf_counter() - started < 5.0  # img2dataset waits 10 s by default


def test_redirect_lands_on_the_file(server, site):
    status, headers, _ = _raw(server, "/redirect/sub/b.png")
    assert status == 302 and headers["location"] == "/sub/b.png"
    with urllib.request.urlopen(f"{server.url}/redirect/a.jpg", timeout=10) as r:
        assert r.url == f"{server.url}/a.jpg"
        assert r.read() == (site / "a.jpg").read_bytes()


def test_html_route_answers_a_page_instead_of_an_image(server):
    for path in ("/html/a.jpg", "/html/images/missing.jpg"):
        status, headers, body = _raw(server, path)
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert body.lstrip().lower().startswith(b"<!doctype html")
        with pytest.raises(OSError):
            Image.open(io.BytesIO(body))


def _non_loopback_ipv4() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # UDP connect sends nothing; it only picks a route
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_binds_loopback_only_and_close_frees_the_port(site):
    handle = start_server(site, port=0)
    try:
        assert handle.host == "127.0.0.1" and handle._server.socket.getsockname()[0] == "127.0.0.1"
        other = _non_loopback_ipv4()
        if other is not None:
            with pytest.raises(OSError):
                socket.create_connection((other, handle.port), timeout=2).close()
    finally:
        handle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", handle.port), timeout=2).close()


def test_folder_may_appear_after_the_server_starts(tmp_path):
    folder = tmp_path / "later"
    with start_server(folder, port=0) as handle:
        assert _raw(handle, "/x.txt")[0] == 404
        folder.mkdir()
        (folder / "x.txt").write_text("here now")
        assert _raw(handle, "/x.txt") [2] == b"here now"


def _fetch(url: str) -> tuple[int, str, bytes, float]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read(), time.perf_counter() - started
    except urllib.error.HTTPError as exc:
        return exc.code, "", b"", time.perf_counter() - started


def test_every_demo_row_gets_its_expected_answer_over_http(tmp_path):
    """The generator and the server together: what each kind's URL answers."""
    folder = tmp_path / "demo"
    with start_server(folder, port=0, slow_seconds=0.3) as handle:
        make_demo_pool(folder, size=60, seed=2, base_url=handle.url, seed_size=4, eval_per_class=1)
        rows = pq.read_table(folder / "truth.parquet").to_pylist()
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(_fetch, [r["url"] for r in rows]))
    for row, (status, content_type, body, seconds) in zip(rows, answers):
        if row["expect"] == "http-404":
            assert status == 404, row
        elif row["expect"] == "not-image":
            assert status == 200 and content_type.startswith("text/html"), row
        else:
            assert status == 200 and body == (folder / row["path"]).read_bytes(), row
            assert content_type in ("image/jpeg", "image/png")
        if row["kind"] == "slow":
            assert seconds >= 0.3


def test_cli_serves_until_interrupted(site, tmp_path):
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "curate", "serve", str(site), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        url = line.split(" at ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{url}/a.jpg", timeout=10) as r:
            assert r.read() == (site / "a.jpg").read_bytes()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    bad = subprocess.run([sys.executable, "-m", "curate", "serve", str(tmp_path / "missing")],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
