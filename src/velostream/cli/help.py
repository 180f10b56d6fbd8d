"""Help text without noise: a flag takes no value, so its row shows no `<bool>` type.

Typer 0.2x prints every option's type in `--help`, flags included (`--help <bool>`),
which reads as if the flag wanted a value. Both command-line tools import `typer`
through `fix_flag_types` before building their app.
"""

from __future__ import annotations

from typing import Any

import typer.core

__all__ = ["fix_flag_types"]

_original = typer.core.TyperOption.display_type_rich


def _display_type_rich(self: typer.core.TyperOption, ctx: Any) -> str | None:
    # `ctx` is the click context of typer's own copy of click.
    if self.is_flag and self.metavar is None:
        return None
    return _original(self, ctx)


def fix_flag_types() -> None:
    """Leave the type out of every flag's help row (idempotent)."""
    typer.core.TyperOption.display_type_rich = _display_type_rich  # type: ignore[method-assign]
