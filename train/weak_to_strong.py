"""The weak-to-strong loop (EVA-CLIP-18B): a small CLIP teaches (MIM) a bigger EVA tower,
which initialises a bigger CLIP, and so on, as one resumable plan.

A plan is a YAML file:

    data: POOL              # every stage's --data (a stage may override it)
    eval: POOL/../eval      # zero-shot folder for the CLIP stages
    seed: 0
    defaults: {batch_size: 64, workers: 1, checkpoint_every: 20}
    stages:
      - {name: small, kind: clip, model: tiny-vit-32, budget: 2e13}
      - {name: mim, kind: mim, teacher: small, model: small-eva02-32, budget: 1e13}
      - {name: big, kind: clip, model: small-eva02-32, init_image: mim, budget: 2e13}

A stage's keys are `train run` (kind clip) or `train mim` (kind mim) options by their
Python names; `teacher`, `init_image` and `init_text` may name an earlier stage of the same
seed. Stage NAME of seed S runs in OUT/seedS/NAME (S: --seed, else the plan's seed), so runs
with other seeds never share a stage: a finished stage (summary.json) is reused only when its
config.yaml agrees with the plan on every field that changes what it trains (else a one-line
refusal), one with checkpoints is resumed exactly, any other starts fresh. OUT/table.json
and the printed table give each stage's seed, FLOPs, samples and zero-shot results."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from clikit.bounded import load_yaml
from clikit.errors import UserError
from shards.atomic import write_json_atomic
from shards.layout import RunDir
from train.budget import format_flops
from train.config import TrainConfig
from train.loop import run_training
from train.mim import MimConfig, run_mim
from train.state import changed_run_fields


@dataclass(frozen=True)
class StageKind:
    """What a stage's `kind:` stands for."""

    config: type[TrainConfig]  # the stage's options
    run: Callable[[Any], dict[str, Any]]  # trains it; returns its summary
    evaluates: bool  # the plan's `eval:` folder is its eval_dir (a MIM stage has no zero-shot eval)


STAGE_KINDS = {
    "clip": StageKind(TrainConfig, run_training, evaluates=True),
    "mim": StageKind(MimConfig, run_mim, evaluates=False),
}
KINDS = tuple(STAGE_KINDS)
_STAGE_REFS = ("teacher", "init_image", "init_text")


def read_plan(path: str | Path) -> dict[str, Any]:
    """The plan as a dict, checked: stages with unique names, known kinds and keys."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"plan {path} does not exist; write a YAML plan (see `train weak-to-strong --help`)")
    try:
        plan = load_yaml(path)  # bounded: size, depth, aliases
    except yaml.YAMLError as exc:
        raise UserError(f"plan {path} is not valid YAML ({str(exc).splitlines()[0]})") from exc
    stages = plan.get("stages") if isinstance(plan, dict) else None
    if not stages or not isinstance(stages, list):
        raise UserError(f"plan {path} has no `stages:` list")
    names = [s.get("name") if isinstance(s, dict) else None for s in stages]
    if None in names or len(set(names)) != len(names):
        raise UserError(f"plan {path}: every stage needs a unique `name:` (got {names})")
    for stage in stages:
        if stage.get("kind") not in KINDS:
            raise UserError(f"plan {path}: stage {stage['name']!r} has kind {stage.get('kind')!r}; use one of {KINDS}")
    return plan


def stage_root(plan: dict[str, Any], out: Path, seed: int | None) -> Path:
    """OUT/seedS: the folder of one seed's stages (S: `seed`, else the plan's)."""
    return out / f"seed{seed if seed is not None else plan.get('seed', 0)}"


def stage_config(plan: dict[str, Any], stage: dict[str, Any], out: Path, seed: int | None):
    """The TrainConfig (clip) or MimConfig (mim) of one stage, in OUT/seedS/NAME, earlier
    stages' names resolved to their folders of the same seed."""
    kind = STAGE_KINDS[stage["kind"]]
    names = {s["name"] for s in plan["stages"]}
    root = stage_root(plan, out, seed)
    opts = dict(plan.get("defaults") or {})
    opts.update({k: v for k, v in stage.items() if k not in ("name", "kind")})
    for key in _STAGE_REFS:
        if isinstance(opts.get(key), str) and opts[key] in names:
            opts[key] = str(root / opts[key])
    opts.setdefault("data", plan.get("data"))
    opts.setdefault("seed", plan.get("seed", 0))
    if seed is not None:
        opts["seed"] = seed
    if kind.evaluates and plan.get("eval"):
        opts.setdefault("eval_dir", plan["eval"])
    for key in ("budget", "samples"):
        if opts.get(key) is not None:
            opts[key] = str(opts[key])
    fields = {f.name for f in dataclasses.fields(kind.config)}
    unknown = sorted(set(opts) - fields)
    if unknown:
        raise UserError(f"stage {stage['name']!r}: unknown option(s) {', '.join(unknown)} for a {stage['kind']} stage")
    if not opts.get("data"):
        raise UserError(f"stage {stage['name']!r} has no data; give `data:` in the plan or the stage")
    return kind.config(out=str(root / stage["name"]), **opts)


