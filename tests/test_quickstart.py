"""`curate quickstart` end to end on a small shapes pool (400 rows, and a closing 2 x 2 sweep at
3,000 and 9,000 samples, not the default 7,000 and 22,000; the seed run keeps its budget; 6 min
alone on 2 cores, 8 beside the other tests), then once more in the
same --workdir, which must reuse every finished stage and print the same figures."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, WANDB_MODE="disabled", HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1")
STAGES = ["demo pool", "demo suite", "download pool", "inspect", "download seed set", "train seed", "score pool with the seed CLIP",
          "dedup", "filter --top 40% and export", "sweep: top slice vs whole pool at two budgets"]
BUDGETS = ("3000", "9000")  # --sweep-samples, given as 3k,9k
FIGURES = re.compile(r"^ *(ROC AUC .*|dedup pairs: .*|top (40|100)% .*|At .* samples, .*|precision of the kept slice.*)$",
                     re.M)


def _quickstart(workdir: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "curate", "quickstart", "--workdir", str(workdir), "--size", "400",
                           "--sweep-samples", "3k,9k"],
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
    assert (workdir / "runs" / "seed" / "final.pt").is_file()

    # The closing sweep: top 40% and the whole deduplicated pool at the two budgets, equal
    # FLOPs per budget, its table printed from results.parquet, its report written.
    results = pq.read_table(workdir / "sweep" / "results.parquet").to_pylist()
    assert sorted((r["slice"], r["cfg_samples"]) for r in results) == [
        ("top 100%", "3000"), ("top 100%", "9000"), ("top 40%", "3000"), ("top 40%", "9000")]
    assert all(r["status"] == "ok" and r["retrieval_pairs"] > 0 for r in results)
    # Retrieval on the demo suite's held-out captions task, one pair per image: never the seed set.
    captions = workdir / "demo" / "suites" / "demo" / "shapes-captions"
    images = json.loads((workdir / "demo" / "suites" / "demo" / "suite.json").read_text())["tasks"]["shapes-captions"]
    assert {(r["cfg_retrieval_data"], r["retrieval_pairs"]) for r in results} == {(str(captions.resolve()), images)}
    for budget in BUDGETS:
        pair = [r for r in results if r["cfg_samples"] == budget]
        assert pair[0]["flops"] == pair[1]["flops"] and pair[0]["samples_seen"] == pair[1]["samples_seen"]
    for r in results:
        assert f"{r['zeroshot_top1']:.1%}" in re.search(rf"^   {re.escape(r['slice'])}.* {r['samples_seen']} .*$",
                                                       first, re.M)[0]
    assert (workdir / "sweep" / "report.html").is_file() and len(list((workdir / "sweep" / "plots").glob("*.png"))) == 3
    # Each cell judged on the demo suite, whose average is what the report weighs.
    tasks = sorted(p.name for p in (workdir / "demo" / "suites" / "demo").iterdir() if p.is_dir())
    assert len(tasks) == 5 and all(r[f"suite_{t}"] is not None for r in results for t in tasks)
    assert all(r["suite_average_lo"] <= r["suite_average"] <= r["suite_average_hi"] for r in results)
    assert "Metric: suite average (`suite_average`" in (workdir / "sweep" / "report.md").read_text()
    assert len(re.findall(r"^   At [0-9,]+ samples, top (40|100)% is best", first, re.M)) == 2

    # A rerun reuses every finished stage: the same figures, in seconds.
    second = _quickstart(workdir)
    assert "already downloaded" in second
    assert FIGURES.findall(second) == FIGURES.findall(first) != []
    seconds = int(re.search(r"^== done in (\d+)s", second, re.M)[1])
    assert seconds < 60, second[-2000:]


def test_the_closing_sweep_retrieves_on_the_demo_suites_held_out_task(tmp_path):
    """The quickstart's sweep file points retrieval at the demo suite's captions task (held-out
    images; not the seed set, which trained the seed CLIP that chose the slice), and a train
    run's retrieval reads that task folder: one pair per image, with its first caption."""
    import yaml

    from curate.demo import make_demo_pool
    from curate.eval_suite.demo import build_demo_suite
    from pipeline.quickstart import Quickstart, QuickstartConfig
    from shards.task_folder import iter_samples, read_task_folder
    from train.evaluate import retrieval_pairs

    quickstart = Quickstart(QuickstartConfig(workdir=tmp_path), say=lambda line: None)
    make_demo_pool(quickstart.demo, size=60, seed=0, seed_size=20, eval_per_class=2)
    build_demo_suite(quickstart.suite, quickstart.demo, images=24)
    retrieval = yaml.safe_load(quickstart.sweep_file().read_text())["retrieval"]
    assert Path(retrieval) == (quickstart.suite / "shapes-captions").resolve()
    samples = list(iter_samples(read_task_folder(retrieval)))
    assert retrieval_pairs(None, retrieval, 1000) == [(image, captions[0]) for _, image, captions in samples]
    assert len(samples) >= 12 and retrieval_pairs(None, retrieval, 5) == retrieval_pairs(None, retrieval, 1000)[:5]


def test_sweep_samples_that_are_not_small_then_large_are_refused_before_any_work(tmp_path):
    for bad in ("9000", "9k,3000", "3000,lots", "0,9000"):  # each call imports torch: a few
        proc = subprocess.run([sys.executable, "-m", "curate", "quickstart", "--workdir", str(tmp_path / "qs"),
                               "--sweep-samples", bad], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "--sweep-samples" in proc.stderr, (bad, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "qs").exists()
