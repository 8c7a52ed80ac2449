"""Real engines started and stopped by the tests: a Ray head, an S3-compatible server and
torchrun "nodes".

Both listen on 127.0.0.1 only and are torn down by the test that started them (never
`ray stop`: it would stop every Ray process on the machine, other users' too).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

# Ray 2.60 turns on token authentication by default; a test cluster on loopback runs without.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_nodes(command: list[str], log_dir: Path, nodes: int = 2, **popen) -> list[subprocess.Popen]:
    """`torchrun ... COMMAND` started as `nodes` nodes of one process each on this host, as on
    machines that share nothing but the network: static rendezvous at 127.0.0.1 on a free port,
    a node that never joins fails in 30 s (not torchrun's 600 s). Each rank's stdout and stderr
    go to files under log_dir/node<N> (`rank_output`); torchrun's own lines to the pipes."""
    port = free_port()
    return [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--node-rank", str(node),
         "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
         "--rdzv-conf", "timeout=30", "--max-restarts", "0", "--log-dir", str(log_dir / f"node{node}"),
         "--redirects", "3", *command],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **popen)
        for node in range(nodes)]


def rank_output(log_dir: Path, node: int, stream: str = "stderr") -> str:
    """What the (one) rank of a torchrun_nodes node wrote to `stream`."""
    return "".join(p.read_text() for p in sorted((log_dir / f"node{node}").rglob(f"{stream}.log")))


@dataclass
class RayHead:
    address: str  # HOST:PORT, for ray.init / --ray-address
    process: subprocess.Popen  # `ray start --head --block`, leader of its own process group
    temp_dir: str  # the cluster's logs and sockets

    def task_names(self) -> list[str]:
        """The task names the cluster's workers ran (Ray logs `:task_name:NAME` as a task starts)."""
        marker = ":task_name:"
        return [line.strip()[len(marker):] for log in Path(self.temp_dir).glob("session_*/logs/worker-*.out")
                for line in log.read_text(errors="replace").splitlines() if line.startswith(marker)]


@contextlib.contextmanager
def ray_head(num_cpus: int = 2) -> Iterator[RayHead]:
    """A Ray head in its own session, so one killpg ends it and all its workers.

    Its tasks see the head's environment, not the driver's: this one's (PYTHONPATH, AWS_*)
    is passed on. The temp dir is short (/tmp/rayXXXX): Ray's unix socket paths have a length limit.
    """
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={port}",
         f"--num-cpus={num_cpus}", "--include-dashboard=false", "--node-ip-address=127.0.0.1",
         f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        start_new_session=True, env={**os.environ, **RAY_ENV, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        seen = []
        for line in head.stdout:  # --block prints this once the node is up
            seen.append(line)
            if "Ray runtime started" in line:
                break
        else:
            raise RuntimeError("ray start --head ended before the node was up:\n" + "".join(seen[-30:]))
        yield RayHead(f"127.0.0.1:{port}", head, temp_dir)
    finally:
        kill_group(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a process started with start_new_session=True and everything in its group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain `text` (a leftover check)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if text in args:
                found.append(args)
    return found


@contextlib.contextmanager
def s3_server() -> Iterator[dict[str, str]]:
    """moto's S3 server on 127.0.0.1, in a process of its own (not a thread of the test's: a
    test process that also serves the store can starve it, as pytest-xdist's workers did);
    yields the environment that points s3fs, boto3, the aws CLI and spawned workers at it
    (dummy credentials: moto takes any)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # it listens within a few seconds
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError("moto's server ended before it listened") from None
                time.sleep(0.1)
        yield {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    finally:
        kill_group(server)
