"""Inputs that expand (clikit.bounded): a billion-laughs or deeply nested sweep file, a grid
whose cells explode, a parquet/CSV/JSON-lines URL list whose header or nesting is huge, each
fails through the real CLI in one line with exit 2, and the failure itself takes under a
second (timed in-process; the CLI's bound is generous, since starting `train` takes seconds on
2 shared cores, and a file that expands runs for minutes or crashes)."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clikit.bounded import GRID_CELLS, TABLE_COLUMNS, check_csv_header, check_json_lines, check_parquet
from clikit.errors import UserError
from pipeline.sweep.spec import load_sweep
from zoo.models import hf_text_cfg

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
CLI_SECONDS = 45  # generous: interpreter and imports on a loaded machine; the unbounded files take minutes
FAIL_SECONDS = 1.0  # the failure itself, measured in-process


def refused(argv: list[str], *expected: str) -> str:
    """The CLI's one stderr line for `argv`: exit 2, each of `expected` in it, within CLI_SECONDS."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, cwd=ROOT, env=ENV,
                            timeout=CLI_SECONDS)
    elapsed = time.monotonic() - started
    line = result.stderr.strip()
    assert result.returncode == 2, result.stderr[-2000:]
    assert line.count("\n") == 0 and all(e in line for e in expected), line
    assert elapsed < CLI_SECONDS
    return line


def fails_fast(call, *args, match: str) -> None:
    """call(*args) raises a UserError matching `match` within FAIL_SECONDS."""
    started = time.monotonic()
    with pytest.raises(UserError, match=match):
        call(*args)
    assert time.monotonic() - started < FAIL_SECONDS


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    """Enough of a pool for a sweep file to name (its pool.json); no cell ever runs."""
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "pool.json").write_text("{}")
    return tmp_path / "pool"


