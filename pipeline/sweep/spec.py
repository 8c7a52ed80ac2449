"""A sweep file read into cells: the grid over data, models, strategies, budgets and seeds.

Everything that can be wrong on its face fails here, before any cell runs, as one line
naming the file, line and key (pipeline.sweep.yamlpos): unknown keys, models, strategies,
subsets, tags, eval folders or eval suites, slices outside (0, 100%], duplicate cells."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clikit.bounded import GRID_CELLS, check_count
from clikit.errors import UserError
from curate.eval_suite import demo_suite_of_pool
from curate.filter.recipes import load_recipe
from pipeline.sweep.yamlpos import Located, load_located
from shards.layout import Pool
from shards.storage import StoragePath, as_path
from train.budget import parse_flops, parse_samples
from train.config import TrainConfig
from train.strategies import check_strategy
from zoo.models import check_model_name

TOP_KEYS = {"name", "pool", "scores", "dedup", "eval", "eval_suite", "retrieval", "train", "resources", "experiments",
            "quick"}
GRID_KEYS = {"data", "models", "strategies", "budgets", "seeds", "train"}
# Fields a cell sets itself; the sweep file may not override them through `train:`.
OWNED = {"data", "out", "model", "strategy", "subset", "budget", "samples", "seed", "eval_dir", "retrieval_data",
         "resume", "progress", "world_size"}
# Options a cell cannot honour: cells run as one process each, and FSDP needs torchrun's processes.
ONE_PROCESS = {"fsdp": "cells run as one process each, and --fsdp needs torchrun; train a sharded model with "
                       "`torchrun ... -m train run --fsdp` instead"}


@dataclass(frozen=True)
class Slice:
    """One data arm: a top slice, a seeded random sample of a top slice, a recipe's subset, or a named subset."""

    kind: str  # "top" | "random" | "recipe" | "subset"
    label: str  # "top 40%", "random 50% of top 100% (seed 0)", "basic", "clip_top(fraction=0.1)", "subset mine"
    subset: str  # the pool subset the cell trains on (a sweep's own: named by its scores and dedup)
    fraction: float | None = None  # top share of the scored pool (top, random's slice)
    size: float | None = None  # random: share (<= 1) or count (> 1) of its slice
    seed: int = 0  # random: the draw's seed
    key: str = ""  # the slice in cell ids ("top40"): the scores and dedup are in the cell's identity
    recipe: str | None = None  # recipe: its name (queries/NAME.sql)
    params: tuple[tuple[str, Any], ...] = ()  # recipe: the parameters the file sets, sorted


@dataclass(frozen=True)
class Cell:
    """One train run with its eval."""

    id: str
    experiment: str
    slice: Slice
    model: str
    strategy: str  # the strategy's name
    strategy_label: str  # name plus its options, e.g. "flip(patch_drop=0.75)"
    budget_kind: str  # "flops" | "samples"
    budget: float
    seed: int
    train: dict[str, Any]  # TrainConfig fields: the file's train: merged with the strategy's options


@dataclass
class Sweep:
    name: str
    file: Path
    pool: StoragePath  # a folder, or a URL (s3://BUCKET/POOL)
    scores: str | None
    dedup: str | None
    eval_dir: Path | None
    retrieval: str | None
    resources: dict[str, float]
    cells: list[Cell] = field(default_factory=list)
    experiments: dict[str, list[str]] = field(default_factory=dict)  # experiment -> cell ids
    eval_suite: Path | None = None  # the task folders every cell is judged on (train/suite)


