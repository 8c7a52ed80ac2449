"""A loopback HTTP server for the demo pool: plain files plus the fault routes.

Routes (PATH is a file path relative to the served directory):
    /PATH                the file; 404 when missing, a directory, or outside the directory
    /slow/PATH           waits slow_seconds, then serves /PATH
    /redirect/PATH       302 to /PATH
    /html/PATH           200 with an HTML page instead of an image (PATH need not exist)

It binds 127.0.0.1 only: the demo pool must never be reachable from another machine.
"""
from __future__ import annotations

import mimetypes
import posixpath
import shutil
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOST = "127.0.0.1"
SLOW_PREFIX = "/slow/"
REDIRECT_PREFIX = "/redirect/"
HTML_PREFIX = "/html/"

HTML_BODY = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in to continue</title></head>\n"
    b"<body><h1>Sign in to continue</h1><p>This image is only available to members.</p>"
    b"<a href=\"/\">Home</a></body></html>\n"
)


class _PoolServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, slow_seconds: float, port: int) -> None:
        self.root = root
        self.slow_seconds = slow_seconds
        super().__init__((HOST, port), _Handler)

    def handle_error(self, request, client_address) -> None:
        # A client that hangs up mid-response (a downloader's timeout, a refused huge image)
        # is routine here, not a server fault worth a traceback.
        import sys

        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _PoolServer
    server_version = "clipcurate-demo/1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        pass  # thousands of requests per download; the access log would drown the progress bar

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, send_body: bool) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if path.startswith(HTML_PREFIX):
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", HTML_BODY, send_body)
        elif path.startswith(REDIRECT_PREFIX):
            target = "/" + path[len(REDIRECT_PREFIX):]
            self.send_response(HTTPStatus.FOUND)
            self.send_header("Location", urllib.parse.quote(target))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path.startswith(SLOW_PREFIX):
            time.sleep(self.server.slow_seconds)
            self._send_file("/" + path[len(SLOW_PREFIX):], send_body)
        else:
            self._send_file(path, send_body)

    def _send(self, status: HTTPStatus, content_type: str, body: bytes, send_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _send_file(self, url_path: str, send_body: bool) -> None:
        file = resolve_inside(self.server.root, url_path)
        if file is None:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n", send_body)
            return
        content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        with open(file, "rb") as fh:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(file.stat().st_size))
            self.end_headers()
            if send_body:
                shutil.copyfileobj(fh, self.wfile)


def resolve_inside(root: Path, url_path: str) -> Path | None:
    """The regular file that url_path names under root, or None.

    Refuses '..' segments, absolute paths ('//etc/passwd'), and symlinks leading out.
    """
    relative = url_path[1:] if url_path.startswith("/") else url_path
    parts = relative.split("/")
    if not relative or relative.startswith("/") or "\\" in relative or any(p in ("..", ".") for p in parts):
        return None
    if posixpath.isabs(relative) or "\x00" in relative:
        return None
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    return candidate


@dataclass
class ServerHandle:
    """A running server: .url ("http://127.0.0.1:PORT"), .port, .close(); a context manager."""

    url: str
    port: int
    directory: Path
    _server: _PoolServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def host(self) -> str:
        return self._server.server_address[0]

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _make_server(directory: Path, port: int, slow_seconds: float) -> _PoolServer:
    root = Path(directory).resolve()
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory")
    return _PoolServer(root, slow_seconds, port)


def start_server(directory: Path, port: int = 0, slow_seconds: float = 1.5) -> ServerHandle:
    """Serve directory on 127.0.0.1:port (0 = a free port) from a background daemon thread.

    Files are looked up per request, so the directory may be (re)generated while served,
    or not exist yet: a pool's URLs need the port before the pool is written.
    """
    server = _make_server(directory, port, slow_seconds)
    thread = threading.Thread(target=server.serve_forever, name=f"demo-server-{server.server_port}", daemon=True)
    thread.start()
    port = server.server_port
    return ServerHandle(url=f"http://{HOST}:{port}", port=port, directory=server.root, _server=server, _thread=thread)


def serve_forever(directory: Path, port: int = 8000, slow_seconds: float = 1.5, on_ready=None) -> None:
    """Serve in the foreground until KeyboardInterrupt; on_ready(url) is called once bound."""
    server = _make_server(directory, port, slow_seconds)
    try:
        if on_ready is not None:
            on_ready(f"http://{HOST}:{server.server_port}")
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
