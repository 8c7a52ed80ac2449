"""`train sweep` for real: real training steps on the tests' downloaded pool (scored and
deduplicated here), real parquet, a SIGKILLed sweep resumed, a failing cell recorded, cells
side by side (--jobs 2) and on a real local Ray cluster."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("wall_s", "run_s", "train_s", "eval_s", "overhead_s", "overhead_pct", "resumed")


@pytest.fixture(scope="module")
def scored(pool_dir, demo_dir, tmp_path_factory):
    """(pool, eval folder): a copy of pool_dir scored by an untrained micro-vit-32 (tag seed),
    deduplicated (exact), with an unreadable named subset `broken` for a cell that must fail."""
    import torch

    from curate.dedup.run import DedupSettings, run_dedup
    from curate.score.run import ScoreSettings, score_pool
    from zoo.models import create_model

    root = tmp_path_factory.mktemp("sweep-pool")
    weights = root / "micro.pt"
    torch.manual_seed(0)
    # An untrained seed model: its scores rank the pool arbitrarily, which is all a sweep needs.
    torch.save(create_model("micro-vit-32")[0].state_dict(), weights)
    pool = Path(shutil.copytree(pool_dir, root / "pool"))
    settings = ScoreSettings(batch_size=64, workers=0, progress=False)
    score_pool(pool, model="micro-vit-32", pretrained=str(weights), tag="seed", settings=settings)
    run_dedup(pool, DedupSettings(scores="seed", method="exact", tag="exact"))
    (pool / "subsets").mkdir(exist_ok=True)
    (pool / "subsets" / "broken.parquet").write_bytes(b"not a parquet file")
    return pool, demo_dir / "eval"


def sweep_file(tmp_path: Path, pool: Path, eval_dir: Path, experiments: str, name: str = "t.yaml") -> Path:
    path = tmp_path / name
    path.write_text(f"""name: t
pool: {pool}
scores: seed
dedup: exact
eval: {eval_dir}
train: {{batch_size: 16, lr: 0.01, workers: 0, threads: 1, log_every: 2}}
resources: {{cpus: 1}}
experiments:
{experiments}""")
    return path


GRID = """  q:
    data: [{top: [40%]}]
    models: [micro-vit-32]
    budgets: {samples: [32]}
    seeds: [0]
"""


@pytest.mark.parametrize("old, new, message", [
    ("models: [micro-vit-32]", "models: [nope-net]", ":11: experiments.q.models.0: unknown model"),
    ("top: [40%]", "top: [140%]", ":10: experiments.q.data.0.top.0: 140% is outside (0%, 100%]"),
    ("    models:", "    strategies: [clop]\n    models:", ":11: experiments.q.strategies.0: unknown strategy"),
    ("seeds: [0]", "seeds: [0, 0]", "duplicate cell"),
    ("models: [micro-vit-32]", "models: [{micro-vit-32: {lrr: 1}}]",
     ":11: experiments.q.models.0.micro-vit-32.lrr: not a train option"),
    ("models: [micro-vit-32]", "models: [{micro-vit-32: {fsdp: true}}]",
     ":11: experiments.q.models.0.micro-vit-32.fsdp: cells run as one process each"),
    ("scores: seed", "scores: nope", ":3: scores: no scores tag nope"),
    ("eval: ", "eval: /no/such/folder\nretrieval: ", ":5: eval: /no/such/folder: no such eval folder"),
    ("eval: ", "evaluation: ", ":5: evaluation: unknown key; a sweep file has"),
    ("top: [40%]", "subset: [missing]", "no subset 'missing'"),
    ("seeds: [0]", "seeds: [0\n", "not valid YAML"),
    ("top: [40%]", "recipe: [nope_recipe]", ":10: experiments.q.data.0.recipe.0: "),
    ("top: [40%]", "recipe: [{clip_top: {fractoin: 0.1}}]", "recipe clip_top has no parameter fractoin"),
    ("top: [40%]", "recipe: [top_fraction]", "recipe top_fraction needs a share or a count"),
])
def test_bad_sweep_files_fail_before_any_cell_naming_key_and_line(scored, tmp_path, old, new, message):
    from clikit.errors import UserError
    from pipeline.sweep.spec import load_sweep

    pool, eval_dir = scored
    path = sweep_file(tmp_path, pool, eval_dir, GRID)
    path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(UserError) as info:
        load_sweep(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_model_carries_its_own_train_options_into_its_cells(scored, tmp_path):
    """`{model: {lr: ..}}` is that model's recipe: its cells train with it, the others with the
    file's train:, and the cell id names the model only."""
    from pipeline.sweep.spec import load_sweep

    pool, eval_dir = scored
    grid = GRID.replace("models: [micro-vit-32]", "models: [micro-vit-32, {tiny-vit-32: {lr: 0.003}}]")
    cells = {c.model: c for c in load_sweep(sweep_file(tmp_path, pool, eval_dir, grid)).cells}
    assert cells["tiny-vit-32"].train["lr"] == 0.003 and cells["micro-vit-32"].train["lr"] == 0.01
    assert cells["tiny-vit-32"].id == cells["micro-vit-32"].id.replace("micro-vit-32", "tiny-vit-32")