def parse_percent(text: Any, where: tuple, doc: Located) -> float:
    """'40%' or 0.4 -> 0.4; UserError outside (0, 1]."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise doc.fail(where, f"{text!r} is not a share; write e.g. 40%") from None
    if not 0 < value <= 1:
        raise doc.fail(where, f"{text} is outside (0%, 100%]")
    return value


def _pct(value: float) -> str:
    return f"{value * 100:g}%"


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def subset_tags(scores: str | None, dedup: str | None) -> str:
    """The end of a sweep subset's name: the scores tag and dedup run it was chosen by
    (`.scores-seed.dedup-exact-phash-pixels`), so sweeps with others on one pool keep apart."""
    parts = [f"{what}-{name}" for what, name in (("scores", scores), ("dedup", dedup)) if name is not None]
    return "".join("." + re.sub(r"[^A-Za-z0-9_-]+", "-", part) for part in parts)


def _slices(entry: Any, where: tuple, doc: Located, tags: str) -> list[Slice]:
    """The slices of one data entry; a sweep's own subsets are named sweep-KEY plus `tags`."""
    if not isinstance(entry, dict) or len(set(entry) & {"top", "random", "recipe", "subset"}) != 1:
        raise doc.fail(where, "a data entry is {top: [..]}, {random: [..], of: 40%, seed: 0}, "
                              "{recipe: [NAME or {NAME: {param: value}}..]} or {subset: [NAME..]}")
    if "recipe" in entry:
        return [_recipe_slice(item, where + ("recipe", i), doc, tags) for i, item in enumerate(_as_list(entry["recipe"]))]
    if "top" in entry:
        out = []
        for i, item in enumerate(_as_list(entry["top"])):
            frac = parse_percent(item, where + ("top", i), doc)
            key = f"top{frac * 100:g}"
            out.append(Slice("top", f"top {_pct(frac)}", f"sweep-{key}{tags}", fraction=frac, key=key))
        return out
    if "subset" in entry:
        return [Slice("subset", f"subset {name}", str(name), key=str(name)) for name in _as_list(entry["subset"])]
    unknown = set(entry) - {"random", "of", "seed"}
    if unknown:
        raise doc.fail(where + (sorted(unknown)[0],), "unknown key; random takes of: and seed:")
    within = parse_percent(entry.get("of", "100%"), where + ("of",), doc)
    seed = int(entry.get("seed", 0))
    out = []
    for i, item in enumerate(_as_list(entry["random"])):
        if isinstance(item, int) or (isinstance(item, str) and item.isdigit()):
            size, text = float(item), f"{int(item)}"
            if size < 1:
                raise doc.fail(where + ("random", i), "a sample size must be at least 1")
        else:
            size = parse_percent(item, where + ("random", i), doc)
            text = _pct(size)
        key = f"rand{text.rstrip('%')}{'pct' if size <= 1 else ''}-of{within * 100:g}-s{seed}"
        out.append(Slice("random", f"random {text} of top {_pct(within)} (seed {seed})", f"sweep-{key}{tags}", within,
                         size, seed, key))
    return out


def _recipe_slice(item: Any, where: tuple, doc: Located, tags: str) -> Slice:
    """`NAME` or `{NAME: {param: value}}`: a recipe of queries/ (or a .sql path) with its
    parameters, checked here (unknown names, a share or count the recipe cannot do without)."""
    if isinstance(item, dict) and len(item) != 1:
        raise doc.fail(where, "a recipe with parameters is {name: {param: value}}")
    name, params = (item, {}) if not isinstance(item, dict) else next(iter(item.items()))
    if not isinstance(params, dict):
        raise doc.fail(where, f"recipe {name}: its parameters are a mapping {{param: value}}")
    try:
        bound = load_recipe(str(name)).bind(params)
    except UserError as exc:
        raise doc.fail(where, str(exc)) from None
    if {"fraction", "count"} <= set(bound) and bound["fraction"] is None and bound["count"] is None:
        raise doc.fail(where, f"recipe {name} needs a share or a count: {{{name}: {{fraction: 0.3}}}}")
    recipe = Path(str(name)).stem
    shown = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
    key = recipe + ("-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", shown) if shown else "")
    return Slice("recipe", recipe + (f"({shown})" if shown else ""), f"sweep-{key}{tags}", key=key,
                 recipe=str(name), params=tuple(sorted(params.items())))


def _named(item: Any, where: tuple, doc: Located, what: str, check) -> tuple[str, dict]:
    """`NAME` or `{NAME: {option: value}}` (train run fields), NAME checked by `check`."""
    if isinstance(item, dict) and len(item) != 1:
        raise doc.fail(where, f"a {what} with options is {{name: {{option: value}}}}")
    name, options = (item, {}) if not isinstance(item, dict) else next(iter(item.items()))
    try:
        check(str(name))
    except UserError as exc:
        raise doc.fail(where, str(exc)) from None
    _check_train_fields(options or {}, where + (name,), doc)
    return str(name), dict(options or {})


def _strategies(items: Any, where: tuple, doc: Located) -> list[tuple[str, str, dict]]:
    out = []
    for i, item in enumerate(_as_list(items)):
        name, options = _named(item, where + (i,), doc, "strategy", check_strategy)
        label = name + ("(" + ", ".join(f"{k}={v}" for k, v in sorted(options.items())) + ")" if options else "")
        out.append((name, label, options))
    return out


