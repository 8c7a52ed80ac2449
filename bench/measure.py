"""Shared by the benches: run one measured side in a fresh child process, and the rule for
rounds (each round runs every side once, the order rotated so no side always goes first).

`run_child` starts the command from a small launcher process that reaps it with os.wait4,
so each figure is that child's own: wall time, CPU seconds (user + system of the child and
the descendants it waited for, e.g. DataLoader workers) and peak RSS (ru_maxrss: the largest
single process of that tree). The launcher matters for the peak: Linux carries a process's
RSS high-water mark across fork and exec, so a child forked straight from a bench that has
loaded torch or a pool would report the bench's own RSS as its peak; forked from the
launcher, its floor is the launcher's (about 20 MiB).
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, TypeVar

T = TypeVar("T")


@dataclass
class Child:
    wall_s: float
    cpu_s: float
    peak_mb: float
    stdout: str
    stderr: str


LAUNCHER = (
    "import json, os, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "proc = subprocess.Popen(sys.argv[2:])\n"
    "_, status, usage = os.wait4(proc.pid, 0)\n"
    "wall = time.perf_counter() - t\n"
    "code = os.waitstatus_to_exitcode(status)\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "    json.dump({'wall_s': wall, 'cpu_s': usage.ru_utime + usage.ru_stime,\n"
    "               'peak_mb': usage.ru_maxrss / 1024, 'rc': code}, f)\n"
    "sys.exit(0 if code == 0 else 1)\n"
)


def run_child(cmd: Sequence[str], env: dict[str, str] | None = None, cwd: str | Path | None = None,
              check: bool = True) -> Child:
    """Run cmd to the end (through LAUNCHER); its wall seconds, CPU seconds, peak RSS (MiB)
    and output."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.NamedTemporaryFile("r", suffix=".json") as figures:
        proc = subprocess.run([sys.executable, "-c", LAUNCHER, figures.name, *map(str, cmd)],
                              stdout=out, stderr=err, text=True, env=env, cwd=cwd)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
        try:
            got = json.load(figures)
        except ValueError:
            got = {"wall_s": float("nan"), "cpu_s": float("nan"), "peak_mb": float("nan"), "rc": proc.returncode}
    child = Child(got["wall_s"], got["cpu_s"], got["peak_mb"], stdout, stderr)
    if check and got["rc"] != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))[:300]} failed (exit {got['rc']}):\n"
                         f"{(stdout + stderr)[-3000:]}")
    return child


def rotated(items: Sequence[T], round_: int) -> list[T]:
    """items, rotated by round_: over len(items) rounds each item runs first once."""
    k = round_ % len(items)
    return list(items[k:]) + list(items[:k])


def median(values) -> float:
    return statistics.median(list(values))
