"""YAML read with line numbers, so a bad sweep file fails with one line naming key and line."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clikit.bounded import yaml_node
from clikit.errors import UserError


@dataclass
class Located:
    """A loaded YAML document plus the line (1-based) of every key path in it."""

    path: Path
    data: Any
    lines: dict[tuple, int] = field(default_factory=dict)

    def line(self, *keys: Any) -> int:
        """The line of the deepest known prefix of `keys` (1 when none is known)."""
        for end in range(len(keys), -1, -1):
            if keys[:end] in self.lines:
                return self.lines[keys[:end]]
        return 1

    def fail(self, keys: tuple, message: str) -> UserError:
        """The one-line error for `keys`: FILE:LINE: a.b.c: message."""
        where = ".".join(str(k) for k in keys) or "(top)"
        return UserError(f"{self.path}:{self.line(*keys)}: {where}: {message}")


def load_located(path: str | Path) -> Located:
    """Parse a YAML file keeping each key's line; UserError for a missing or unparsable file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep file {path} not found")
    try:
        node = yaml_node(path)  # bounded: size, depth, aliases (clikit.bounded)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise UserError(f"{path}:{line}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    located = Located(path, None)
    located.data = _convert(node, (), located.lines, yaml.SafeLoader(" ")) if node is not None else {}
    if not isinstance(located.data, dict):
        raise UserError(f"{path}:1: a sweep file is a mapping (pool:, experiments:, ...)")
    return located


def _convert(node: Any, keys: tuple, lines: dict[tuple, int], loader: Any) -> Any:
    """`node` as Python values, noting each key path's line; `loader` (one SafeLoader) builds the scalars."""
    import yaml

    lines.setdefault(keys, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node)  # plain scalars: str, int, ...
            lines[keys + (key,)] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, keys + (key,), lines, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, keys + (i,), lines, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node)