def _models(items: Any, where: tuple, doc: Located) -> list[tuple[str, dict]]:
    """[(model, its train options)]: `tiny-resnet-32` or `{tiny-vit-32: {lr: 0.003}}`, options
    being the model's own recipe (not a grid coordinate: a cell's id names the model only, and
    a cell shared with another experiment must agree on them)."""
    return [_named(item, where + (i,), doc, "model", check_model_name) for i, item in enumerate(_as_list(items))]


def _check_train_fields(fields: Any, where: tuple, doc: Located) -> None:
    if not isinstance(fields, dict):
        raise doc.fail(where, "options are a mapping of train run fields")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in fields:
        if key in ONE_PROCESS:
            raise doc.fail(where + (key,), ONE_PROCESS[key])
        if key not in known or key in OWNED:
            raise doc.fail(where + (key,), f"not a train option the sweep file may set (see TrainConfig; "
                                           f"the grid sets {', '.join(sorted(OWNED & known))})")


def _budgets(value: Any, where: tuple, doc: Located) -> tuple[str, list[float]]:
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("flops", "samples"):
        raise doc.fail(where, "budgets is {flops: [3e12, ...]} or {samples: [20000, ...]}")
    kind, items = next(iter(value.items()))
    parse = parse_flops if kind == "flops" else parse_samples
    out = []
    for i, item in enumerate(_as_list(items)):
        try:
            out.append(float(parse(item)))
        except UserError as exc:
            raise doc.fail(where + (kind, i), str(exc)) from None
    return kind, out


