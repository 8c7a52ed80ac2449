"""Installed versions, as every tool records them in what it writes (pool.json, subset
metadata, shard-set manifests): one rule for what "a version" is and for a missing package."""
from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

UNKNOWN = "0+unknown"  # clipcurate run from a folder that was never pip-installed


def installed_versions(*packages: str) -> dict[str, str]:
    """{"python": X.Y.Z, package: version...} for those of `packages` that are installed
    (a missing one is left out)."""
    found = {"python": platform.python_version()}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def tool_version() -> str:
    """clipcurate's own installed version, or "0+unknown"."""
    return installed_versions("clipcurate").get("clipcurate", UNKNOWN)
