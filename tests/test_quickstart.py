"""`curate quickstart` end to end on a small shapes pool (400 rows; about 3 minutes on 2
cores: its three training runs have fixed budgets), then once more in the same --workdir,
which must reuse every finished stage and print the same figures."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, WANDB_MODE="disabled", HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1")
STAGES = ["demo pool", "download pool", "inspect", "download seed set", "train seed", "score pool with the seed CLIP",
          "dedup", "filter --top 40% and export", "train full", "train top40"]
FIGURES = re.compile(r"^ *(ROC AUC .*|dedup pairs: .*|full pool .*|top 40% shard set .*|precision of the kept slice.*)$",
                     re.M)


def _quickstart(workdir: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "curate", "quickstart", "--workdir", str(workdir), "--size", "400"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_quickstart_runs_every_stage_and_a_rerun_reuses_them(tmp_path):
    workdir = tmp_path / "qs"
    first = _quickstart(workdir)
    headers = re.findall(r"^== (.*)$", first, re.M)
    assert headers[:len(STAGES)] == STAGES and headers[-1].startswith("done in")

    # The download line agrees with the demo's truth: every row expected to succeed did.
    truth = pq.read_table(workdir / "demo" / "truth.parquet")
    expected = pc.sum(pc.equal(truth["expect"], "success")).as_py()
    assert f"{workdir / 'pool'}: {expected}/400 downloaded" in first

    # Dedup on the demo pool finds its planted copies (the quickstart prints its truth check).
    near = re.search(r"near P ([0-9.]+) R ([0-9.]+)", first)
    assert near and float(near[1]) >= 0.9 and float(near[2]) >= 0.9, near
    exact = re.search(r"exact P ([0-9.]+) R ([0-9.]+)", first)
    assert exact and float(exact[1]) == 1.0 and float(exact[2]) == 1.0

    # The slice it keeps is mostly captions that match their image, and it was exported and trained on.
    slice_precision = float(re.search(r"precision of the kept slice .*?: ([0-9.]+)%", first)[1])
    assert slice_precision >= 85.0
    kept = pq.read_table(workdir / "pool" / "subsets" / "top40.parquet").num_rows
    assert re.search(rf"subsets/top40: {kept} of \d+ kept", first)
    assert (workdir / "shardset" / "manifest.json").is_file()
    for run in ("seed", "full", "top40"):
        assert (workdir / "runs" / run / "final.pt").is_file(), run

    # A rerun reuses every finished stage: the same figures, in seconds.
    second = _quickstart(workdir)
    assert "already downloaded" in second
    assert FIGURES.findall(second) == FIGURES.findall(first) != []
    seconds = int(re.search(r"^== done in (\d+)s", second, re.M)[1])
    assert seconds < 60, second[-2000:]
