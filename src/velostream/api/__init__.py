"""The HTTP API and the web console."""

from __future__ import annotations

from typing import TYPE_CHECKING

from velostream.lazy import lazy_exports

if TYPE_CHECKING:
    from velostream.api.app import create_app

__all__ = ["create_app"]

__getattr__ = lazy_exports(
    __name__,
    {
        "create_app": "velostream.api.app",
    },
)
