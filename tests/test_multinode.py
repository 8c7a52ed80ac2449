"""Past one machine: training and scoring as two torchrun "nodes" (one process each, static
rendezvous on 127.0.0.1, gloo, --threads 1 so that the two do not oversubscribe the cores) give
what one process gives, and a rank that dies ends the run at once, in one line per survivor."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engines import rank_output, torchrun_nodes
from test_score import _score_cmd, weights  # noqa: F401 - weights is the tiny model's fixture
from test_train_run import COMMON, ENV, ROOT

TIMEOUT = 240  # a whole two-node command, start-up (5-10 s) included


def finish(nodes: list[subprocess.Popen]) -> list[subprocess.CompletedProcess]:
    done = []
    for proc in nodes:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return done


def succeed(nodes: list[subprocess.Popen], log_dir: Path) -> None:
    for node, proc in enumerate(finish(nodes)):
        assert proc.returncode == 0, (proc.stderr[-2000:], rank_output(log_dir, node)[-3000:])


def test_two_nodes_with_accumulation_train_like_one_process(tmp_path):
    """tests/ddp_step.py (3 SGD steps on a fixed global batch of 16) alone, against two nodes
    whose ranks each take their 8 rows in 2 accumulated micro-batches of 4 (DDP all-reduce once,
    in the last pass): the same losses and weights within 1e-5 (measured: 6.6e-6 max |dw|, 5.1e-6
    per-tensor relative; SGD at lr 0.5 on a fixed batch)."""
    script = str(ROOT / "tests" / "ddp_step.py")
    env = {**ENV, "PYTHONPATH": str(ROOT)}
    alone, nodes = tmp_path / "alone.pt", tmp_path / "nodes.pt"
    proc = subprocess.run([sys.executable, script, str(alone)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    succeed(torchrun_nodes([script, str(nodes), "2"], tmp_path / "logs", cwd=ROOT, env=env), tmp_path / "logs")
    a, b = torch.load(alone, weights_only=True), torch.load(nodes, weights_only=True)
    assert b["losses"] == pytest.approx(a["losses"], abs=1e-5)
    assert a["losses"][0] != pytest.approx(a["losses"][-1], abs=1e-3)  # the steps did change the model
    worst = max(float((a["state_dict"][k] - b["state_dict"][k]).abs().max()) for k in a["state_dict"])
    assert worst <= 1e-5


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from shapes_data import make_shape_shards

    root = tmp_path_factory.mktemp("shapes")
    make_shape_shards(root / "data", 64, per_shard=32)
    return root


def train_args(shapes: Path, out: Path, samples: str = "32") -> list[str]:
    return ["-m", "train", "run", "--data", str(shapes / "data"), "--out", str(out), "--samples", samples,
            *COMMON, "--workers", "0"]


def test_train_run_on_two_nodes_is_one_node_of_two_processes(shapes, tmp_path):
    """`train run` on two nodes of one process each writes the weights of torchrun with two
    processes on one node (the same ranks, the same rows: bitwise), and one summary."""
    one_node = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                               *train_args(shapes, tmp_path / "one")], cwd=ROOT, env=ENV, capture_output=True,
                              text=True, timeout=TIMEOUT)
    assert one_node.returncode == 0, one_node.stderr[-3000:]
    logs = tmp_path / "logs"
    succeed(torchrun_nodes(train_args(shapes, tmp_path / "two"), logs, cwd=ROOT, env=ENV), logs)
    summaries = [line for node in (0, 1) for line in rank_output(logs, node, "stdout").splitlines()
                 if line.startswith("{")]
    assert len(summaries) == 1 and json.loads(summaries[0])["step"] == 2  # rank 0 reports, once
    a, b = (torch.load(tmp_path / run / "final.pt", weights_only=True) for run in ("one", "two"))
    assert a["config"]["world_size"] == b["config"]["world_size"] == 2
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])] == []


def test_score_on_two_nodes_writes_the_bytes_of_one_process(pool_copy, weights, tmp_path):  # noqa: F811
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(_score_cmd(pool_copy, weights, "one"), capture_output=True, text=True, env=env,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = tmp_path / "logs"
    succeed(torchrun_nodes(_score_cmd(pool_copy, weights, "two")[1:], logs, env=env), logs)
    for folder in ("scores", "embeddings"):
        two = {p.name: p.read_bytes() for p in sorted((pool_copy / folder / "two").glob("0*"))}
        one = {p.name: p.read_bytes() for p in sorted((pool_copy / folder / "one").glob("0*"))}
        assert two and two.keys() == one.keys()
        assert [name for name in two if two[name] != one[name]] == []


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_rank_killed_mid_run_ends_the_other_in_one_line(shapes, tmp_path):
    """kill -9 of node 1's rank once training is under way: node 0's rank exits within 60 s
    (measured 1-6 s; forked loader workers hold the dead rank's sockets a few seconds) with
    one line on stderr, no traceback, and both torchrun agents exit non-zero."""
    out, logs = tmp_path / "run", tmp_path / "logs"
    args = [*train_args(shapes, out, samples="100000"), "--checkpoint-every", "1", "--workers", "1"]
    nodes = torchrun_nodes(args, logs, cwd=ROOT, env=ENV)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (out / "checkpoints" / "step_00000002.pt").exists():
            assert time.monotonic() < deadline and all(p.poll() is None for p in nodes), "training did not start"
            time.sleep(0.1)
        victim = next(pid for pid in children(nodes[1].pid) if "train" in Path(f"/proc/{pid}/cmdline").read_text())
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        nodes[0].wait(timeout=60)
        took = time.monotonic() - killed
        done = finish(nodes)
    finally:
        for proc in nodes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert took < 60 and done[0].returncode != 0 and done[1].returncode != 0
    stderr = rank_output(logs, 0)  # (before the error: the library warnings of a normal run)
    errors = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("train: error: rank 0 "), stderr[-3000:]
    assert stderr.rstrip().endswith(errors[0]) and "Traceback" not in stderr
    assert "lost contact with another process" in errors[0] or "stopped by torchrun" in errors[0]
    print(f"node 0 exited {took:.1f} s after the kill: {errors[0]}")


def test_threads_per_process_follow_the_cpu_affinity_not_the_machine():
    """Under Slurm or taskset a process may use fewer cores than the machine has: pinned to one
    core, with LOCAL_WORLD_SIZE=1 and no loader worker, train takes 1 thread, not os.cpu_count()."""
    code = ("import os, torch; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from train.config import TrainConfig; from train.loop import _set_cpu_threads; "
            "_set_cpu_threads(TrainConfig(data='', out='', workers=0), torch.device('cpu')); "
            "print(os.cpu_count(), torch.get_num_threads())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**ENV, "LOCAL_WORLD_SIZE": "1"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cores, threads = map(int, proc.stdout.split())
    assert cores >= 2 and threads == 1
