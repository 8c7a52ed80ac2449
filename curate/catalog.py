"""The catalog: one DuckDB connection with views over a pool's parquet files.

Views (each only when its files exist):

- `samples`    every row of shards/NNNNN.parquet (img2dataset's columns, failures included)
               plus `shard` (the 5-digit shard name).
- `scores`     scores/TAG/*.parquet of the selected scoring tag (the pool's only tag, or
               --scores TAG), plus `shard`.
- `scores_all` every tag's scores with a `tag` column, for comparing seed models.
- `scored`     `scores` joined with the sample's `url`, `caption`, `status`, `shard`
               (width/height are the decoded ones from scores).
- `dedup`      dedup/NAME/groups.parquet of the selected dedup run (the only one, or
               --dedup NAME).
- `dedup_all`  every dedup run's groups with a `name` column.
- `annotations`  annotations/NNNNN.parquet (`curate annotate`: caption language, matched
               metadata entries and class names per sample), plus `shard`.
- `annotation_entries`  annotations/entries.parquet: what those id lists point to.
- `clusters`   clusters/NAME/assignments.parquet of the selected cluster run (the only one,
               or --clusters NAME; `curate cluster`).
- `clusters_all`  every cluster run's assignments with a `name` column.

File lists in the view definitions come from listing the pool, never from user input;
user values reach queries only as named parameters. A pool on an object store
(s3://bucket/pool, any fsspec URL) is read through its fsspec filesystem, registered with
the connection, so the views are the same SQL over the same file names.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clikit.errors import UserError
from shards.layout import Pool
from shards.storage import StoragePath, file_stamps, open_root, parquet_schema, register_with_duckdb

def _sql_string(text: str) -> str:
    """A SQL string literal for a path we listed ourselves (quotes doubled)."""
    return "'" + text.replace("'", "''") + "'"


def _file_list(paths: list[StoragePath]) -> str:
    return "[" + ", ".join(_sql_string(str(p)) for p in paths) + "]"


def _scores_files(layout: Pool, tag: str) -> list[StoragePath]:
    return [layout.scores_parquet(tag, s) for s in layout.scored_shards(tag)]


# Columns each view's files must hold (docs/design.md, column contracts), and the fix for a bad file.
REQUIRED_COLUMNS = {
    "samples": (("key", "uid", "status"), "rerun `curate download` after deleting its _stats.json"),
    "scores": (("uid", "clip_score"), "delete it and rerun `curate score`"),
    "dedup": (("uid", "keep"), "rerun `curate dedup` with --overwrite"),
    "annotations": (("uid",), "delete it and rerun `curate annotate`"),
    "clusters": (("uid", "cluster_id"), "rerun `curate cluster` with --overwrite"),
}

# Views made from one run among several (`--scores TAG`, `--dedup NAME`, `--clusters NAME`):
# what they are called and the option that picks one.
SELECTED_VIEWS = {"scores": ("scoring tags", "--scores TAG"), "dedup": ("dedup runs", "--dedup NAME"),
                  "clusters": ("cluster runs", "--clusters NAME")}


def check_parquet_files(paths: list[StoragePath], kind: str) -> list[StoragePath]:
    """Each file is a readable parquet with the columns `kind`'s view needs (a one-line UserError if not)."""
    required, fix = REQUIRED_COLUMNS[kind]
    for path in paths:
        try:
            names = set(parquet_schema(path).names)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"{path} is not a readable parquet file ({first}); {fix}") from None
        missing = [c for c in required if c not in names]
        if missing:
            raise UserError(f"{path} has no column {', '.join(map(repr, missing))} (a {kind} file needs "
                            f"{', '.join(required)}); {fix}")
    return paths


def _choose(kind: str, option: str, wanted: str | None, available: list[str], pool: StoragePath) -> str | None:
    """The tag/name to use: the one asked for, or the only one; None when there is none."""
    if wanted is not None:
        if wanted not in available:
            have = ", ".join(available) if available else "none"
            raise UserError(f"{kind} {wanted!r} not found in {pool} (available: {have}); pass one of them to {option}")
        return wanted
    return available[0] if len(available) == 1 else None


