"""Run the real `curate` CLI in a subprocess (exit status and stderr as a user sees them)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_curate(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "curate", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env,
    )
