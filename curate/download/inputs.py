"""Reading a user's URL list, mapping its columns, and giving every row its stable uid."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from clikit.errors import UserError
from shards.uid import sample_uid

# Column names of the public pools, so users do not have to remember them.
PRESETS: dict[str, dict[str, str]] = {
    "laion": {"url": "URL", "caption": "TEXT"},
    "coyo": {"url": "url", "caption": "text"},
}

# Names img2dataset writes itself; an input column of the same name would be clobbered.
RESERVED_COLUMNS = {
    "key", "status", "error_message", "width", "height", "original_width",
    "original_height", "exif", "sha256", "uid", "url", "caption", "fail_reason",
}

SUPPORTED_SUFFIXES = (".parquet", ".csv", ".tsv", ".jsonl", ".json")


@dataclass
class ColumnMapping:
    url: str
    caption: str
    extra: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"url": self.url, "caption": self.caption, "extra": list(self.extra)}


def resolve_mapping(preset: str | None, url_col: str | None, caption_col: str | None) -> tuple[str, str]:
    """Explicit --url-col/--caption-col win over the preset; default preset is laion."""
    if preset is not None and preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)} or pass --url-col/--caption-col")
    base = PRESETS[preset or "laion"]
    return url_col or base["url"], caption_col or base["caption"]


def read_input_table(path: Path) -> pa.Table:
    """Read the URL list, turning every way it can be unreadable into a UserError."""
    if not path.exists():
        raise UserError(f"input {path} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in SUPPORTED_SUFFIXES)
        if not files:
            raise UserError(f"input folder {path} holds no {'/'.join(SUPPORTED_SUFFIXES)} files")
        tables = [read_input_table(p) for p in files]
        try:
            return pa.concat_tables(tables, promote_options="default")
        except pa.ArrowInvalid as exc:
            raise UserError(f"input files in {path} have incompatible columns: {exc}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if suffix in (".csv", ".tsv"):
            import pyarrow.csv as pcsv

            delimiter = "\t" if suffix == ".tsv" else ","
            return pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter=delimiter))
        if suffix in (".jsonl", ".json"):
            import pyarrow.json as pjson

            return pjson.read_json(path)
    except (pa.ArrowInvalid, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read {path} as {suffix[1:]}: {first_line}") from None
    raise UserError(f"input {path} has an unsupported type; use one of {', '.join(SUPPORTED_SUFFIXES)}")


def normalise_input(table: pa.Table, url_col: str, caption_col: str, source: str) -> tuple[pa.Table, ColumnMapping]:
    """Return a table with columns uid, url, caption and the input's other columns (carried through)."""
    missing = [c for c in (url_col, caption_col) if c not in table.column_names]
    if missing:
        raise UserError(
            f"{source} has no column {' or '.join(repr(m) for m in missing)} "
            f"(columns: {', '.join(table.column_names) or 'none'}); "
            "pick the right --preset or pass --url-col/--caption-col"
        )
    if table.num_rows == 0:
        raise UserError(f"{source} has no rows: nothing to download")
    urls = [None if u is None else str(u) for u in table.column(url_col).to_pylist()]
    captions = [None if c is None else str(c) for c in table.column(caption_col).to_pylist()]
    uids = [sample_uid(u or "", c) for u, c in zip(urls, captions)]
    extra = [c for c in table.column_names if c not in (url_col, caption_col) and c not in RESERVED_COLUMNS]
    columns = {"uid": pa.array(uids, pa.string()), "url": pa.array(urls, pa.string()), "caption": pa.array(captions, pa.string())}
    for name in extra:
        column = table.column(name)
        # img2dataset writes extra columns into each sample's json: keep them JSON-friendly.
        if pa.types.is_nested(column.type) or pa.types.is_binary(column.type) or pa.types.is_temporal(column.type):
            column = column.cast(pa.string()) if not pa.types.is_nested(column.type) else pa.array([str(v) for v in column.to_pylist()])
        columns[name] = column
    return pa.table(columns), ColumnMapping(url=url_col, caption=caption_col, extra=extra)