def billion_laughs(levels: int = 9) -> str:
    """An anchor repeated 9 times at each of `levels` levels: 9**levels nodes once walked."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


SWEEPS = {
    "billion laughs": (lambda pool: f"pool: {pool}\n" + billion_laughs() + f"experiments: {{e: {{seeds: *l9}}}}\n",
                       "YAML nodes (an alias counts as all it repeats)"),
    "deep nesting": (lambda pool: f"pool: {pool}\nexperiments: {{e: {{seeds: {'[' * 50_000}0{']' * 50_000}}}}}\n",
                     ":2: nesting depth: over the limit of 64; flatten the file"),
    "recursive alias": (lambda pool: f"pool: {pool}\nloop: &a [1, *a]\n", "a recursive alias"),
    "huge grid": (lambda pool: f"pool: {pool}\nexperiments:\n  e:\n    seeds: [{', '.join(map(str, range(200)))}]\n"
                               f"    budgets: {{samples: [{', '.join(str(32 + i) for i in range(60))}]}}\n",
                  f":2: cells the experiments' grids make: 12,000, over the limit of {GRID_CELLS:,}"),
}


@pytest.mark.parametrize("case", SWEEPS)
def test_a_sweep_file_that_expands_fails_in_one_line_within_a_second(case, pool, tmp_path):
    text, expected = SWEEPS[case]
    path = tmp_path / "expands.yaml"
    path.write_text(text(pool))
    refused(["train", "sweep", str(path), "--out", str(tmp_path / "out")], str(path), expected)  # first: it times out
    fails_fast(load_sweep, path, match=expected.replace("(", r"\(").replace(")", r"\)"))
    assert not (tmp_path / "out").exists()


def test_a_grid_at_the_limit_passes_the_bound(pool, tmp_path):
    """The other side: 2 x 100 x 50 = GRID_CELLS cells pass the count and reach the next
    check (a share outside (0, 100%], found before any cell is made)."""
    path = tmp_path / "big.yaml"
    path.write_text(f"pool: {pool}\nexperiments:\n  e:\n    data: {{top: [40%, 140%]}}\n"
                    f"    seeds: [{', '.join(map(str, range(100)))}]\n"
                    f"    budgets: {{samples: [{', '.join(str(32 + i) for i in range(50))}]}}\n")
    assert 2 * 100 * 50 == GRID_CELLS
    fails_fast(load_sweep, path, match=r"top\.1: 140% is outside")


def test_a_plan_or_run_config_that_expands_is_refused(tmp_path):
    from train.weak_to_strong import read_plan

    path = tmp_path / "plan.yaml"
    path.write_text(billion_laughs() + "stages: [*l9]\n")
    fails_fast(read_plan, path, match=r"YAML nodes .* over the limit of 20,000")


def wide_parquet(path: Path, columns: int) -> Path:
    pq.write_table(pa.table({"URL": ["http://127.0.0.1/a.jpg"], "TEXT": ["a"],
                             **{f"c{i}": [i] for i in range(columns - 2)}}), path)
    return path


def forged_footer(path: Path, footer: int) -> Path:
    """A parquet file whose trailer declares a `footer`-byte footer (a reader would allocate it)."""
    path.write_bytes(b"PAR1" + b"\0" * 64 + struct.pack("<I", footer) + b"PAR1")
    return path


def wide_csv(path: Path, columns: int) -> Path:
    path.write_text(",".join(f"c{i}" for i in range(columns)) + "\n" + ",".join("1" * columns) + "\n")
    return path


def deep_json_lines(path: Path, depth: int) -> Path:
    """JSON lines whose third row nests `depth` objects (pyarrow's reader dies at ~20,000)."""
    row = '{"URL": "http://127.0.0.1/a.jpg", "TEXT": "a [[{{ \\" ]]", "x": '
    path.write_text(row + '1}\n' + row + '2}\n' + row + '{"a": ' * depth + "1" + "}" * depth + "}\n")
    return path


INPUTS = {
    "parquet with many columns": (lambda p: wide_parquet(p / "wide.parquet", TABLE_COLUMNS + 500),
                                  check_parquet, f"columns: 1,500, over the limit of {TABLE_COLUMNS:,}"),
    "parquet footer of 1 GiB": (lambda p: forged_footer(p / "forged.parquet", 2**30), check_parquet,
                                "parquet footer in bytes: 1,073,741,824, over the limit of 16,777,216"),
    "csv header of 100,000 columns": (lambda p: wide_csv(p / "wide.csv", 100_000), lambda f: check_csv_header(f, ","),
                                      ":1: columns: 100,000, over the limit of 1,000"),
    "json lines nested 30,000 deep": (lambda p: deep_json_lines(p / "deep.jsonl", 30_000), check_json_lines,
                                      ":3: nesting depth: over the limit of 64"),
}


@pytest.mark.parametrize("case", INPUTS)
def test_a_url_list_that_expands_fails_in_one_line_within_a_second(case, tmp_path):
    make, check, expected = INPUTS[case]
    path = make(tmp_path)
    line = refused(["curate", "download", str(path), str(tmp_path / "pool")], f"curate: error: {path}", expected)
    fails_fast(check, path, match=expected.replace("(", r"\(").replace(")", r"\)"))
    assert line.endswith(("drop the rest", "row groups", "flatten the nested values"))
    assert not (tmp_path / "pool").exists()


def test_json_lines_just_under_the_limits_read_and_brackets_in_strings_do_not_count(tmp_path):
    check_json_lines(deep_json_lines(tmp_path / "ok.jsonl", 60))
    check_json_lines(deep_json_lines(tmp_path / "ok.jsonl", 60), 7)  # chunks that split strings and escapes
    with pytest.raises(UserError, match=":3: nesting depth"):
        check_json_lines(deep_json_lines(tmp_path / "deep.jsonl", 64), 5)
    check_parquet(wide_parquet(tmp_path / "ok.parquet", TABLE_COLUMNS))


def test_an_init_text_config_nested_deep_is_refused(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"a": 1}))
    assert hf_text_cfg(folder, 77, False)["hf_model_name"] == str(folder.resolve())
    for depth in (200, 100_000):  # json parses the first and hits its recursion limit on the second
        (folder / "config.json").write_text('{"a": ' + "[" * depth + "]" * depth + "}")
        fails_fast(hf_text_cfg, folder, 77, False, match="config.json: nesting depth: over the limit of 64")
