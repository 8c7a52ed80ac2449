"""Bounds on user files that can expand: one definition of every limit, checked before the
expensive part, so a hostile or mistaken file fails in one line (exit 2) within a second.

What expands: a YAML alias repeats a whole subtree (a "billion laughs" file is a few hundred
bytes and 10**9 nodes once walked); nesting recurses in parsers and in our own walks (PyYAML's
C parser takes minutes over 100,000 open brackets); a sweep grid is a product of its lists; a
parquet footer declares columns, rows and row-group sizes that a reader then allocates. Each
limit is far above what a real file needs (a sweep file is a few KB, a model config a few
hundred bytes) and far below what hurts.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import yaml

from clikit.errors import UserError

CONFIG_BYTES = 256 * 1024  # a YAML or JSON file a person writes: sweep, plan, run or model config
TEXT_LIST_BYTES = 16 * 2**20  # one entry a line: classnames.txt, templates
DEPTH = 64  # nesting levels of a YAML or JSON document
YAML_NODES = 20_000  # nodes of a YAML document once its aliases are expanded
GRID_CELLS = 10_000  # cells of one sweep (train runs)
TABLE_COLUMNS = 1_000  # columns of a user's parquet/CSV/JSON table
TABLE_ROWS = 200_000_000  # rows of one input file (a LAION part holds a few million)
ROW_GROUP_BYTES = 2 * 2**30  # one parquet row group, uncompressed, as its footer declares it
PARQUET_FOOTER_BYTES = 16 * 2**20  # the footer's thrift metadata, read before anything else
HEADER_BYTES = 2**20  # a CSV header line or the first line of a JSON-lines file

NODES = "YAML nodes (an alias counts as all it repeats)"
# libyaml's parser when PyYAML has it (10x faster); the pure-Python one otherwise.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def over_limit(path: str | Path, what: str, value: int | None, limit: int, fix: str, line: int | None = None) -> UserError:
    """The one-line error for a file past a limit: FILE[:LINE]: WHAT: VALUE, over the limit of LIMIT; FIX."""
    where = f"{path}:{line}" if line is not None else str(path)
    shown = f" {value:,}," if value is not None else ""
    return UserError(f"{where}: {what}:{shown} over the limit of {limit:,}; {fix}")


def read_text(path: str | Path, limit: int = CONFIG_BYTES, what: str = "file size in bytes") -> str:
    """The file's UTF-8 text, refused unread when it is larger than `limit` bytes."""
    path = Path(path)
    size = path.stat().st_size
    if size > limit:
        raise over_limit(path, what, size, limit, "is this the right file? split it or trim it")
    return path.read_text(encoding="utf-8")


def check_count(path: str | Path, what: str, count: int, limit: int, fix: str, line: int | None = None) -> None:
    """Refuse a count (list length, grid cells, rows) past its limit, before it is expanded."""
    if count > limit:
        raise over_limit(path, what, count, limit, fix, line)


def yaml_node(path: str | Path, text: str | None = None) -> yaml.Node | None:
    """The composed YAML document of `path` (or of `text`, named `path`), bounded: size,
    nesting depth and the node count once aliases are expanded. yaml.YAMLError passes through
    for the caller to word; a recursive alias or a bound is a UserError."""
    if text is None:
        text = read_text(path)
    elif len(text.encode("utf-8")) > CONFIG_BYTES:
        raise over_limit(path, "file size in bytes", len(text.encode("utf-8")), CONFIG_BYTES, "split it or trim it")
    depth = nodes = 0
    # Events stream lazily: a deep or long document is refused as soon as it shows, before composing.
    for event in yaml.parse(text, Loader=_YAML_LOADER):
        if isinstance(event, yaml.NodeEvent):
            nodes += 1
            if nodes > YAML_NODES:
                raise over_limit(path, NODES, None, YAML_NODES, "shorten it", event.start_mark.line + 1)
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > DEPTH:
                raise over_limit(path, "nesting depth", None, DEPTH, "flatten the file",
                                 event.start_mark.line + 1)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    node = yaml.compose(text, Loader=_YAML_LOADER)  # aliases share one node: linear in the text
    if node is not None:
        _check_expanded_size(path, node)
    return node


def load_yaml(path: str | Path) -> Any:
    """yaml.safe_load of `path`, bounded as yaml_node is."""
    node = yaml_node(path)
    return None if node is None else yaml.SafeLoader("").construct_document(node)


def _check_expanded_size(path: str | Path, root: yaml.Node) -> None:
    """Count the nodes a walk of the document visits (each alias counted in full), in time
    linear in the distinct nodes: sizes are memoised per node, so 10**9 is reached cheaply."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            total = 1 + sum(sizes[id(c)] for c in _children(node))
            if total > YAML_NODES:
                raise over_limit(path, NODES, total, YAML_NODES, "repeat fewer aliases of aliases",
                                 node.start_mark.line + 1)
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise UserError(f"{path}:{node.start_mark.line + 1}: an alias refers to a node that holds it "
                            "(a recursive alias); write the values out")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load_json(path: str | Path, limit: int = CONFIG_BYTES) -> Any:
    """json.loads of `path`, bounded: size (JSON has no aliases, so size bounds the count)
    and nesting depth. ValueError (not JSON) passes through for the caller to word."""
    text = read_text(path, limit)
    try:
        data = json.loads(text)
    except RecursionError:
        raise over_limit(path, "nesting depth", None, DEPTH, "flatten the file") from None
    check_depth(path, data)
    return data


def check_depth(path: str | Path, data: Any) -> None:
    """Refuse parsed data (JSON or YAML values) nested deeper than DEPTH."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > DEPTH:
                raise over_limit(path, "nesting depth", None, DEPTH, "flatten the file")
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))