def test_cli_exit_2_for_a_missing_pool_and_a_budget_that_buys_no_step(scored, tmp_path):
    pool, eval_dir = scored
    path = sweep_file(tmp_path, tmp_path / "nowhere", eval_dir, GRID)
    result = subprocess.run([sys.executable, "-m", "train", "sweep", str(path), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "pool: " in result.stderr and "not a downloaded pool" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    tiny = sweep_file(tmp_path, pool, eval_dir, GRID.replace("{samples: [32]}", "{flops: [1000]}"), "tiny.yaml")
    result = subprocess.run([sys.executable, "-m", "train", "sweep", str(tiny), "--out", str(tmp_path / "o2")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "buys no step" in result.stderr
    assert not (tmp_path / "o2" / "cells").exists()  # refused before any cell ran


def _frame(out: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING and k not in ("run_dir", "cfg_out")}
            for row in pq.read_table(out / "results.parquet").to_pylist()]


def test_smoke_sweep_end_to_end_rerun_and_jobs(scored, tmp_path):
    """sweeps/smoke.yaml through the CLI: results.parquet per cell; a rerun skips every cell;
    --jobs 2 gives the same figures."""
    from pipeline.sweep.run import SweepOptions, run_sweep
    from pipeline.sweep.spec import load_sweep

    pool, eval_dir = scored
    out = tmp_path / "smoke"
    args = [sys.executable, "-m", "train", "sweep", str(ROOT / "sweeps" / "smoke.yaml"), "--out", str(out),
            "--pool", str(pool), "--eval", str(eval_dir)]
    first = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert "[12/12 done, 0 left]" in first.stdout and "left" in first.stdout.split("[1/12 done")[1].splitlines()[0]
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert len(rows) == 12 and {r["status"] for r in rows} == {"ok"}
    for r in rows:
        assert r["flops"] == r["steps"] * r["flops_per_step"] and r["samples_seen"] == r["steps"] * 16
        assert r["epochs"] == pytest.approx(r["samples_seen"] / r["slice_size"])
        assert 0 <= r["zeroshot_top1"] <= r["zeroshot_top5"] <= 1
        assert r["image_to_text_R@1"] is None and r["retrieval_pairs"] is None  # smoke.yaml has no retrieval:
        assert json.loads((Path(r["run_dir"]) / "eval.json").read_text())["zeroshot_top1"] == r["zeroshot_top1"]
        assert r["cfg_model"] == "micro-vit-32" and r["cfg_batch_size"] == 16 and r["wall_s"] > r["train_s"] > 0
        assert r["cfg_flops_per_step"] == r["flops_per_step"] == r["planned_flops_per_step"]  # measured once, handed in
        assert 0 < r["eval_s"] < r["run_s"] and r["overhead_s"] == pytest.approx(r["wall_s"] - r["train_s"] - r["eval_s"])
    sizes = {r["slice"]: r["slice_size"] for r in rows}
    assert sizes["random 50% of top 100% (seed 0)"] == round(0.5 * sizes["top 100%"])
    assert sizes["top 40%"] == round(0.4 * sizes["top 100%"])
    assert (out / "report.html").is_file() and (out / "plots" / "quality_flops.png").is_file()

    before = _frame(out)
    again = subprocess.run(args + ["--no-report"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "12 cell(s) already finished, 0 to run" in again.stdout
    assert _frame(out) == before  # the rerun rewrote results.parquet with the same rows

    parallel = tmp_path / "parallel"
    spec = load_sweep(ROOT / "sweeps" / "smoke.yaml", pool=str(pool), eval_dir=str(eval_dir))
    summary = run_sweep(spec, parallel, SweepOptions(jobs=2, say=lambda line: None))
    assert summary["ok"] == 12 and summary["overhead"]["cells"] == 12
    import os

    placed = {tuple(json.loads(p.read_text())["placement"]["cpus"]) for p in (parallel / "cells").glob("*.json")
              if not p.name.endswith(".identity.json")}
    cpus = sorted(os.sched_getaffinity(0))
    assert len(placed) == min(2, len(cpus)) and sorted(c for share in placed for c in share) == cpus  # own cores each
    assert _frame(parallel) == _frame(out)  # same cells, same figures, apart from timings


def test_sweep_subsets_are_named_by_scores_and_dedup_and_never_overwrite_each_other(scored, tmp_path):
    """Two sweeps on one pool with other dedup runs get subsets of their own; the cell ids
    stay short (the tags are part of a cell's identity instead)."""
    from curate.dedup.run import DedupSettings, run_dedup
    from pipeline.sweep.spec import load_sweep
    from pipeline.sweep.subsets import make_subsets

    pool, eval_dir = scored
    pool = Path(shutil.copytree(pool, tmp_path / "pool"))
    run_dedup(pool, DedupSettings(scores="seed", method="exact", tag="exact+again"))
    first = load_sweep(sweep_file(tmp_path, pool, eval_dir, GRID))
    other = load_sweep(_with(sweep_file(tmp_path, pool, eval_dir, GRID, "o.yaml"), "dedup: exact", "dedup: exact+again"))
    assert first.cells[0].slice.subset == "sweep-top40.scores-seed.dedup-exact"
    assert other.cells[0].slice.subset == "sweep-top40.scores-seed.dedup-exact-again"
    assert first.cells[0].id == other.cells[0].id == "top40_micro-vit-32_clip_s32_s0"
    make_subsets(first, say=lambda line: None)
    made = (pool / "subsets" / "sweep-top40.scores-seed.dedup-exact.parquet").read_bytes()
    make_subsets(other, say=lambda line: None)
    assert (pool / "subsets" / "sweep-top40.scores-seed.dedup-exact.parquet").read_bytes() == made
    assert (pool / "subsets" / "sweep-top40.scores-seed.dedup-exact-again.parquet").is_file()


def test_a_recipe_arm_trains_on_the_subset_curate_filter_makes(scored, tmp_path):
    """A `{recipe: [...]}` data entry is made by curate's filter with the sweep's scores and
    dedup: the same uids as `curate filter --recipe` itself; a rerun reuses it; another
    parameter is another arm with its own subset."""
    from curate.filter.run import run_filter
    from pipeline.sweep.spec import load_sweep
    from pipeline.sweep.subsets import make_subsets

    pool, eval_dir = scored
    pool = Path(shutil.copytree(pool, tmp_path / "pool"))
    grid = GRID.replace("{top: [40%]}", "{recipe: [caption_rules, {clip_top: {fraction: 0.1}}]}")
    spec = load_sweep(sweep_file(tmp_path, pool, eval_dir, grid))
    arms = {cell.slice.label: cell.slice.subset for cell in spec.cells}
    assert arms == {"caption_rules": "sweep-caption_rules.scores-seed.dedup-exact",
                    "clip_top(fraction=0.1)": "sweep-clip_top-fraction-0.1.scores-seed.dedup-exact"}
    said: list[str] = []
    sizes, _ = make_subsets(spec, say=said.append)
    assert len(said) == 2
    for name, params in (("caption_rules", {}), ("clip_top", {"fraction": 0.1})):
        direct = run_filter(pool, f"direct-{name}", recipe=name, params=params, scores="seed", dedup="exact")
        made = pq.read_table(pool / "subsets" / f"{arms[f'{name}(fraction=0.1)' if params else name]}.parquet")
        want = pq.read_table(pool / "subsets" / f"direct-{name}.parquet")
        assert sorted(made.column("uid").to_pylist()) == sorted(want.column("uid").to_pylist())
        assert direct.count == sizes[arms[f"{name}(fraction=0.1)" if params else name]]
    assert sizes[arms["clip_top(fraction=0.1)"]] < sizes[arms["caption_rules"]]
    said.clear()
    make_subsets(spec, say=said.append)
    assert said == []  # made once, reused


def test_a_sweep_remakes_a_subset_whose_inputs_a_stage_rewrote(scored, tmp_path):
    """A subset made before its scores were rewritten (a rescoring, a reclustering) is stale:
    the next sweep remakes it from the new files instead of training on the old uids."""
    from curate.filter.run import run_filter
    from pipeline.sweep.spec import load_sweep
    from pipeline.sweep.subsets import make_subsets

    pool, eval_dir = scored
    pool = Path(shutil.copytree(pool, tmp_path / "pool"))
    spec = load_sweep(sweep_file(tmp_path, pool, eval_dir, GRID.replace("{top: [40%]}", "{recipe: [clip_top]}")))
    subset = pool / "subsets" / "sweep-clip_top.scores-seed.dedup-exact.parquet"
    make_subsets(spec, say=lambda line: None)
    before = sorted(pq.read_table(subset).column("uid").to_pylist())
    for path in sorted((pool / "scores" / "seed").glob("*.parquet")):  # a rescoring that ranks the other way
        table = pq.read_table(path)
        pq.write_table(table.set_column(table.schema.get_field_index("clip_score"), "clip_score",
                                        pc.negate(table.column("clip_score"))), path)
    said: list[str] = []
    make_subsets(spec, say=said.append)
    after = sorted(pq.read_table(subset).column("uid").to_pylist())
    run_filter(pool, "direct", recipe="clip_top", scores="seed", dedup="exact")
    assert len(said) == 1 and after != before
    assert after == sorted(pq.read_table(pool / "subsets" / "direct.parquet").column("uid").to_pylist())
    said.clear()
    make_subsets(spec, say=said.append)
    assert said == []  # nothing changed since: reused


def test_jobs_are_placed_on_their_own_gpu_or_their_own_cpus():
    from pipeline.sweep.executors import placements

    assert placements(2, [0, 1], 0) == [{"cuda_visible_devices": None, "cpus": [0]},
                                        {"cuda_visible_devices": None, "cpus": [1]}]
    assert [p["cpus"] for p in placements(3, list(range(8)), 0)] == [[0, 1], [2, 3, 4], [5, 6, 7]]
    assert [p["cpus"] for p in placements(4, [0, 1], 0)] == [[0], [0], [1], [1]]  # more jobs than cores: shared
    assert [p["cuda_visible_devices"] for p in placements(3, [0, 1], 2)] == ["0", "1", "0"]


def test_a_cell_judged_on_another_suite_is_another_cell():
    from pipeline.sweep.identity import cell_identity, identity_changes

    config = {"model": "micro-vit-32", "lr": 0.01, "out": "runs/a", "threads": 1}
    same = cell_identity(config, "seed", "exact", "d1", "/suites/demo")
    assert identity_changes(same, cell_identity({**config, "out": "runs/b", "threads": 2}, "seed", "exact", "d1",
                                                "/suites/demo")) == []
    assert identity_changes(same, cell_identity(config, "seed", "exact", "d1", "/suites/other")) == [
        "eval_suite: '/suites/demo' -> '/suites/other'"]


def _with(path: Path, old: str, new: str) -> Path:
    path.write_text(path.read_text().replace(old, new, 1))
    return path


def test_a_changed_cell_runs_again_and_an_unchanged_one_is_skipped(scored, tmp_path):
    """A cell's identity covers its train options and its subset's content: a rerun with
    either changed runs the cell again (never the old figures beside the new config); a
    rerun with nothing changed skips it."""
    from curate.filter.run import run_filter
    from pipeline.sweep.run import SweepOptions, run_sweep
    from pipeline.sweep.spec import load_sweep

    pool, eval_dir = scored
    pool = Path(shutil.copytree(pool, tmp_path / "pool"))
    run_filter(pool, "mine", top="40%", scores="seed", dedup="exact")
    path = sweep_file(tmp_path, pool, eval_dir, GRID.replace("{top: [40%]}", "{subset: [mine]}"))
    out, said = tmp_path / "out", []

    def sweep() -> tuple[dict, dict]:
        said.clear()
        summary = run_sweep(load_sweep(path), out, SweepOptions(say=said.append))
        return summary, pq.read_table(out / "results.parquet").to_pylist()[0]

    summary, first = sweep()
    assert summary["ran"] == 1 and first["cfg_lr"] == 0.01
    summary, same = sweep()
    assert summary["skipped"] == 1 and summary["ran"] == 0 and same["final_loss"] == first["final_loss"]
    _with(path, "lr: 0.01", "lr: 0.02")
    summary, changed = sweep()
    assert summary["ran"] == 1 and summary["skipped"] == 0 and changed["cfg_lr"] == 0.02
    assert any("changed since it ran (train.lr: 0.01 -> 0.02)" in line for line in said)
    assert yaml_config(Path(changed["run_dir"]))["lr"] == 0.02 and changed["final_loss"] != first["final_loss"]
    run_filter(pool, "mine", top="60%", scores="seed", dedup="exact", overwrite=True)  # same name, other uids
    summary, resized = sweep()
    assert summary["ran"] == 1 and resized["slice_size"] > changed["slice_size"]
    assert any("subset_uids:" in line for line in said) and resized["final_loss"] != changed["final_loss"]


def yaml_config(run_dir: Path) -> dict:
    import yaml

    return yaml.safe_load((run_dir / "config.yaml").read_text())


def test_a_cell_handed_its_step_flops_trains_the_same_weights_as_a_run_that_measures_them(scored, tmp_path):
    """What the sweep saves per cell (the step FLOP measurement) changes nothing else: the
    same budget plan, config.yaml figures and final weights, bit for bit."""
    import torch
    import yaml

    from pipeline.sweep.cost import measure_step_cost
    from train.config import TrainConfig
    from train.loop import run_training

    pool, eval_dir = scored
    fields = dict(batch_size=16, lr=0.01, workers=0, threads=1, unmasked_fraction=0.5)
    main, tail = measure_step_cost("micro-vit-32", "flip", fields)
    assert 0 < main < tail  # patch drop makes a step cheaper
    common = dict(data=str(pool), model="micro-vit-32", strategy="flip", budget=f"{10 * tail}", progress=False, **fields)
    measured = run_training(TrainConfig(out=str(tmp_path / "measured"), **common))
    handed = run_training(TrainConfig(out=str(tmp_path / "handed"), flops_per_step=main, flops_per_step_unmasked=tail,
                                      **common))
    assert handed["flops_per_step"] == measured["flops_per_step"] == main
    assert (handed["step"], handed["flops"]) == (measured["step"], measured["flops"])
    configs = [yaml.safe_load((tmp_path / name / "config.yaml").read_text()) for name in ("measured", "handed")]
    assert [(c["flops_per_step"], c["flops_per_step_unmasked"], c["total_steps"]) for c in configs] == [
        (main, tail, configs[0]["total_steps"])] * 2
    weights = [torch.load(tmp_path / name / "final.pt", weights_only=True)["state_dict"] for name in ("measured", "handed")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

    from clikit.errors import UserError

    with pytest.raises(UserError, match="also needs flops_per_step_unmasked"):  # the tail would be priced as main
        run_training(TrainConfig(out=str(tmp_path / "half"), flops_per_step=main, **common))
    assert not (tmp_path / "half").exists()


def test_sigkilled_sweep_resumes_finished_cells_skipped_half_cell_from_checkpoint(scored, tmp_path):
    from pipeline.sweep.run import SweepOptions, run_sweep
    from pipeline.sweep.spec import load_sweep

    pool, eval_dir = scored
    grid = GRID.replace("{samples: [32]}", "{samples: [160, 1920]}").replace("[{top: [40%]}]", "[{top: [100%]}]")
    path = sweep_file(tmp_path, pool, eval_dir, grid)
    out = tmp_path / "killed"
    spec = load_sweep(path)
    small, big = (c.id for c in spec.cells)
    proc = subprocess.Popen([sys.executable, "-m", "train", "sweep", str(path), "--out", str(out), "--no-report"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:  # kill once the first cell is done and the second has a checkpoint
        if (out / "cells" / f"{small}.json").exists() and list((out / "runs" / big / "checkpoints").glob("step_*.pt")):
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "runs" / big / "final.pt").exists(), "the second cell finished before the kill"
    record = (out / "cells" / f"{small}.json").stat().st_mtime_ns
    summary = run_sweep(load_sweep(path), out, SweepOptions(say=lambda line: None))
    assert summary["skipped"] == 1 and summary["ran"] == 1 and summary["ok"] == 2
    assert (out / "cells" / f"{small}.json").stat().st_mtime_ns == record
    resumed = json.loads((out / "cells" / f"{big}.json").read_text())
    assert resumed["status"] == "ok" and resumed["resumed"] is True
    rows = {r["cell"]: r for r in pq.read_table(out / "results.parquet").to_pylist()}
    assert rows[big]["steps"] == 1920 // 16 and rows[big]["samples_seen"] == 1920
    steps = [json.loads(line)["step"] for line in (out / "runs" / big / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # resumed from its checkpoint: no step logged twice


def test_ray_cluster_runs_cells_and_a_failing_cell_is_recorded(scored, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    import ray

    from clikit.errors import UserError
    from engines import RAY_ENV, ray_head
    from pipeline.sweep.executors import check_every_node_sees
    from pipeline.sweep.run import SweepOptions, run_sweep
    from pipeline.sweep.spec import load_sweep

    pool, eval_dir = scored
    grid = GRID.replace("[{top: [40%]}]", "[{top: [40%, 100%]}, {subset: [broken]}]")
    path = sweep_file(tmp_path, pool, eval_dir, grid)
    for name, value in RAY_ENV.items():  # the driver (this process) joins without a token too
        monkeypatch.setenv(name, value)
    with ray_head() as head:
        try:
            summary = run_sweep(load_sweep(path), tmp_path / "ray",
                                SweepOptions(executor="ray", address=head.address, say=lambda line: None))
            # a folder some node cannot see is one line before any cell (here: one that exists nowhere)
            with pytest.raises(UserError, match=r"--executor ray: node \S+ cannot see /no/such/out"):
                check_every_node_sees([str(tmp_path), "/no/such/out"])
        finally:
            ray.shutdown()
    rows = {r["slice"]: r for r in pq.read_table(tmp_path / "ray" / "results.parquet").to_pylist()}
    assert rows["top 40%"]["status"] == rows["top 100%"]["status"] == "ok"
    assert rows["subset broken"]["status"] == "failed" and rows["subset broken"]["error"]
    assert rows["top 100%"]["zeroshot_top1"] is not None and rows["subset broken"]["zeroshot_top1"] is None
    assert summary["failed"] == 1 and summary["ok"] == 2


def test_cells_are_judged_on_the_eval_suite_and_the_report_on_its_average(scored, demo_dir, tmp_path):
    """A sweep with `eval_suite:` (a small demo suite): results.parquet keeps each task's
    headline with its interval and chance, and the suite's average, equal to what the cell's
    RUN/evals/SUITE.json says; the old eval folder's figures stay beside them. The report
    judges the average by default and any task or column with --metric; a name no cell has
    is one line, exit 2. A pool downloaded from a demo pool with a demo suite gets it by
    default; a suite folder that is not one fails at load, naming the key."""
    from statistics import fmean

    from clikit.errors import UserError
    from curate.eval_suite.demo import build_demo_suite, demo_suite_dir
    from pipeline.report import write_report
    from pipeline.sweep.cell import suite_figures
    from pipeline.sweep.run import SweepOptions, run_sweep
    from pipeline.sweep.spec import load_sweep

    pool, eval_dir = scored
    suite = tmp_path / "suite"
    build_demo_suite(suite, demo_dir, images=24)
    path = sweep_file(tmp_path, pool, eval_dir, GRID.replace("[40%]", "[40%, 100%]"))
    path.write_text(path.read_text().replace("train:", f"eval_suite: {suite}\ntrain:"))
    out = tmp_path / "out"
    summary = run_sweep(load_sweep(path), out, SweepOptions(say=lambda line: None))
    assert summary["ok"] == 2
    rows = pq.read_table(out / "results.parquet").to_pylist()
    tasks = sorted(p.name for p in suite.iterdir() if p.is_dir())
    assert len(tasks) == 5
    for r in rows:
        saved = json.loads((Path(r["run_dir"]) / "evals" / "suite.json").read_text())
        for task in tasks:
            figure = saved["tasks"][task]
            assert r[f"suite_{task}"] == figure["metrics"]["main_metric"]
            assert [r[f"suite_{task}_lo"], r[f"suite_{task}_hi"]] == figure["ci95"]["main_metric"]
            assert r[f"suite_{task}_lo"] <= r[f"suite_{task}"] <= r[f"suite_{task}_hi"]
            assert r[f"suite_{task}_chance"] == figure["chance"]
        assert r["suite_average"] == pytest.approx(fmean(r[f"suite_{t}"] for t in tasks))
        assert [r["suite_average_lo"], r["suite_average_hi"]] == saved["average"]["ci95"]
        assert r["zeroshot_top1"] is not None  # the old eval folder still evaluated
        assert r["eval_s"] > saved["eval_s"]  # the suite's time counts as the cell's eval, not overhead
        assert r["run_s"] - r["train_s"] - r["eval_s"] > 0  # the run's setup: the suite's eval is inside run_s
    stamp = (Path(rows[0]["run_dir"]) / "evals" / "suite.json").stat().st_mtime_ns
    again, _ = suite_figures(Path(rows[0]["run_dir"]), suite)  # a resumed cell reads it back
    assert again["average"]["value"] == rows[0]["suite_average"]
    assert (Path(rows[0]["run_dir"]) / "evals" / "suite.json").stat().st_mtime_ns == stamp

    assert write_report(out)["metric"] == "suite_average"
    assert "Metric: suite average (`suite_average`" in (out / "report.md").read_text()
    assert write_report(out, "shapes-colour")["metric"] == "suite_shapes-colour"
    assert write_report(out, "zeroshot_top1")["metric"] == "zeroshot_top1"
    bad = subprocess.run([sys.executable, "-m", "train", "report", str(out), "--metric", "nope"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--metric nope: no cell" in bad.stderr

    # The default: the demo suite of the demo pool this pool was downloaded from.
    linked = tmp_path / "linked-pool"
    linked.mkdir()
    for child in pool.iterdir():
        if child.name != "pool.json":
            (linked / child.name).symlink_to(child)
    demo = tmp_path / "demo"
    record = json.loads((pool / "pool.json").read_text())
    (linked / "pool.json").write_text(json.dumps({**record, "source": [str(demo / "metadata.parquet")]}))
    plain = sweep_file(tmp_path, linked, eval_dir, GRID, name="plain.yaml")
    assert load_sweep(plain).eval_suite is None  # no demo suite there yet
    shutil.copytree(suite, demo_suite_dir(demo))
    assert load_sweep(plain).eval_suite == demo_suite_dir(demo).resolve()
    (demo_suite_dir(demo) / "average").mkdir()  # its columns would be the suite average's
    with pytest.raises(UserError, match=r":1: eval_suite: .*rename its task folder 'average'"):
        load_sweep(plain)
    with pytest.raises(UserError, match=r":6: eval_suite: --suite .*eval: no such directory"):
        load_sweep(path, eval_suite=str(tmp_path / "eval"))
