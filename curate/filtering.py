"""Filtering a pool into a subset: recipes, --top parsing, and subset files.

A recipe is a .sql file in queries/ (or any path): one SELECT returning `uid`, reading the
`candidates` view, with named parameters ($top, $min_score...) bound by DuckDB. Its
header declares the parameters and their defaults:

    -- @param min_score = 0.28  lowest score kept

`candidates` is the scoring tag's rows (`scores`, or `scored` with url/caption when a
--where is given), restricted to the dedup run's kept samples with --dedup and to
--where, with a `score` column holding the --by column.

A subset is subsets/NAME.parquet (column `uid`; JSON under key `clipcurate` in the
parquet metadata: the SQL, parameters, input tags, counts) and subsets/NAME.npy
(DataComp's format: a sorted 1-D array of dtype np.dtype("u8,u8"), the uid's high and
low 64 bits).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from curate.catalog import Catalog, open_catalog
from clikit.errors import UserError
from curate.uidpack import (  # noqa: F401  (uids_to_pairs, pairs_to_uids: public here too)
    DATACOMP_UID_DTYPE, UidBlock, UidFormatError, pairs_to_text, pairs_to_uids, sorted_order, text_to_arrow,
)
from curate.uidpack import uids_to_pairs as _uids_to_pairs

METADATA_KEY = b"clipcurate"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PARAM_LINE = re.compile(r"^--\s*@param\s+([A-Za-z_]\w*)\s*=\s*(\S+)\s*(.*)$")
_PARAM_USE = re.compile(r"\$([A-Za-z_]\w*)")
# ---------------------------------------------------------------- names and values

def check_subset_name(name: str) -> str:
    """A subset name is a plain file name: letters, digits, '.', '_', '-'."""
    if not name or not _NAME.match(name):
        raise UserError(f"subset name {name!r} is not a plain name; use letters, digits, '.', '_' or '-'")
    return name


def _parse_value(text: str) -> Any:
    """A --param or @param value: null/true/false, an int, a float, else the text."""
    lowered = text.strip().lower()
    if lowered in ("null", "none"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def parse_param(text: str) -> tuple[str, Any]:
    """`k=v` from --param into (k, typed value)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--param {text!r} is not k=v; write e.g. --param min_score=0.3")
    return key.strip(), _parse_value(value.strip())


@dataclass(frozen=True)
class TopSpec:
    """What --top asked for: a share of the scored candidates, or a count."""

    text: str
    fraction: float | None = None
    count: int | None = None

    def params(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "count": self.count}


def parse_top(text: str) -> TopSpec:
    """Parse --top: `40%` or `0.4` (a share in (0, 1]) or `5000` (a count)."""
    raw = text.strip()
    hint = "write a share like 40% or 0.4, or a count like 5000"
    try:
        if raw.endswith("%"):
            fraction = float(raw[:-1]) / 100.0
        elif re.fullmatch(r"\d+", raw):
            count = int(raw)
            if count <= 0:
                raise UserError(f"--top {text!r} keeps nothing; {hint}")
            return TopSpec(raw, count=count)
        else:
            fraction = float(raw)
    except ValueError:
        raise UserError(f"--top {text!r} is not a share or a count; {hint}") from None
    if not (0.0 < fraction <= 1.0) or fraction != fraction:
        raise UserError(f"--top {text!r} is outside (0%, 100%]; {hint}")
    return TopSpec(raw, fraction=fraction)


# ---------------------------------------------------------------- recipes