@dataclass
class Catalog:
    """An open catalog: the connection, the views made, and which tag/name they use."""

    pool: StoragePath
    con: Any  # duckdb.DuckDBPyConnection
    score_tags: list[str]
    dedup_names: list[str]
    scores_tag: str | None
    dedup_name: str | None
    views: list[str] = field(default_factory=list)
    cluster_names: list[str] = field(default_factory=list)
    cluster_name: str | None = None
    files: dict[str, list[StoragePath]] = field(default_factory=dict)  # view -> the parquet files it reads

    def fingerprint(self) -> list:
        """[view, file, size, modification time] of every file behind the views: what a subset
        made from this catalog records, so that a rerun stage (new scores, a reclustering)
        shows in it and whoever reuses the subset can tell it is stale."""
        return [[view, *stamp] for view, paths in sorted(self.files.items()) for stamp in file_stamps(paths)]

    def unselected(self, view: str) -> str | None:
        """Why a view chosen among several runs was not made (several and none picked), else None."""
        if view not in SELECTED_VIEWS or view in self.views:
            return None
        runs = {"scores": self.score_tags, "dedup": self.dedup_names, "clusters": self.cluster_names}[view]
        if len(runs) < 2:
            return None
        what, option = SELECTED_VIEWS[view]
        return f"{self.pool} has several {what} ({', '.join(runs)}); pick one with {option}"

    def columns(self, view: str) -> list[str]:
        """Column names of a view (or any relation name)."""
        return [row[0] for row in self.con.sql(f'DESCRIBE "{view}"').fetchall()]

    def require_scores(self) -> str:
        """The scoring tag in use, or a UserError saying how to pick one / make one."""
        if self.scores_tag is not None:
            return self.scores_tag
        if not self.score_tags:
            raise UserError(f"{self.pool} has no scores (no scores/TAG/*.parquet); run `curate score` first")
        raise UserError(
            f"{self.pool} has several scoring tags ({', '.join(self.score_tags)}); pick one with --scores TAG"
        )

    def require_dedup(self) -> str:
        if self.dedup_name is not None:
            return self.dedup_name
        if not self.dedup_names:
            raise UserError(f"{self.pool} has no dedup runs (no dedup/NAME/groups.parquet); run `curate dedup` first")
        raise UserError(f"{self.pool} has several dedup runs ({', '.join(self.dedup_names)}); pick one with --dedup NAME")

    def describe(self) -> str:
        """One line naming the views, for error messages."""
        return "views: " + ", ".join(self.views) if self.views else "no views (empty pool?)"

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# DuckDB's own default is 80% of the machine's memory: a recipe joining 100M captions to
# their scores took 10.4 GB. Capped, DuckDB spills joins and sorts to disk instead
# (docs/design.md, Scale); CLIPCURATE_DUCKDB_MEMORY sets another cap, e.g. 32GB on a big node.
DUCKDB_MEMORY = "4GB"
MEMORY_ENV = "CLIPCURATE_DUCKDB_MEMORY"


def _bound_memory(con) -> None:
    """Cap DuckDB's memory and spill to a folder of this process's own under the system temp
    folder (DuckDB's default, .tmp in the working directory, would litter it)."""
    import duckdb

    limit = os.environ.get(MEMORY_ENV, DUCKDB_MEMORY)
    try:
        con.execute(f"SET memory_limit = {_sql_string(limit)}")
    except duckdb.Error:
        raise UserError(f"{MEMORY_ENV}={limit!r} is not a memory size; write e.g. 4GB or 500MB") from None
    spill = Path(tempfile.gettempdir()) / f"clipcurate-duckdb-{os.getpid()}"
    con.execute(f"SET temp_directory = {_sql_string(str(spill))}")