def _merge(base: dict, over: dict) -> dict:
    """`over` laid on `base`, mappings merged key by key (the --quick cut)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_sweep(path: str | Path, *, quick: bool = False, pool: str | None = None, eval_dir: str | None = None,
               eval_suite: str | None = None) -> Sweep:
    """Read and check a sweep file; `pool`/`eval_dir`/`eval_suite` override the file's. Without
    an eval suite, a pool downloaded from a demo pool is judged on that demo's suite. Relative
    paths in the file are relative to the current folder (where the sweep is started)."""
    doc = load_located(path)
    data = doc.data
    for key in data:
        if key not in TOP_KEYS:
            raise doc.fail((key,), f"unknown key; a sweep file has {', '.join(sorted(TOP_KEYS))}")
    if quick:
        if not isinstance(data.get("quick"), dict):
            raise doc.fail(("quick",), "--quick needs a quick: section (overrides of experiments:)")
        data = _merge(data, data["quick"])
    pool_path = as_path(pool or data.get("pool") or "")
    layout = Pool(pool_path)
    if not str(pool or data.get("pool") or "") or not layout.pool_json.is_file():
        raise doc.fail(("pool",), f"{pool_path} is not a downloaded pool (no pool.json); give pool: or --pool")
    evals = eval_dir or data.get("eval")
    if evals is not None and not Path(evals).is_dir():
        raise doc.fail(("eval",), f"{evals}: no such eval folder (one sub-folder of images per class)")
    suite = _suite(doc, eval_suite or data.get("eval_suite"), pool_path)
    scores = _pick(doc, ("scores",), pool_path, data.get("scores"), layout.score_tags(), "scores tag", "run curate score")
    dedup = _pick(doc, ("dedup",), pool_path, data.get("dedup"), layout.dedup_names(), "dedup run", "run curate dedup")
    _check_train_fields(data.get("train") or {}, ("train",), doc)
    resources = {"cpus": 1.0, "gpus": 0.0, **(data.get("resources") or {})}
    sweep = Sweep(str(data.get("name") or Path(path).stem), Path(path), pool_path, scores, dedup,
                  Path(evals) if evals else None, data.get("retrieval"), resources, eval_suite=suite)
    experiments = data.get("experiments")
    if not isinstance(experiments, dict) or not experiments:
        raise doc.fail(("experiments",), "give at least one experiment: {NAME: {data, models, strategies, budgets, seeds}}")
    check_count(path, "cells the experiments' grids make", _grid_size(experiments), GRID_CELLS,
                "shorten the lists or split the sweep", doc.line("experiments"))  # before expanding or checking any
    seen: dict[str, tuple] = {}
    for exp, grid in experiments.items():
        where = ("experiments", exp)
        if not isinstance(grid, dict):
            raise doc.fail(where, "an experiment is a mapping of data, models, strategies, budgets, seeds")
        for key in grid:
            if key not in GRID_KEYS:
                raise doc.fail(where + (key,), f"unknown key; an experiment has {', '.join(sorted(GRID_KEYS))}")
        slices = [s for i, e in enumerate(_as_list(grid.get("data", {"top": "100%"})))
                  for s in _slices(e, where + ("data",) + ((i,) if isinstance(grid.get("data"), list) else ()), doc,
                                   subset_tags(scores, dedup))]
        for i, sl in enumerate(slices):
            if sl.kind == "subset" and not layout.subset_parquet(sl.subset).is_file():
                raise doc.fail(where + ("data",), f"no subset {sl.subset!r} in {layout.subsets_dir}")
        models = _models(grid.get("models", "tiny-vit-32"), where + ("models",), doc)
        strategies = _strategies(grid.get("strategies", "clip"), where + ("strategies",), doc)
        if "budgets" not in grid:
            raise doc.fail(where, "missing budgets: {flops: [..]} or {samples: [..]}")
        kind, budgets = _budgets(grid["budgets"], where + ("budgets",), doc)
        seeds = [int(s) for s in _as_list(grid.get("seeds", 0))]
        _check_train_fields(grid.get("train") or {}, where + ("train",), doc)
        train = {**(data.get("train") or {}), **(grid.get("train") or {})}
        ids = []
        for sl in slices:
            for model, model_options in models:
                for strat, label, options in strategies:
                    for budget in budgets:
                        for seed in seeds:
                            cell = _cell(exp, sl, model, strat, label, kind, budget, seed,
                                         {**train, **model_options, **options})
                            if cell.id in ids:
                                raise doc.fail(where, f"duplicate cell {cell.id} (the same grid point twice)")
                            if cell.id in seen and seen[cell.id] != _fingerprint(cell):
                                raise doc.fail(where, f"cell {cell.id} differs from experiment {seen[cell.id][0]}'s "
                                                      "cell of that name in its train options")
                            if cell.id not in seen:
                                seen[cell.id] = _fingerprint(cell)
                                sweep.cells.append(cell)
                            ids.append(cell.id)
        sweep.experiments[exp] = ids
    return sweep


def _grid_size(experiments: dict) -> int:
    """The cells the grids would make, counted from the lengths of their lists before any is
    parsed (an upper bound: a cell two experiments share counts twice); a malformed grid counts
    1 and is reported by the full check."""
    total = 0
    for grid in experiments.values():
        if not isinstance(grid, dict):
            total += 1
            continue
        slices = sum(max(1, *(len(_as_list(v)) for v in entry.values())) if isinstance(entry, dict) and entry else 1
                     for entry in _as_list(grid.get("data", {})))
        budgets = grid.get("budgets")
        size = slices * len(_as_list(next(iter(budgets.values())) if isinstance(budgets, dict) and budgets else 1))
        for key in ("models", "strategies", "seeds"):
            size *= len(_as_list(grid.get(key, 0)))
        total += size
    return total


def _suite(doc: Located, given: Any, pool: Path) -> Path | None:
    """The eval suite folder, its tasks checked now (train.suite.tasks); none given: the demo
    suite of the demo pool the pool was downloaded from, when it has one."""
    if given is None:
        suite = demo_suite_of_pool(pool)
    else:
        # The task folder reader loads webdataset and so torch: not for `train --help`, which loads this module.
        from train.suite.tasks import load_suite

        try:
            load_suite(str(given))
        except UserError as exc:
            raise doc.fail(("eval_suite",), str(exc)) from None
        suite = Path(str(given)).resolve()
    if suite is not None and (suite / "average").is_dir():  # results.parquet's suite_average is the suite's
        raise doc.fail(("eval_suite",), f"{suite}: rename its task folder 'average' (suite_average is the average)")
    return suite


def _fingerprint(cell: Cell) -> tuple:
    return (cell.experiment, tuple(sorted((k, str(v)) for k, v in cell.train.items())))[1:]


def _cell(exp: str, sl: Slice, model: str, strat: str, label: str, kind: str, budget: float, seed: int,
          train: dict) -> Cell:
    budget_text = f"{budget:.3g}".replace("+", "")
    slug = f"{sl.key}_{model}_{label}_{kind[0]}{budget_text}_s{seed}"
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "-", slug).strip("-")
    return Cell(slug, exp, sl, model, strat, label, kind, budget, seed, train)


def _pick(doc: Located, where: tuple, pool: StoragePath, wanted: Any, available: list[str], what: str, hint: str) -> str | None:
    """The first of `wanted` (a name or a list of names, in order of preference) that the pool
    has (`available`: Pool.score_tags() or Pool.dedup_names())."""
    if wanted is None:
        return None
    for name in _as_list(wanted):
        if str(name) in available:
            return str(name)
    raise doc.fail(where, f"no {what} {' or '.join(map(str, _as_list(wanted)))} in {pool} "
                          f"(it has: {', '.join(available) or f'none; {hint}'})")