def check_parquet(path: str | Path) -> None:
    """Refuse a parquet file whose footer declares more than the limits allow (columns, rows,
    a row group's uncompressed bytes), reading only the footer, and its length first."""
    import pyarrow.parquet as pq  # heavy; only the stages that read parquet load it

    path = Path(path)
    size = path.stat().st_size
    if size >= 12:
        with open(path, "rb") as handle:
            handle.seek(size - 8)
            tail = handle.read(8)
        footer = struct.unpack("<I", tail[:4])[0]
        if tail[4:] == b"PAR1" and footer > PARQUET_FOOTER_BYTES:
            raise over_limit(path, "parquet footer in bytes", footer, PARQUET_FOOTER_BYTES,
                             "write it with fewer columns and row groups")
    meta = pq.read_metadata(path)  # an unreadable file raises here, for the caller to word
    check_count(path, "columns", meta.num_columns, TABLE_COLUMNS, "keep the columns you need and drop the rest")
    check_count(path, "rows", meta.num_rows, TABLE_ROWS, "split it into several files in one folder")
    for index in range(meta.num_row_groups):
        group = meta.row_group(index)
        check_count(path, f"row group {index}'s uncompressed bytes", group.total_byte_size, ROW_GROUP_BYTES,
                    "write it again with smaller row groups (pyarrow: row_group_size)")


def check_csv_header(path: str | Path, delimiter: str) -> None:
    """Refuse a CSV/TSV whose header names more than TABLE_COLUMNS columns, reading only the
    header line (pyarrow takes seconds to open a file 100,000 columns wide)."""
    import csv

    with open(path, "rb") as handle:
        head = handle.readline(HEADER_BYTES + 1)
    if len(head) > HEADER_BYTES:
        raise over_limit(path, "header line in bytes", None, HEADER_BYTES,
                         "keep the columns you need and drop the rest", 1)
    names = next(csv.reader([head.decode("utf-8", errors="replace")], delimiter=delimiter), [])
    check_count(path, "columns", len(names), TABLE_COLUMNS, "keep the columns you need and drop the rest", 1)


def check_json_lines(path: str | Path, chunk_bytes: int = 2**22) -> None:
    """Refuse newline-delimited JSON nested deeper than DEPTH on any line (pyarrow's reader
    crashes the process at about 20,000 levels) or whose first line has more than
    TABLE_COLUMNS keys. One pass over the bytes with numpy, brackets inside strings skipped."""
    import numpy as np  # heavy; only the stages that read tables load it

    with open(path, "rb") as handle:
        first = handle.readline(HEADER_BYTES + 1)
    if len(first) <= HEADER_BYTES:
        try:
            keys = json.loads(first) if first.count(b"{") + first.count(b"[") <= DEPTH else {}
        except (ValueError, RecursionError):
            keys = {}  # pyarrow words the parse error
        if isinstance(keys, dict):
            check_count(path, "columns", len(keys), TABLE_COLUMNS, "keep the keys you need and drop the rest", 1)
    depth, in_string, backslashes, line = 0, 0, 0, 1
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            a = np.frombuffer(block, np.uint8)
            index = np.arange(len(a))
            # a quote ends a string unless an odd run of backslashes comes before it
            last_plain = np.maximum.accumulate(np.where(a == 0x5C, -1, index))
            before = np.concatenate(([-1], last_plain[:-1]))
            run = index - 1 - before + np.where(before < 0, backslashes, 0)
            quotes = (a == 0x22) & (run % 2 == 0)
            inside = (np.cumsum(quotes) - quotes + in_string) % 2 == 1
            step = ((a == 0x7B) | (a == 0x5B)).astype(np.int64) - ((a == 0x7D) | (a == 0x5D))
            level = depth + np.cumsum(np.where(inside, 0, step))
            newline = a == 0x0A
            line_start = np.maximum.accumulate(np.where(newline, index, -1))
            # depth counted from the start of each line (a broken line does not carry over)
            level = level - np.where(line_start >= 0, level[np.maximum(line_start, 0)], 0)
            deepest = int(np.argmax(level))
            if level[deepest] > DEPTH:
                raise over_limit(path, "nesting depth", None, DEPTH, "flatten the nested values",
                                 line + int(newline[:deepest].sum()))
            depth = int(level[-1])
            in_string = int((in_string + quotes.sum()) % 2)
            backslashes = len(a) - 1 - int(last_plain[-1]) + (backslashes if last_plain[-1] < 0 else 0)
            line += int(newline.sum())