@dataclass
class Recipe:
    name: str
    path: str
    sql: str
    defaults: dict[str, Any] = field(default_factory=dict)
    help: dict[str, str] = field(default_factory=dict)

    def bind(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """Defaults overridden by --param; unknown names and missing values are errors."""
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            known = ", ".join(self.defaults) or "none"
            raise UserError(f"recipe {self.name} has no parameter {', '.join(unknown)} (its parameters: {known})")
        return {**self.defaults, **overrides}


def recipe_dir() -> Path:
    """The folder of built-in recipes (queries/)."""
    return Path(str(resources.files("queries")))


def list_recipes() -> list[str]:
    return sorted(p.stem for p in recipe_dir().glob("*.sql"))


def load_recipe(name_or_path: str) -> Recipe:
    """A built-in recipe by name (queries/NAME.sql) or a .sql file by path."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".sql" or os.sep in name_or_path:
        path = candidate
    else:
        path = recipe_dir() / f"{name_or_path}.sql"
    if not path.is_file():
        raise UserError(
            f"recipe {name_or_path!r} not found; use one of {', '.join(list_recipes())} or a path to a .sql file"
        )
    sql = path.read_text(encoding="utf-8")
    defaults: dict[str, Any] = {}
    helps: dict[str, str] = {}
    for line in sql.splitlines():
        match = _PARAM_LINE.match(line.strip())
        if match:
            defaults[match.group(1)] = _parse_value(match.group(2))
            helps[match.group(1)] = match.group(3).strip()
    body = "\n".join(l for l in sql.splitlines() if not l.strip().startswith("--"))
    used = set(_PARAM_USE.findall(body))
    undeclared = sorted(used - set(defaults))
    if undeclared:
        raise UserError(f"recipe {path} uses ${', $'.join(undeclared)} without a `-- @param NAME = DEFAULT` line")
    sql = sql.strip().rstrip(";")
    return Recipe(path.stem, str(path), sql, {k: v for k, v in defaults.items() if k in used}, helps)


# ---------------------------------------------------------------- uids <-> DataComp pairs

def uids_to_pairs(uids) -> np.ndarray:
    """32-hex uids (pyarrow string array or list) -> unsorted np.dtype("u8,u8") array."""
    try:
        return _uids_to_pairs(uids)
    except UidFormatError as exc:
        raise UserError(str(exc)) from None


def sort_pairs(pairs: np.ndarray) -> np.ndarray:
    """Permutation that sorts DataComp pairs (by high, then low 64 bits)."""
    return sorted_order(pairs)


# ---------------------------------------------------------------- subsets on disk

def subset_paths(pool: str | Path, name: str) -> tuple[Path, Path]:
    base = Path(pool) / "subsets"
    return base / f"{name}.parquet", base / f"{name}.npy"


def write_subset(pool: str | Path, name: str, uids, metadata: dict[str, Any], overwrite: bool = False) -> int:
    """Write subsets/NAME.parquet and .npy (both sorted by uid); returns the uid count.

    `uids`: a pyarrow string (Chunked)Array or a list of 32-hex uids. Duplicate uids are
    dropped. Both files are written under temporary names and renamed when complete, the
    .npy first: the parquet's presence is what marks the subset made.
    """
    check_subset_name(name)
    _check_free(pool, name, overwrite)
    try:
        block = UidBlock.from_arrow(uids)
    except UidFormatError as exc:
        raise UserError(str(exc)) from None
    return write_uid_block(pool, name, block, None, metadata, overwrite=overwrite)


def _check_free(pool: str | Path, name: str, overwrite: bool) -> None:
    parquet_path, _ = subset_paths(pool, name)
    if parquet_path.exists() and not overwrite:
        raise UserError(f"subset {name!r} already exists in {parquet_path.parent}; pick another --name or pass --overwrite")


def write_uid_block(
    pool: str | Path,
    name: str,
    block: UidBlock,
    rows: np.ndarray | None,
    metadata: dict[str, Any],
    overwrite: bool = False,
) -> int:
    """write_subset for uids already decoded (curate.uidpack); `rows` picks some of them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_subset_name(name)
    _check_free(pool, name, overwrite)
    parquet_path, npy_path = subset_paths(pool, name)
    parquet_path.parent.mkdir(parents=True, exist_ok=True)
    order = sorted_order(block.pairs, rows)
    pairs = block.pairs[order]
    if len(pairs) > 1:
        fresh = np.ones(len(pairs), dtype=bool)
        fresh[1:] = (pairs["f0"][1:] != pairs["f0"][:-1]) | (pairs["f1"][1:] != pairs["f1"][:-1])
        if not fresh.all():
            metadata = {**metadata, "duplicates_dropped": int((~fresh).sum())}
            pairs, order = pairs[fresh], order[fresh]
    del order
    # spelt again from the sorted pairs: always the canonical lowercase spelling
    table = pa.table({"uid": text_to_arrow(pairs_to_text(pairs))})
    metadata = {**metadata, "name": name, "count": int(len(pairs))}
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, default=str).encode()})
    tmp_npy = npy_path.with_name(f".{npy_path.name}.tmp")
    tmp_parquet = parquet_path.with_name(f".{parquet_path.name}.tmp")
    with open(tmp_npy, "wb") as handle:
        np.save(handle, pairs)
    # uids are unique random hex: a dictionary or compression costs time and saves little
    pq.write_table(table, tmp_parquet, use_dictionary=False, compression="none")
    os.replace(tmp_npy, npy_path)
    os.replace(tmp_parquet, parquet_path)
    return int(len(pairs))


