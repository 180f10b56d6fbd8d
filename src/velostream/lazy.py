"""Lazy package exports: `import velostream.sql.duration` need not load the parser.

A package's `__init__` names what it exports and the module of each; the module is
imported when the name is first read (PEP 562), so a command imports what it uses,
when it uses it (`velo-sql --help` loads no FastAPI, Arrow or sqlglot).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: each name of `exports` from its module."""
    namespace = importlib.import_module(package).__dict__

    def getattr_(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # read once: later reads skip __getattr__
        return value

    return getattr_
