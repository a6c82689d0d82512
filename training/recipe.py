"""Reading recipes: a TOML (or JSON) table into validated dataclasses, one per `[section]`, with
errors that name the file, the key and the fix. Shared by the training and VAE recipes (`config`, `vae`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A recipe that cannot be used; the message names the key and the fix."""


def _path(default: str = "") -> Any:
    """A dataclass field holding a path: relative paths in a recipe are relative to the recipe."""
    return field(default=default, metadata={"path": True})


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key} {message}")


def recipe_from_dict(cls, sections: dict, top_keys: tuple[str, ...], table: dict,
                     base_dir: str | os.PathLike | None, source: str):
    """A recipe dataclass from a parsed table: each `[section]` built and checked by its dataclass,
    the top-level string keys copied, and `output` made relative to the recipe like every path."""
    try:
        built, top = {}, {}
        for key, value in table.items():
            if key in sections:
                if not isinstance(value, dict):
                    raise ConfigError(f"[{key}] must be a table, got {type(value).__name__}")
                built[key] = _build(sections[key], value, f"[{key}]", base_dir)
            elif key in top_keys:
                _check(isinstance(value, str), key, f"must be a string, got {value!r}")
                top[key] = value
            else:
                raise ConfigError(f"unknown key '{key}'; known: {', '.join([*sections, *top_keys])}")
        if base_dir is not None:
            top["output"] = str(Path(base_dir) / top.get("output", f"runs/{top.get('name', cls.name)}"))
        return cls(**built, **top).validate()
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _build(cls, table: dict, section: str, base_dir) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(f"{section} has no key '{key}'; known: {', '.join(fields)}")
        value = _coerce(value, hints[key], f"{section} {key}")
        if fields[key].metadata.get("path") and value and base_dir is not None:
            value = str(Path(base_dir) / Path(value).expanduser())
        values[key] = value
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        _check(isinstance(value, bool), key, f"must be true or false, got {value!r}")
    elif hint is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key, f"must be an integer, got {value!r}")
    elif hint is float:
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), key, f"must be a number, got {value!r}")
        value = float(value)
    elif hint is str:
        _check(isinstance(value, str), key, f"must be a string, got {value!r}")
    elif origin is tuple:
        _check(isinstance(value, (list, tuple)), key, f"must be a list, got {value!r}")
        inner = args[:1] * len(value) if args[-1] is Ellipsis else args
        _check(len(inner) == len(value), key, f"must have {len(args)} items, got {len(value)}")
        value = tuple(_coerce(v, t, key) for v, t in zip(value, inner))
    elif origin in (typing.Union, types.UnionType) and type(None) in args:  # float | None: None only from code
        value = _coerce(value, next(a for a in args if a is not type(None)), key)
    elif origin in (typing.Union, types.UnionType):  # str | dict
        _check(isinstance(value, (str, dict)), key, f"must be a name or a table, got {value!r}")
    return value


def read_recipe(path: str | os.PathLike, overrides: dict | None = None) -> tuple[dict, Path]:
    """Parse a recipe file (`.toml`, or `.json` with the same structure) and merge `overrides` per
    section; returns the table and the folder relative paths are read from."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe '{path}' not found")
    text = path.read_text(encoding="utf-8")
    try:
        table = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {exc}") from None
    for key, value in (overrides or {}).items():
        if isinstance(value, dict):
            table.setdefault(key, {}).update(value)
        else:
            table[key] = value
    return table, path.parent