def read_subset_metadata(pool: str | Path, name: str) -> dict[str, Any]:
    """The `clipcurate` JSON of subsets/NAME.parquet."""
    import pyarrow.parquet as pq

    parquet_path, _ = subset_paths(pool, name)
    if not parquet_path.is_file():
        have = sorted(p.stem for p in parquet_path.parent.glob("*.parquet")) if parquet_path.parent.is_dir() else []
        raise UserError(
            f"subset {name!r} not found in {parquet_path.parent} (available: {', '.join(have) or 'none'}); "
            "make it with `curate filter --name`"
        )
    raw = (pq.read_schema(parquet_path).metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def load_datacomp_npy(path: str | Path) -> np.ndarray:
    """Read a DataComp/DFN subset file, checking it is a 1-D array of two uint64 fields."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--from-npy {path} does not exist")
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise UserError(f"--from-npy {path} is not a readable .npy file ({exc})") from None
    names = array.dtype.names
    if (
        array.ndim != 1
        or names is None
        or len(names) != 2
        or any(array.dtype.fields[n][0] != np.dtype("<u8") for n in names)
    ):
        raise UserError(
            f"--from-npy {path} has dtype {array.dtype} and shape {array.shape}; "
            "a DataComp subset is a 1-D array of np.dtype('u8,u8') (uid high, low 64 bits)"
        )
    pairs = np.empty(len(array), DATACOMP_UID_DTYPE)
    pairs["f0"], pairs["f1"] = array[names[0]], array[names[1]]
    return pairs


# ---------------------------------------------------------------- the filter itself

@dataclass
class FilterResult:
    name: str
    count: int
    parquet: Path
    npy: Path
    metadata: dict[str, Any]


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _run_query(catalog: Catalog, sql: str, params: dict[str, Any] | None = None):
    import duckdb

    try:
        return catalog.con.sql(sql, params=params or None)
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"query failed: {first} ({catalog.describe()})") from None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def tool_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clipcurate")
    except PackageNotFoundError:
        return "0+unknown"


def _seed_model(pool: Path, tag: str | None) -> dict[str, Any] | None:
    if tag is None:
        return None
    path = pool / "scores" / tag / "model.json"
    try:
        return {"tag": tag, **json.loads(path.read_text())}
    except (OSError, ValueError):
        return {"tag": tag}


def build_candidates(catalog: Catalog, by: str, dedup: bool, where: str | None) -> str:
    """Create the temp view `candidates` and return its SQL (recorded in the subset)."""
    catalog.require_scores()
    base = "scored" if where and "scored" in catalog.views else "scores"
    columns = catalog.columns(base)
    numeric = [
        row[0] for row in catalog.con.sql(f"DESCRIBE {base}").fetchall()
        if any(t in row[1] for t in ("FLOAT", "DOUBLE", "INT", "DECIMAL")) and row[0] not in ("key",)
    ]
    if by not in columns:
        raise UserError(f"--by {by!r} is not a column of {base}; use one of {', '.join(numeric)}")
    conditions = []
    if dedup:
        catalog.require_dedup()
        conditions.append("uid IN (SELECT uid FROM dedup WHERE keep)")
    if where:
        conditions.append(f"({where})")
    sql = f"SELECT *, {_quote_ident(by)} AS score FROM {base}"
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    _run_query(catalog, f"CREATE OR REPLACE TEMP VIEW candidates AS {sql}")
    # bind the view now so a bad --where fails here with a clear message
    _run_query(catalog, "SELECT * FROM candidates LIMIT 0").fetchall()
    return sql


def run_filter(
    pool: str | Path,
    name: str,
    top: str | None = None,
    by: str = "clip_score",
    scores: str | None = None,
    dedup: str | None = None,
    use_dedup: bool = False,
    where: str | None = None,
    recipe: str | None = None,
    params: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> FilterResult:
    """Select a subset of `pool` with a recipe and write subsets/NAME.{parquet,npy}.

    `top` ("40%", "0.4", "5000") fills the recipe's $fraction/$count (the recipe defaults
    to top_fraction when `top` is given); `use_dedup` (or naming `dedup`) keeps only the
    dedup run's kept samples; `where` is an SQL condition over the candidates.
    """
    pool = Path(pool)
    check_subset_name(name)
    parquet_path, _ = subset_paths(pool, name)
    if parquet_path.exists() and not overwrite:
        raise UserError(f"subset {name!r} already exists in {parquet_path.parent}; pick another --name or pass --overwrite")
    top_spec = parse_top(top) if top is not None else None
    if recipe is None:
        if top_spec is None:
            raise UserError("say what to keep: --top 40%, --recipe NAME (see queries/), or --from-npy FILE")
        recipe = "top_fraction"
    chosen = load_recipe(recipe)
    overrides = dict(params or {})
    if top_spec is not None:
        if not {"fraction", "count"} <= set(chosen.defaults):
            raise UserError(f"recipe {chosen.name} takes no --top (it has no $fraction/$count parameters)")
        overrides.update(top_spec.params())
    bound = chosen.bind(overrides)
    if {"fraction", "count"} <= set(bound) and bound["fraction"] is None and bound["count"] is None:
        raise UserError(f"recipe {chosen.name} needs a share or a count: pass --top 40%")

    with open_catalog(pool, scores=scores, dedup=dedup) as catalog:
        candidates_sql = build_candidates(catalog, by, use_dedup or dedup is not None, where)
        fast = _top_fraction_fast(catalog, chosen, bound)
        if fast is not None:
            scored, selected = fast.scored, fast.selected
        else:
            scored = _run_query(catalog, "SELECT count(score) FROM candidates").fetchall()[0][0]
        if scored == 0:
            raise UserError(f"no candidate has a {by}; check --where/--dedup or run `curate score`")
        if fast is None:
            result = _run_query(catalog, f"SELECT uid FROM (\n{chosen.sql}\n) AS recipe", bound).to_arrow_table()
            selected = result.num_rows
        pool_samples = (
            _run_query(catalog, "SELECT count(*) FROM samples WHERE status = 'success'").fetchall()[0][0]
            if "samples" in catalog.views else None
        )
        metadata = {
            "recipe": chosen.name,
            "recipe_path": chosen.path,
            "sql": chosen.sql,
            "candidates_sql": candidates_sql,
            "params": bound,
            "top": top_spec.text if top_spec else None,
            "by": by,
            "where": where,
            "scores_tag": catalog.scores_tag,
            "dedup_name": catalog.dedup_name if (use_dedup or dedup is not None) else None,
            "seed_model": _seed_model(pool, catalog.scores_tag),
            "counts": {"pool_samples": pool_samples, "candidates_scored": int(scored), "selected": int(selected)},
            "pool": str(pool.resolve()),
            "created": _now(),
            "tool_version": tool_version(),
        }
    if fast is not None:
        count = write_uid_block(pool, name, fast.block, fast.rows, metadata, overwrite=overwrite)
    else:
        count = write_subset(pool, name, result.column("uid"), metadata, overwrite=overwrite)
    parquet_path, npy_path = subset_paths(pool, name)
    metadata["count"] = count
    return FilterResult(name, count, parquet_path, npy_path, metadata)


def _top_fraction_fast(catalog: Catalog, chosen: Recipe, bound: dict[str, Any]):
    """The built-in top_fraction recipe's result computed in one score pass and one uid
    pass (curate.topcut); None for any other recipe, or when the fast way declines."""
    if Path(chosen.path).resolve() != (recipe_dir() / "top_fraction.sql").resolve():
        return None
    from curate.topcut import top_fraction

    import duckdb

    try:
        return top_fraction(catalog.con, bound)
    except duckdb.Error:
        return None  # the SQL path reports the problem in its own words


def import_npy(pool: str | Path, npy: str | Path, name: str, overwrite: bool = False) -> FilterResult:
    """Import a DataComp/DFN subset .npy as subsets/NAME (all its uids, sorted, unique)."""
    import pyarrow as pa

    pool = Path(pool)
    if not pool.is_dir():
        raise UserError(f"pool {pool} is not a directory")
    check_subset_name(name)
    pairs = load_datacomp_npy(npy)
    uids = pairs_to_uids(pairs)
    in_pool = None
    with open_catalog(pool) as catalog:
        if "samples" in catalog.views and len(uids):
            catalog.con.register("imported", pa.table({"uid": uids}))
            in_pool = catalog.con.sql(
                "SELECT count(*) FROM imported WHERE uid IN (SELECT uid FROM samples WHERE status = 'success')"
            ).fetchall()[0][0]
    metadata = {
        "recipe": None,
        "imported_from": str(Path(npy).resolve()),
        "sql": None,
        "params": {},
        "counts": {"imported": int(len(pairs)), "in_pool": in_pool},
        "pool": str(pool.resolve()),
        "created": _now(),
        "tool_version": tool_version(),
    }
    count = write_subset(pool, name, uids, metadata, overwrite=overwrite)
    parquet_path, npy_path = subset_paths(pool, name)
    metadata["count"] = count
    return FilterResult(name, count, parquet_path, npy_path, metadata)
