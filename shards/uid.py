"""Stable sample identity shared by every stage (docs/design.md, Identity)."""
from __future__ import annotations

import hashlib

UID_HEX_CHARS = 32  # 128 bits, like DataComp's uids


def sample_uid(url: str, caption: str | None) -> str:
    """First 128 bits of sha256(url + "\\n" + caption) as 32 lowercase hex characters.

    A missing caption hashes as the empty string so that every row gets a uid.
    """
    text = f"{url}\n{caption if caption is not None else ''}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:UID_HEX_CHARS]


def uid_to_uint64_pair(uid: str) -> tuple[int, int]:
    """Split a 32-hex uid into DataComp's (high, low) pair of uint64."""
    if len(uid) != UID_HEX_CHARS:
        raise ValueError(f"uid must be {UID_HEX_CHARS} hex characters, got {uid!r}")
    return int(uid[:16], 16), int(uid[16:], 16)
