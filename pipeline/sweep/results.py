"""DIR/results.parquet: one row per cell: the grid point, every TrainConfig field, measured
FLOPs, samples seen, epochs over its slice, timings, status and every eval figure: the eval
folder's, and with an eval suite each task's headline as suite_<task> and the suite's
average as suite_average, each with its bootstrap 95% interval (_lo, _hi) and chance (_chance)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from clikit.errors import UserError
from shards.atomic import replacing
from train.config import TrainConfig

SUITE_PREFIX = "suite_"  # suite_<task> (each task's headline), suite_average

# Eval figures always present as columns (NaN when a cell has no such eval), in this order.
EVAL_KEYS = ("zeroshot_top1", "zeroshot_top5", "zeroshot_chance_top1", "zeroshot_classes", "zeroshot_images",
             "image_to_text_R@1", "image_to_text_R@5", "image_to_text_R@10",
             "text_to_image_R@1", "text_to_image_R@5", "text_to_image_R@10", "retrieval_pairs")
# Columns that differ between two runs of the same sweep (everything else must not).
# overhead_s is a cell's wall time outside its training steps and its eval (the eval is the
# cell's own work: encoding the eval set with the model it trained).
TIMING_COLUMNS = ("wall_s", "run_s", "train_s", "eval_s", "overhead_s", "overhead_pct", "resumed")


def cell_row(cell, result: dict[str, Any], experiments: list[str], slice_size: int, config: dict[str, Any],
             flops_per_step: int, planned_steps: int) -> dict[str, Any]:
    """The results row of one finished (or failed) cell."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    summary = result.get("summary") or {}
    sl = cell.slice
    row: dict[str, Any] = {
        "cell": cell.id, "experiment": ",".join(experiments), "status": result["status"], "error": result.get("error"),
        "run_dir": config["out"], "slice": sl.label, "slice_kind": sl.kind, "slice_fraction": sl.fraction,
        "slice_subset": sl.subset, "slice_size": slice_size, "slice_recipe": sl.recipe,
        "slice_params": json.dumps(dict(sl.params)) if sl.recipe else None,
        "sample_size": sl.size, "sample_seed": sl.seed if sl.kind == "random" else None,
        "strategy_label": cell.strategy_label, "budget_kind": cell.budget_kind, "budget_value": float(cell.budget),
        "planned_steps": planned_steps, "planned_flops_per_step": flops_per_step,
    }
    for name in names:  # every config field, stringified when it is not a plain scalar
        value = config.get(name)
        row[f"cfg_{name}"] = value if isinstance(value, (int, float, str, bool)) or value is None else json.dumps(value)
    samples = summary.get("samples")
    row.update({
        "flops": float(summary["flops"]) if "flops" in summary else None,
        "flops_per_step": summary.get("flops_per_step"),
        "steps": summary.get("step"),
        "samples_seen": samples,
        "epochs": samples / slice_size if samples is not None and slice_size else None,
        "final_loss": summary.get("loss"),
        "skipped_samples": summary.get("skipped"),
    })
    for key in EVAL_KEYS:
        value = summary.get(key)
        row[key] = float(value) if value is not None else None
    row.update(suite_columns(result.get("suite") or {}))
    wall, train, evaluating = result.get("wall_s", 0.0), result.get("train_s", 0.0), result.get("eval_s") or 0.0
    overhead = wall - train - evaluating
    row.update({"wall_s": wall, "run_s": result.get("run_s"), "train_s": train, "eval_s": result.get("eval_s"),
                "overhead_s": overhead, "overhead_pct": 100 * overhead / train if train else None,
                "resumed": bool(result.get("resumed"))})
    return row


def suite_columns(suite: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """suite_<task>, its _lo, _hi and _chance, for each task and the average (pipeline.sweep.cell.suite_figures)."""
    out: dict[str, float | None] = {}
    for name, figure in suite.items():
        column = SUITE_PREFIX + name
        low, high = figure["ci95"]
        out.update({column: figure["value"], f"{column}_lo": low, f"{column}_hi": high, f"{column}_chance": figure["chance"]})
    return out


def write_results(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> Path:
    """Write DIR/results.parquet atomically (rows sorted by cell id: the same file on every run)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = sorted(rows, key=lambda r: r["cell"])
    columns: dict[str, list] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, [])
    table = pa.table({k: [r.get(k) for r in rows] for k in columns}) if rows else pa.table({"cell": pa.array([], pa.string())})
    # not sort_keys: the experiments keep the sweep file's order
    table = table.replace_schema_metadata({"clipcurate_sweep": json.dumps(meta)})
    path = out / "results.parquet"
    with replacing(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_results(out: str | Path) -> tuple[Any, dict[str, Any]]:
    """(rows as dicts, sweep metadata) of DIR/results.parquet."""
    import pyarrow.parquet as pq

    path = Path(out) / "results.parquet"
    if not path.is_file():
        raise UserError(f"{path} not found; run `train sweep SWEEP.yaml --out {out}` first")
    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(b"clipcurate_sweep", b"{}"))
    return table.to_pylist(), meta