def run_plan(plan_path: str | Path, out: str | Path, seed: int | None = None, progress: bool = True) -> list[dict]:
    """Run (or resume, or reuse) every stage in order; returns and writes the table rows."""
    plan = read_plan(plan_path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for stage in plan["stages"]:
        cfg = stage_config(plan, stage, out, seed)
        cfg.progress = progress
        run = RunDir(cfg.out)
        if run.summary_json.is_file():
            _check_reusable(stage["name"], run, cfg)
            summary = json.loads(run.summary_json.read_text())
        else:
            cfg.resume = bool(run.checkpoints())
            summary = STAGE_KINDS[stage["kind"]].run(cfg)
        rows.append(_row(stage, cfg, summary))
        write_json_atomic(out / "table.json", rows)
    return rows


def _check_reusable(name: str, run: RunDir, cfg: Any) -> None:
    """A finished stage stands for this plan only when it was trained with what the plan now
    asks (seed, options, earlier stages); else one line naming the difference."""
    import yaml

    saved = yaml.safe_load(run.config_yaml.read_text()) if run.config_yaml.is_file() else {}
    changed = changed_run_fields(saved or {}, cfg.to_dict())
    if changed:
        was = ", ".join(f"{k}={(saved or {}).get(k)!r}" for k in changed)
        now = ", ".join(f"{k}={getattr(cfg, k, None)!r}" for k in changed)
        raise UserError(f"stage {name!r} in {run.root} was trained with {was}, the plan now gives {now}; "
                        "remove that folder to train it again, or use another --out")


def _row(stage: dict[str, Any], cfg: Any, summary: dict[str, Any]) -> dict[str, Any]:
    init = getattr(cfg, "teacher", "") or cfg.init_image or ""
    sources = [Path(init).name] if init else []
    if cfg.init_text:  # both arms of a control may share a text init: show it, or they read alike
        sources.append(f"text:{Path(cfg.init_text).name}")
    return {"stage": stage["name"], "kind": stage["kind"], "model": cfg.model, "seed": cfg.seed,
            "from": " ".join(sources), "flops": summary.get("flops"), "samples": summary.get("samples"),
            "loss": summary.get("loss"), "zeroshot_top1": summary.get("zeroshot_top1"),
            "zeroshot_top5": summary.get("zeroshot_top5")}


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (FLOPs in short form, accuracies to 3 places)."""
    def cell(key: str, value: Any) -> str:
        if value is None or value == "":
            return "-"
        if key == "flops":
            return format_flops(float(value))
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    keys = ["stage", "kind", "model", "from", "seed", "flops", "samples", "loss", "zeroshot_top1", "zeroshot_top5"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(k, r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)
