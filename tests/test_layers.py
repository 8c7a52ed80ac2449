"""The house rule, run with the tests: import-linter's contracts in pyproject.toml hold, and
they fail when someone breaks them (a forbidden import added to a copy of the tree)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("clikit", "shards", "queries", "zoo", "curate", "train", "pipeline")


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([shutil.which("lint-imports") or "lint-imports", "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=300)


def test_contracts_hold_on_the_tree():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def _copy_tree(target: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", target / "pyproject.toml")
    return target


@pytest.mark.parametrize("module, line, broken", [
    ("curate/pool_report.py", "from train.budget import format_flops", "curate.pool_report -> train.budget"),
    ("train/data.py", "import curate.catalog", "train.data -> curate.catalog"),
    ("zoo/models.py", "import curate.catalog", "zoo.models -> curate.catalog"),  # the zoo sits below the stages
    ("shards/uid.py", "import pipeline.quickstart", "shards.uid -> pipeline.quickstart"),
])
def test_a_forbidden_import_breaks_the_run(tmp_path, module, line, broken):
    tree = _copy_tree(tmp_path)
    with open(tree / module, "a", encoding="utf-8") as handle:
        handle.write(f"\n{line}  # forbidden\n")
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout[-3000:]
    assert broken in result.stdout and "BROKEN" in result.stdout


def _layout_section() -> str:
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    return text.split("## Layout\n", 1)[1].split("\n## ", 1)[0]


def _unlisted(section: str) -> list[str]:
    sources = [p for name in PACKAGES for p in sorted((ROOT / name).rglob("*"))
               if p.suffix in (".py", ".sql", ".yaml") and p.name != "__main__.py" and "__pycache__" not in p.parts]
    return [str(p.relative_to(ROOT)) for p in sources if f"    {p.relative_to(ROOT)} " not in section]


def test_design_layout_lists_every_source_file():
    assert _unlisted(_layout_section()) == []
    # and the check would notice a file the page leaves out
    assert _unlisted(_layout_section().replace("    shards/uid.py ", "    shards/uid-gone.py ")) == ["shards/uid.py"]