def open_catalog(
    pool: str | StoragePath,
    scores: str | None = None,
    dedup: str | None = None,
    threads: int | None = None,
    clusters: str | None = None,
) -> Catalog:
    """Open an in-memory DuckDB connection with the pool's views (see module docstring).

    `scores`/`dedup`/`clusters` select the tag/run behind those views; left out, the
    pool's only one is used, and with several the plain view is not made (the `_all`
    views still are) and `Catalog.require_scores()` names the choices.
    """
    import duckdb

    pool = open_root(pool)
    if not pool.is_dir():
        raise UserError(f"pool {pool} is not a directory; pass the folder `curate download` wrote")
    layout = Pool(pool)
    tags = layout.score_tags()
    names = layout.dedup_names()
    tag = _choose("scores tag", "--scores", scores, tags, pool)
    name = _choose("dedup run", "--dedup", dedup, names, pool)
    cluster_runs = layout.cluster_names()
    cluster_run = _choose("cluster run", "--clusters", clusters, cluster_runs, pool)

    con = duckdb.connect(":memory:")
    con.execute("SET enable_progress_bar = false")  # the commands draw their own progress
    _bound_memory(con)
    register_with_duckdb(con, pool)
    # A view the pool lacks must be an error, not a Python object of that name in a caller's
    # frame (DuckDB's replacement scans: `from __future__ import annotations` is one)
    con.execute("SET python_enable_replacements = false")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    views: list[str] = []
    files: dict[str, list[StoragePath]] = {}

    def view(view_name: str, files_: list[StoragePath], /, **labels: str) -> None:
        """CREATE VIEW view_name over parquet files, each label a column read from the file's path."""
        extracted = "".join(f"regexp_extract(filename, '{pattern}', 1) AS {column}, " for column, pattern in labels.items())
        con.execute(f"CREATE VIEW {view_name} AS SELECT * EXCLUDE (filename), {extracted.rstrip(', ')} "
                    f"FROM read_parquet({_file_list(files_)}, filename = true, union_by_name = true)"
                    if labels else f"CREATE VIEW {view_name} AS SELECT * FROM read_parquet({_file_list(files_)})")
        views.append(view_name)
        files[view_name] = list(files_)

    shard = "(\\d+)\\.parquet$"  # NNNNN.parquet: the pool shard a row came from

    def folder(kind: str, file: str = "[^\\\\/]+") -> str:  # POOL/KIND/NAME/FILE: NAME
        return f"[\\\\/]{kind}[\\\\/]([^\\\\/]+)[\\\\/]{file}$"

    shard_files = check_parquet_files([layout.shard_parquet(s) for s in layout.finished_shards()], "samples")
    if shard_files:
        view("samples", shard_files, shard=shard)
    if tags:
        view("scores_all", check_parquet_files([f for t in tags for f in _scores_files(layout, t)], "scores"),
             tag=folder("scores"), shard=shard)
    if tag is not None:
        view("scores", _scores_files(layout, tag), shard=shard)
        if shard_files:
            con.execute(
                "CREATE VIEW scored AS SELECT sc.*, sa.url, sa.caption, sa.status "
                "FROM scores sc LEFT JOIN (SELECT uid, url, caption, status FROM samples) sa USING (uid)"
            )
            views.append("scored")
    if names:
        view("dedup_all", check_parquet_files([layout.dedup_groups(n) for n in names], "dedup"),
             name=folder("dedup", "groups\\.parquet"))
    if name is not None:
        view("dedup", [layout.dedup_groups(name)])
    annotated = check_parquet_files([layout.annotations_parquet(s) for s in layout.annotated_shards()], "annotations")
    if annotated:
        view("annotations", annotated, shard=shard)
        if layout.annotation_entries.is_file():
            view("annotation_entries", [layout.annotation_entries])
    if cluster_runs:
        view("clusters_all", check_parquet_files([layout.cluster_assignments(n) for n in cluster_runs], "clusters"),
             name=folder("clusters", "assignments\\.parquet"))
    if cluster_run is not None:
        view("clusters", [layout.cluster_assignments(cluster_run)])
    return Catalog(pool, con, tags, names, tag, name, views, cluster_runs, cluster_run, files)
