"""A connector's `config_file`: YAML keys, `extends:` chains and `${VAR}` in values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from velostream.errors import ConfigurationError
from velostream.fsutil import PathRoots
from velostream.sql.variables import substitute_value

__all__ = ["load_config_file"]


def load_config_file(
    path: Path, env: Mapping[str, str], roots: PathRoots | None = None
) -> dict[str, str]:
    """Load a connector's keys from YAML, following `extends:`; nested maps flatten.

    Raises `ConfigurationError` naming the file when it is missing, unreadable, not
    YAML, not a mapping, part of an `extends` cycle or uses an undefined variable, or,
    with `roots`, when it (or a file it extends) lies outside them: checked before it
    is read.
    """
    return _load_config(path, env, (), roots)


def _load_config(
    path: Path, env: Mapping[str, str], chain: tuple[Path, ...], roots: PathRoots | None
) -> dict[str, str]:
    if roots is not None:
        roots.check(path, "config file")
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise ConfigurationError(f"config file cycle through 'extends': {cycle}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigurationError(f"config file {path} not found") from exc
    except (OSError, UnicodeError) as exc:
        raise ConfigurationError(f"config file {path} cannot be read: {exc}") from exc
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigurationError(f"config file {path} is not valid YAML: {detail}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"config file {path} must hold a mapping of keys to values, "
            f"found a {type(data).__name__}"
        )
    merged: dict[str, str] = {}
    extends = data.pop("extends", None)
    if extends is not None:
        if not isinstance(extends, str) or not extends.strip():
            raise ConfigurationError(f"config file {path}: 'extends' must be a file path")
        parent_text, missing = substitute_value(extends, env)
        _raise_undefined(path, "extends", missing)
        parent = Path(parent_text).expanduser()
        if not parent.is_absolute():
            parent = path.parent / parent
        merged.update(_load_config(parent, env, (*chain, resolved), roots))
    for key, raw in _flatten(data, ""):
        value, missing = substitute_value(raw, env)
        _raise_undefined(path, key, missing)
        merged[key] = value
    return merged


def _raise_undefined(path: Path, key: str, names: list[str]) -> None:
    if names:
        listed = ", ".join(f"${{{name}}}" for name in names)
        raise ConfigurationError(f"config file {path}: undefined variable {listed} in '{key}'")


def _flatten(data: Mapping[Any, Any], prefix: str) -> Iterable[tuple[str, str]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{name}.")
        else:
            yield name, _scalar(value)


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ",".join(_scalar(item) for item in value)
    return str(value)
