"""`curate verify`: check a shard set against its manifest.

For every shard in manifest.json: it exists, has the recorded size and sha256, is a
readable tar whose members are all plain file names and regular files, and holds the
recorded number of samples. sizes.json must agree with the manifest, and .tar files the
manifest does not list are reported too.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from clikit.errors import UserError
from shards.manifest import SIZES_NAME, read_manifest, sha256_file
from shards.reader import scan_tar
from shards.storage import StoragePath, open_root


@dataclass
class VerifyReport:
    out: StoragePath
    shards_checked: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_shardset(out: str | StoragePath) -> VerifyReport:
    """Check every shard of the set at `out` (a folder or a URL); problems are listed, never raised."""
    out = open_root(out, "shard set")
    if not out.is_dir():
        raise UserError(f"{out} is not a directory; pass the folder `curate export` wrote")
    try:
        manifest = read_manifest(out)
    except (ValueError, OSError) as exc:
        raise UserError(f"{out}/manifest.json is unreadable ({exc}); re-export") from None
    if manifest is None:
        raise UserError(
            f"{out} has no manifest.json: not a finished shard set (a killed export? rerun the same `curate export`)"
        )
    report = VerifyReport(out)
    listed = set()
    for shard in manifest.get("shards", []):
        name = shard["name"]
        listed.add(name)
        path = out / name
        report.shards_checked += 1
        if "/" in name or name.startswith("."):
            report.problems.append(f"{name}: unsafe shard name in the manifest")
            continue
        if not path.is_file():
            report.problems.append(f"{name}: missing")
            continue
        size = path.stat().st_size
        if size != shard["bytes"]:
            kind = "truncated" if size < shard["bytes"] else "wrong size"
            report.problems.append(f"{name}: {kind} ({size} bytes, manifest says {shard['bytes']})")
        elif sha256_file(path) != shard["sha256"]:
            report.problems.append(f"{name}: wrong sha256 (contents changed since export)")
        index, tar_problems = scan_tar(path)
        report.problems.extend(f"{name}: {p}" for p in tar_problems)
        if not tar_problems and len(index.members) != shard["count"]:
            report.problems.append(f"{name}: {len(index.members)} samples, manifest says {shard['count']}")
        report.samples += len(index.members)
    for extra in sorted(p.name for p in out.glob("*.tar") if p.name not in listed):
        report.problems.append(f"{extra}: not listed in the manifest")
    sizes_path = out / SIZES_NAME
    try:
        sizes = json.loads(sizes_path.read_text())
        expected = {s["name"]: s["count"] for s in manifest.get("shards", [])}
        if sizes != expected:
            report.problems.append(f"{SIZES_NAME}: does not match the manifest's shard counts")
    except (OSError, ValueError):
        report.problems.append(f"{SIZES_NAME}: missing or unreadable (open_clip reads it to count samples)")
    if sum(s["count"] for s in manifest.get("shards", [])) != manifest.get("count"):
        report.problems.append("manifest.json: count is not the sum of its shards' counts")
    return report
