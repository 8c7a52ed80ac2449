"""Reading a user's URL list, mapping its columns, and giving every row its stable uid."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from clikit.bounded import TABLE_COLUMNS, check_count, check_csv_header, check_json_lines, check_parquet
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
        table = _read_bounded(path, suffix)
    except (pa.ArrowInvalid, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read {path} as {suffix[1:]}: {first_line}") from None
    if table is None:
        raise UserError(f"input {path} has an unsupported type; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    check_count(path, "columns", table.num_columns, TABLE_COLUMNS, "keep the columns you need and drop the rest")
    return table


def _read_bounded(path: Path, suffix: str) -> pa.Table | None:
    """The file as a table, its declared size checked first (clikit.bounded); None for another suffix."""
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        check_parquet(path)
        return pq.read_table(path)
    if suffix in (".csv", ".tsv"):
        import pyarrow.csv as pcsv

        delimiter = "\t" if suffix == ".tsv" else ","
        check_csv_header(path, delimiter)
        return pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter=delimiter))
    if suffix in (".jsonl", ".json"):
        import pyarrow.json as pjson

        check_json_lines(path)
        return pjson.read_json(path)
    return None


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
    urls = _text_values(table.column(url_col), "url", source)
    captions = _text_values(table.column(caption_col), "caption", source)
    uids = [sample_uid(u or "", c) for u, c in zip(urls, captions)]
    _refuse_repeats(uids, source)
    extra = [c for c in table.column_names if c not in (url_col, caption_col) and c not in RESERVED_COLUMNS]
    columns = {"uid": pa.array(uids, pa.string()), "url": pa.array(urls, pa.string()), "caption": pa.array(captions, pa.string())}
    for name in extra:
        column = table.column(name)
        # img2dataset writes extra columns into each sample's json: keep them JSON-friendly.
        if pa.types.is_nested(column.type) or pa.types.is_binary(column.type) or pa.types.is_temporal(column.type):
            column = column.cast(pa.string()) if not pa.types.is_nested(column.type) else pa.array([str(v) for v in column.to_pylist()])
        columns[name] = column
    return pa.table(columns), ColumnMapping(url=url_col, caption=caption_col, extra=extra)


def _text_values(column: pa.ChunkedArray, what: str, source: str) -> list[str | None]:
    """A url/caption column as Python strings: text is checked as UTF-8 without NUL bytes.

    Binary columns are decoded as UTF-8 (never spelt as "b'...'"); other types as str().
    """
    values = column.to_pylist() if not pa.types.is_string(column.type) else None
    if values is None:
        try:
            column.validate(full=True)  # invalid UTF-8 in a string column
            values = column.to_pylist()
        except (pa.ArrowInvalid, UnicodeDecodeError):
            values = column.cast(pa.binary()).to_pylist()
    out: list[str | None] = []
    for row, value in enumerate(values):
        if isinstance(value, (bytes, bytearray)):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(
                    f"{source} row {row}: the {what} is not valid UTF-8 (byte 0x{value[exc.start]:02x} at offset "
                    f"{exc.start}); re-encode the input as UTF-8"
                ) from None
        elif value is not None:
            value = str(value)
        if value is not None and "\x00" in value:
            raise UserError(f"{source} row {row}: the {what} holds a NUL byte (at offset {value.index(chr(0))}); remove it")
        out.append(value)
    return out


def _refuse_repeats(uids: list[str], source: str) -> None:
    """Two rows with the same url and caption would be one sample twice (the same uid)."""
    first_row: dict[str, int] = {}
    repeats: list[tuple[int, int, str]] = []
    for row, uid in enumerate(uids):
        if uid in first_row:
            repeats.append((first_row[uid], row, uid))
        else:
            first_row[uid] = row
    if repeats:
        a, b, uid = repeats[0]
        raise UserError(
            f"{source} rows {a} and {b} have the same url and caption (uid {uid}); {len(repeats)} repeated "
            f"row{'s' if len(repeats) > 1 else ''} in all: drop the repeats (rows count from 0)"
        )
