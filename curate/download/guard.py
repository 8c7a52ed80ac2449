"""Safety checks img2dataset does not make itself, run inside its worker processes.

- The address guard refuses connections to loopback, private, link-local and other
  non-public addresses. It checks the address actually connected to (after DNS, for every
  redirect hop), so a public name that resolves or redirects to 127.0.0.1 is refused too.
- GuardedResizer reads only the image header before img2dataset decodes it, so an image
  over the pixel limit is refused without being decoded, and it rejects truncated files
  that OpenCV would otherwise decode silently as partly grey images.
"""
from __future__ import annotations

import functools
import http.client
import io
import ipaddress
import socket
import urllib.request
from typing import Any, Callable

from img2dataset.resizer import Resizer
from PIL import Image

PRIVATE_ADDRESS_ERROR = "refused: private address"
# Leading bytes of JPEG, PNG, GIF and WebP/RIFF files: such a file that will not open was cut short.
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"RIFF")


# socket.getaddrinfo's signature: (host, port, family, type) -> [(family, type, proto, canonname, sockaddr)]
Resolver = Callable[..., list[tuple[Any, ...]]]


class PrivateAddressError(OSError):
    """A URL's host is, or resolves to, a non-public address."""


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _guarded_create_connection(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None,
                                resolve: Resolver = socket.getaddrinfo):
    """socket.create_connection that connects only to vetted public addresses (`resolve`: the DNS lookup)."""
    host, port = address
    last_error: OSError | None = None
    for family, socktype, proto, _, sockaddr in resolve(host, port, 0, socket.SOCK_STREAM):
        if not is_public_address(sockaddr[0]):
            raise PrivateAddressError(f"{PRIVATE_ADDRESS_ERROR} {sockaddr[0]} for host {host!r} (--allow-private lifts this)")
        sock = socket.socket(family, socktype, proto)
        try:
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)  # the vetted address itself: no second DNS lookup to rebind
            return sock
        except OSError as exc:
            sock.close()
            last_error = exc
    raise last_error or OSError(f"cannot resolve {host!r}")


class _GuardedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, resolve: Resolver = socket.getaddrinfo, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # __init__ sets the unguarded one
        self._create_connection = functools.partial(_guarded_create_connection, resolve=resolve)


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, resolve: Resolver = socket.getaddrinfo, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = functools.partial(_guarded_create_connection, resolve=resolve)


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, resolve: Resolver) -> None:
        super().__init__()
        self.resolve = resolve

    def http_open(self, req):
        return self.do_open(functools.partial(_GuardedHTTPConnection, resolve=self.resolve), req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, resolve: Resolver) -> None:
        super().__init__()
        self.resolve = resolve

    def https_open(self, req):
        return self.do_open(functools.partial(_GuardedHTTPSConnection, resolve=self.resolve), req,
                            context=self._context)


def install_address_guard(allow_private: bool, resolve: Resolver = socket.getaddrinfo) -> None:
    """Make urllib.request.urlopen (what img2dataset fetches with) in this process refuse private
    addresses; `resolve` is the DNS lookup (socket.getaddrinfo; another for names a test controls)."""
    if allow_private:
        urllib.request.install_opener(urllib.request.build_opener())
    else:
        urllib.request.install_opener(urllib.request.build_opener(_GuardedHTTPHandler(resolve), _GuardedHTTPSHandler(resolve)))


def header_problem(data: bytes, min_side: int, max_pixels: float) -> str | None:
    """Why an image must be refused, judged from its header and framing alone, or None."""
    try:
        with Image.open(io.BytesIO(data)) as img:  # parses the header only; pixels stay undecoded
            width, height = img.size
            fmt = img.format
    except Image.DecompressionBombError:
        return "image area too large (refused before decoding)"
    except Exception:  # noqa: BLE001 - PIL raises many types for non-images
        if data.startswith(IMAGE_SIGNATURES):
            return "truncated image (header cut short)"
        return "not an image (unrecognised format)"
    if width * height > max_pixels:
        return f"image area too large ({width}x{height} px, refused before decoding)"
    if min(width, height) < min_side:
        return f"image too small ({width}x{height} px)"
    if fmt == "JPEG" and not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        return "truncated image (JPEG has no end-of-image marker)"
    if fmt == "PNG" and b"IEND" not in data[-32:]:
        return "truncated image (PNG has no IEND chunk)"
    return None


class GuardedResizer(Resizer):
    """img2dataset's Resizer with header checks first; installs the address guard where it runs."""

    def __init__(self, *args, allow_private: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.allow_private = allow_private

    def __setstate__(self, state: dict) -> None:
        # Called when img2dataset ships the resizer to a worker process: guard that process's fetches.
        self.__dict__.update(state)
        install_address_guard(self.allow_private)

    def __call__(self, img_stream, blurring_bbox_list=None):
        img_stream.seek(0)
        problem = header_problem(img_stream.getvalue(), self.min_image_size, self.max_image_area)
        if problem is not None:
            return None, None, None, None, None, problem
        img_stream.seek(0)
        return super().__call__(img_stream, blurring_bbox_list)
