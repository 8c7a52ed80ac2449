"""A command's options made from its config dataclass (train.config.TrainConfig, train.mim.MimConfig).

The fields are the one list of options: each carries its help text, and its flag when that is
not --FIELD-NAME, in `metadata` (`train.config.option`, the convention of transformers'
HfArgumentParser). Here they become Typer options: `config_command` returns a function whose
signature Typer reads (one `typer.Option` per field), and which builds the config from what
was given. Importing this costs no torch, so `train --help` stays fast.
"""
from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Callable, Optional, TypeVar

import typer

from train.config import TrainConfig

C = TypeVar("C", bound=TrainConfig)


def config_command(cls: type[C], run: Callable[[C], None]) -> Callable[..., None]:
    """A Typer command taking `cls`'s options and calling `run(cls(**options))`; its help is run's docstring."""
    def command(**options: Any) -> None:
        run(cls(**options))

    command.__signature__ = inspect.Signature(option_parameters(cls))  # type: ignore[attr-defined]
    command.__doc__ = run.__doc__
    command.__name__ = run.__name__
    return command


def option_parameters(cls: type[TrainConfig]) -> list[inspect.Parameter]:
    """One keyword parameter per option of `cls` (cls.options, else every field with help), in order."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = cls.options or [name for name, f in fields.items() if "help" in f.metadata]
    hints = typing.get_type_hints(cls)
    return [_parameter(cls, fields[name], hints[name]) for name in names]


def _parameter(cls: type[TrainConfig], field: dataclasses.Field, kind: Any) -> inspect.Parameter:
    meta = _option_metadata(cls, field.name)
    required = field.default is dataclasses.MISSING or meta.get("required", False)
    info = typer.Option(
        ... if required else field.default,
        meta.get("flag") or "--" + field.name.replace("_", "-"),
        help=cls.option_help.get(field.name) or meta["help"],
        hidden=meta.get("hidden", False),
    )
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=_optional(kind))


def _option_metadata(cls: type[TrainConfig], name: str) -> dict[str, Any]:
    """The field's metadata, from the nearest class that declared it with `option` (a subclass
    may redeclare a field for another default, e.g. MimConfig.model)."""
    for klass in cls.__mro__:
        declared = getattr(klass, "__dataclass_fields__", {}).get(name)
        if declared is not None and "help" in declared.metadata:
            return dict(declared.metadata)
    raise TypeError(f"{cls.__name__}.{name} is not an option: declare it with train.config.option(help=...)")


def _optional(kind: Any) -> Any:
    """`X | None` as typing.Optional[X], the spelling Typer reads."""
    args = typing.get_args(kind)
    if type(None) in args and len(args) == 2:
        return Optional[next(a for a in args if a is not type(None))]
    return kind
