"""YAML configuration files merged with command-line options.

An app describes its options once, as a dataclass whose fields have defaults and simple annotations
(``int``, ``float``, ``str``, ``bool``, ``X | None``, ``list[X]``, ``tuple[X, ...]``, ``dict``). From it:

- `add_dataclass_options` adds one ``--field-name`` option per field to an `argparse` parser (booleans get
  ``--x/--no-x``), with no default, so that only what the user typed is seen;
- `resolve_options` builds the instance: field defaults, then the YAML file, then the command line; an
  unknown key in the file is an error that lists the valid ones;
- `save_options` writes the resolved options next to a run's outputs, so ``--config run/config.yaml``
  replays it.

The options object stays in the app: library calls receive plain keyword arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .checkpoint import atomic_write_bytes

__all__ = [
    "add_dataclass_options",
    "load_yaml",
    "options_to_dict",
    "resolve_options",
    "save_options",
]

T = TypeVar("T")


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping from ``path``.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if its top level is not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    with p.open("r", encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError(f"config {p} must hold a mapping at its top level, got {type(data).__name__}")
    return dict(data)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def add_dataclass_options(
    parser: argparse.ArgumentParser, cls: type, *, exclude: tuple[str, ...] = ()
) -> argparse.ArgumentParser:
    """Add one command-line option per field of the dataclass ``cls``.

    The help text of an option is the field's ``metadata["help"]`` when given. Options default to
    "not given" (`argparse.SUPPRESS`), so `resolve_options` can tell them apart from the file's values.

    Raises:
        TypeError: if ``cls`` is not a dataclass or a field has an annotation that cannot be parsed.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"cls must be a dataclass, got {cls!r}")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        tp, optional = _unwrap_optional(hints[f.name])
        origin = typing.get_origin(tp)
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        help_text = f.metadata.get("help", "")
        help_text = f"{help_text} (default: {default!r})" if help_text else f"default: {default!r}"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if tp is bool:
            parser.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kwargs)
        elif tp in (int, float, str):
            parser.add_argument(_flag(f.name), type=_optional_parser(tp) if optional else tp, **kwargs)
        elif origin in (list, tuple):
            args = typing.get_args(tp)
            elem = args[0] if args else str
            if elem not in (int, float, str):
                raise TypeError(f"field {f.name!r}: unsupported element type {elem!r}")
            nargs: int | str = "+"
            if origin is tuple and args and args[-1] is not Ellipsis:
                nargs = len(args)
            parser.add_argument(_flag(f.name), type=elem, nargs=nargs, **kwargs)
        elif origin is dict or tp is dict:
            parser.add_argument(_flag(f.name), type=_yaml_mapping, **kwargs)
        else:
            raise TypeError(f"field {f.name!r}: unsupported annotation {hints[f.name]!r}")
    return parser


def _optional_parser(tp: type):
    def parse(text: str):
        if text.lower() in ("none", "null"):
            return None
        return tp(text)

    parse.__name__ = tp.__name__
    return parse


def _yaml_mapping(text: str) -> dict[str, Any]:
    value = yaml.safe_load(text)
    if not isinstance(value, Mapping):
        raise argparse.ArgumentTypeError(f"expected a YAML mapping such as '{{a: 1}}', got {text!r}")
    return dict(value)


def _coerce(name: str, tp: Any, value: Any) -> Any:
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ValueError(f"option {name!r} may not be null")
    origin = typing.get_origin(tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"option {name!r} must be true or false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"option {name!r} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"option {name!r} must be an integer, got {value!r}")
        return value
    if tp is str:
        return str(value)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            value = [value]
        args = typing.get_args(tp)
        elem = args[0] if args else Any
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ValueError(f"option {name!r} needs {len(args)} values, got {list(value)!r}")
        items = [_coerce(name, elem, v) if elem is not Any else v for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"option {name!r} must be a mapping, got {value!r}")
        return dict(value)
    return value


def resolve_options(
    cls: type[T],
    *,
    config: str | os.PathLike | Mapping[str, Any] | None = None,
    cli: Mapping[str, Any] | argparse.Namespace | None = None,
    ignore: tuple[str, ...] = (),
) -> T:
    """Build ``cls`` from its defaults, then ``config`` (a YAML path or a mapping), then ``cli``.

    Keys may be written with dashes or underscores. Values are checked against the annotations.

    Args:
        cls: the options dataclass.
        config: a YAML file or an already loaded mapping; ``None`` for none.
        cli: parsed command-line options (only those the user gave); names in ``ignore`` are skipped.
        ignore: CLI names that are not options (``config``, ``command``...).

    Raises:
        ValueError: for an unknown key (the message lists the valid ones) or a value of the wrong type.

    Example:
        >>> @dataclasses.dataclass
        ... class Opts:
        ...     lr: float = 1e-3
        ...     epochs: int = 1
        >>> resolve_options(Opts, config={"lr": 0.1}, cli={"epochs": 3})
        Opts(lr=0.1, epochs=3)
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"cls must be a dataclass, got {cls!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    values: dict[str, Any] = {}
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if config is not None:
        layers.append(
            (
                str(config) if not isinstance(config, Mapping) else "config",
                config if isinstance(config, Mapping) else load_yaml(config),
            )
        )
    if cli is not None:
        cli_map = vars(cli) if isinstance(cli, argparse.Namespace) else dict(cli)
        layers.append(("command line", {k: v for k, v in cli_map.items() if k not in ignore}))
    for origin, layer in layers:
        for key, value in layer.items():
            name = str(key).replace("-", "_")
            if name not in names:
                raise ValueError(
                    f"unknown option {key!r} in {origin}; valid options: {', '.join(sorted(names))}"
                )
            values[name] = _coerce(name, hints[name], value)
    return cls(**values)


def options_to_dict(options: Any) -> dict[str, Any]:
    """A dataclass instance as a YAML-friendly dict (tuples become lists)."""
    if not dataclasses.is_dataclass(options) or isinstance(options, type):
        raise TypeError(f"options must be a dataclass instance, got {type(options).__name__}")

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, os.PathLike):
            return os.fspath(v)
        return v

    return {f.name: plain(getattr(options, f.name)) for f in dataclasses.fields(options)}


def save_options(options: Any, path: str | os.PathLike) -> Path:
    """Write the options as YAML (atomically), so that ``--config`` on that file replays the run."""
    text = yaml.safe_dump(options_to_dict(options), sort_keys=False)
    return atomic_write_bytes(path, text.encode("utf-8"))
