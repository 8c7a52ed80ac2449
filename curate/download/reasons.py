"""Short machine-readable failure reasons from img2dataset's free-text error messages."""
from __future__ import annotations

import re

from curate.download.guard import PRIVATE_ADDRESS_ERROR

# First match wins; patterns are matched case-insensitively against error_message.
_RULES: tuple[tuple[str, str], ...] = (
    (re.escape(PRIVATE_ADDRESS_ERROR), "private-address"),
    (r"x-robots-tag", "disallowed"),
    (r"timed out|timeout", "timeout"),
    (r"truncated", "truncated"),
    (r"not an image|image decoding error", "not-image"),
    (r"too small", "too-small"),
    (r"area too large", "too-large"),
    (r"aspect ratio too large", "bad-aspect"),
    (r"hash mismatch", "hash-mismatch"),
    (r"name or service not known|nodename nor servname|temporary failure in name resolution|getaddrinfo", "dns"),
    (r"connection refused", "connection-refused"),
    (r"unknown url type|no host given", "bad-url"),
)
_HTTP_ERROR = re.compile(r"HTTP Error (\d{3})")


def failure_reason(status: str | None, error_message: str | None) -> str | None:
    """None for a success; otherwise a stable short reason such as http-404 or truncated."""
    if status == "success":
        return None
    message = error_message or ""
    http = _HTTP_ERROR.search(message)
    if http:
        return f"http-{http.group(1)}"
    for pattern, reason in _RULES:
        if re.search(pattern, message, re.IGNORECASE):
            return reason
    return "download-error" if status == "failed_to_download" else "decode-error"
