"""Recipes: .sql files that select a subset, and the values given to their parameters.

A recipe is a .sql file in queries/ (or any path): one SELECT returning `uid`, reading the
`candidates` view, with named parameters ($fraction, $min_score...) bound by DuckDB. Its
header declares the parameters and their defaults:

    -- @param min_score = 0.28  lowest score kept
    -- @needs annotations.caption_language  curate annotate POOL

`--param k=v` overrides a default; `--top` fills the $fraction/$count of top_fraction.
An `@needs VIEW[.COLUMN]  STAGE` line names a catalog view (and column) the recipe reads
beyond `candidates`, and the stage that makes it: `curate filter` checks them before it runs
the SQL, so a missing one fails in one line naming the stage, and `--list` shows them. The
comment lines before the first header line describe the recipe.

A rule several recipes share is a DuckDB macro in queries/shared/*.sql (the top-k cut:
`top_k(rows, fraction, count)`), created next to `candidates`, so any recipe, a user's too,
can call it; a subset's metadata records the recipe's SQL after the definitions it calls.
"""
from __future__ import annotations

import os
import re
import textwrap
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from clikit.bounded import read_text
from clikit.errors import UserError

_PARAM_LINE = re.compile(r"^--\s*@param\s+([A-Za-z_]\w*)\s*=\s*(\S+)\s*(.*)$")
_NEEDS_LINE = re.compile(r"^--\s*@needs\s+([A-Za-z_]\w*)(?:\.([A-Za-z_]\w*))?\s+(.+)$")
_PARAM_USE = re.compile(r"\$([A-Za-z_]\w*)")
_MACRO_NAME = re.compile(r"\bCREATE\s+OR\s+REPLACE\s+TEMP\s+MACRO\s+([A-Za-z_]\w*)", re.IGNORECASE)
SHARED_DIR = "shared"  # queries/shared/: macros the recipes call, not recipes themselves


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


@dataclass(frozen=True)
class Need:
    """A view (and column) a recipe reads, and the stage to run when the pool lacks it."""

    view: str
    column: str | None
    stage: str  # e.g. "curate annotate POOL"

    @property
    def name(self) -> str:
        return f"{self.view}.{self.column}" if self.column else self.view


@dataclass
class Recipe:
    """A loaded recipe: its SQL (comments kept, trailing ';' dropped), `defaults` for the
    parameters the SQL uses and `help`, each declared parameter's help text, `needs` (its
    `@needs` lines) and `description` (its leading comment)."""

    name: str
    path: str
    sql: str
    defaults: dict[str, Any] = field(default_factory=dict)
    help: dict[str, str] = field(default_factory=dict)
    needs: list[Need] = field(default_factory=list)
    description: str = ""

    def recorded_sql(self) -> str:
        """What a subset's metadata records as its `sql`: the shared definitions the recipe
        calls (queries/shared/*.sql), then the recipe, so the record reads on its own."""
        body = _without_comments(self.sql)
        called = [shared.sql for shared in shared_sql()
                  if any(re.search(rf"\b{name}\s*\(", body) for name in shared.macros)]
        return "\n\n".join([*called, self.sql])

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


@dataclass(frozen=True)
class SharedSql:
    """A file of queries/shared/: its statements (CREATE OR REPLACE TEMP MACRO ...) and the macros they define."""

    path: Path
    sql: str
    macros: tuple[str, ...]


def shared_sql() -> list[SharedSql]:
    """The shared definitions, in file name order."""
    found = []
    for path in sorted((recipe_dir() / SHARED_DIR).glob("*.sql")):
        text = path.read_text(encoding="utf-8").strip()
        found.append(SharedSql(path, text, tuple(_MACRO_NAME.findall(text))))
    return found


def _without_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))


def list_recipes() -> list[str]:
    """Names of the built-in recipes."""
    return sorted(p.stem for p in recipe_dir().glob("*.sql"))


def is_builtin(recipe: Recipe, name: str) -> bool:
    """True when `recipe` is the file of the built-in recipe `name`."""
    return Path(recipe.path).resolve() == (recipe_dir() / f"{name}.sql").resolve()


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
    sql = read_text(path)  # bounded: a recipe is a short .sql file
    defaults: dict[str, Any] = {}
    helps: dict[str, str] = {}
    needs: list[Need] = []
    description: list[str] = []
    for line in sql.splitlines():
        line = line.strip()
        match = _PARAM_LINE.match(line)
        if match:
            defaults[match.group(1)] = _parse_value(match.group(2))
            helps[match.group(1)] = match.group(3).strip()
        elif (need := _NEEDS_LINE.match(line)):
            needs.append(Need(need.group(1), need.group(2), need.group(3).strip().strip("`")))
        elif line.startswith("--") and not defaults and not needs:
            description.append(line[2:].strip())
        elif line.startswith("-- @"):
            raise UserError(f"recipe {path}: cannot read {line!r}; write `-- @param NAME = DEFAULT  help` "
                            "or `-- @needs VIEW[.COLUMN]  STAGE`")
    used = set(_PARAM_USE.findall(_without_comments(sql)))
    undeclared = sorted(used - set(defaults))
    if undeclared:
        raise UserError(f"recipe {path} uses ${', $'.join(undeclared)} without a `-- @param NAME = DEFAULT` line")
    sql = sql.strip().rstrip(";")
    return Recipe(path.stem, str(path), sql, {k: v for k, v in defaults.items() if k in used}, helps, needs,
                  " ".join(description).strip())


def _shown(value: Any) -> str:
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


def describe_recipe(recipe: Recipe, missing: dict[str, str] | None = None) -> str:
    """`curate filter --list`'s text for one recipe: name, description, parameters (default and
    help) and needs (view.column and the stage that makes it); `missing` marks the needs a
    pool lacks ({need name: "missing", or why the view was not made})."""
    lines = [f"{recipe.name}  ({recipe.path})"]
    if recipe.description:
        lines.append(textwrap.fill(recipe.description, 100, initial_indent="  ", subsequent_indent="  "))
    if recipe.defaults:
        lines.append("  parameters:")
        for key, value in recipe.defaults.items():
            lines.append(f"    {key} = {_shown(value)}  {recipe.help.get(key, '')}".rstrip())
    lines.append("  needs: candidates (curate score POOL)")
    for need in recipe.needs:
        mark = f"  [{missing[need.name]}]" if missing and need.name in missing else ""
        lines.append(f"    {need.name}  ({need.stage}){mark}")
    return "\n".join(lines)
