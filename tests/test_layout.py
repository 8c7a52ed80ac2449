"""shards.layout.RunDir: the run folder's names, its checkpoint order and its 'finished' test."""
from __future__ import annotations

from pathlib import Path

from shards.layout import RunDir
from zoo.checkpoint import resolve_checkpoint


def test_checkpoints_are_ordered_by_step_number_and_other_files_ignored(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.checkpoints() == []  # no checkpoints/ folder yet: nothing, and nothing created
    assert not run.checkpoints_dir.exists()
    run.checkpoints_dir.mkdir()
    # A short name that sorts after a long one as text: order is by number.
    for name in ("step_00000100.pt", "step_9.pt", "step_00000020.pt", "notes.txt", "step_x.pt",
                 ".step_00000200.pt.partial"):
        (run.checkpoints_dir / name).write_bytes(b"")
    assert [p.name for p in run.checkpoints()] == ["step_9.pt", "step_00000020.pt", "step_00000100.pt"]
    assert run.checkpoint(40) == tmp_path / "checkpoints" / "step_00000040.pt"
    run.checkpoint(40).write_bytes(b"")
    assert run.checkpoints()[-1] == run.checkpoints_dir / "step_00000100.pt"
    # resolve_checkpoint takes the newest step when there is no final.pt, then final.pt.
    assert resolve_checkpoint(tmp_path) == run.checkpoints_dir / "step_00000100.pt"
    run.final_pt.write_bytes(b"")
    assert resolve_checkpoint(tmp_path) == run.final_pt


def test_finished_needs_both_final_pt_and_summary_json(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    assert not run.finished and not run.is_run()
    run.root.mkdir()
    run.final_pt.write_bytes(b"")
    assert not run.finished and run.is_run()  # killed between final.pt and summary.json
    run.final_pt.unlink()
    run.summary_json.write_text("{}")
    assert not run.finished
    run.final_pt.write_bytes(b"")
    assert run.finished


def test_the_run_a_checkpoint_belongs_to(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "runs" / "a")
    assert RunDir.of_checkpoint(run.checkpoint(8)) == run
    assert RunDir.of_checkpoint(run.final_pt) == run
    assert RunDir.of_checkpoint(tmp_path / "elsewhere.pt").root == tmp_path
    assert RunDir.of_checkpoint(run.final_pt).suite_eval("mini") == tmp_path / "runs" / "a" / "evals" / "mini.json"


def test_names_are_the_documented_files(tmp_path: Path) -> None:
    run = RunDir(str(tmp_path))  # a string is accepted
    names = {p.relative_to(tmp_path).as_posix() for p in (
        run.config_yaml, run.metrics_jsonl, run.evals_jsonl, run.eval_json, run.init_json, run.summary_json,
        run.final_pt, run.checkpoints_dir, run.evals_dir)}
    assert names == {"config.yaml", "metrics.jsonl", "evals.jsonl", "eval.json", "init.json", "summary.json",
                     "final.pt", "checkpoints", "evals"}
    assert list(tmp_path.iterdir()) == []  # naming creates nothing
