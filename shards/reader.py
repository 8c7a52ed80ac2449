"""Read webdataset tar shards safely: index members by sample key, reject unsafe names.

A shard is untrusted input (it may come from another machine, or an object store: any
path of shards/storage.py is read through its own file object), so every member name is
checked before anything is read: only plain file names (`<key>.<ext>`, no directories,
no `..`, not absolute) and only regular files are accepted. `iter_tar_samples` streams a
shard the pool itself wrote, once, in order (the scoring reader).
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass, field
from typing import Iterator

from shards.storage import StoragePath, as_path, open_stream

# Image members of a pool shard or shard set, in the order readers prefer them.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
# Images in a user's folder (or an evaluation set's shards): also formats PIL reads that
# no stage of ours writes.
FOLDER_IMAGE_EXTENSIONS = IMAGE_EXTENSIONS + ("bmp", "gif")


class UnsafeTarError(ValueError):
    """A shard holds a member we refuse to read (unsafe name or not a regular file)."""


def is_plain_member_name(name: str) -> bool:
    """True for a plain file name such as `000000001.jpg`: no directory part, no `..`."""
    return (
        bool(name)
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
        and name not in (".", "..")
        and not name.startswith(".")
    )


def split_member_name(name: str) -> tuple[str, str]:
    """Split `key.ext` the way webdataset does (at the first dot): ("key", "ext")."""
    key, _, ext = name.partition(".")
    return key, ext


@dataclass
class TarIndex:
    """Where each member of a shard lies: key -> {ext: (data offset, size)}."""

    path: StoragePath
    members: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)

    def read(self, handle, key: str, ext: str) -> bytes:
        """Read one member's bytes from an open binary handle on this shard."""
        offset, size = self.members[key][ext]
        handle.seek(offset)
        data = handle.read(size)
        if len(data) != size:
            raise UnsafeTarError(f"{self.path}: member {key}.{ext} is truncated")
        return data


def scan_tar(path: str | StoragePath) -> tuple[TarIndex, list[str]]:
    """Index a shard without reading its data; returns the index and a list of problems.

    Problems (unsafe names, links, devices, a truncated or corrupt archive) are collected
    rather than raised, so `curate verify` can report all of them; unsafe members are never
    put in the index.
    """
    path = as_path(path)
    index = TarIndex(path)
    problems: list[str] = []
    try:
        with path.open("rb") as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
            for info in tar:
                if not is_plain_member_name(info.name):
                    problems.append(f"unsafe member name {info.name!r}")
                    continue
                if not info.isreg():
                    problems.append(f"member {info.name!r} is not a regular file")
                    continue
                key, ext = split_member_name(info.name)
                index.members.setdefault(key, {})[ext] = (info.offset_data, info.size)
    except (tarfile.TarError, EOFError, OSError) as exc:
        problems.append(f"unreadable tar ({type(exc).__name__}: {exc})")
    if not problems:
        size = path.stat().st_size
        end = max((o + s for exts in index.members.values() for o, s in exts.values()), default=0)
        if end > size:
            problems.append(f"truncated: members end at byte {end}, file has {size}")
    return index, problems


def index_tar(path: str | StoragePath) -> TarIndex:
    """Index a shard, raising UnsafeTarError on the first problem."""
    index, problems = scan_tar(path)
    if problems:
        raise UnsafeTarError(f"{path}: {problems[0]}")
    return index


def iter_tar_samples(tar_path: str | StoragePath) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {suffix: bytes}) in tar order, for consecutive members sharing a key.

    One streaming pass, for the scoring workers and training's first-shard check (so
    `pipe:COMMAND` shards too: shards.storage.open_stream). Not webdataset's own reader
    (tariterators.tar_file_iterator + group_by_keys): on 6,000 small samples it measured
    12-20% slower (a regex per member, a dict per file, a compression probe), and tarfile's
    header parsing already costs as much as decoding a small image. It also differs at the
    edges: it raises on a repeated suffix and keeps directory prefixes in keys.
    """
    key, sample = None, {}
    with open_stream(tar_path) as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            member_key, suffix = split_member_name(member.name.rsplit("/", 1)[-1])
            if member_key != key:
                if key is not None:
                    yield key, sample
                key, sample = member_key, {}
            sample[suffix.lower()] = tar.extractfile(member).read()
    if key is not None:
        yield key, sample
