"""`velo-sql`: the job server, and applications run in the foreground.

The commands are in `sql_commands` (`app`, read here on first use). `main` runs the
plain `velo-sql validate FILE` without it: Typer coerces every argument through a
Pydantic TypeAdapter, and importing Typer, Click, Pydantic and Rich took about as long
as importing DuckDB (`benchmarks/bench_cli.py`), for a command that only has to bind
SQL. Any other form (`--help`, an option, a second argument) goes to the app.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from velostream.cli.sql_commands import app

__all__ = ["app", "main"]


def main() -> None:
    """The `velo-sql` console script."""
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "validate" and not args[1].startswith("-"):
        # A short command holding little: the cyclic GC's full passes over the objects
        # of the libraries it imports cost a sixth of its time, and free nothing.
        gc.disable()
        from velostream.cli.validate import validate_file

        sys.exit(validate_file(Path(args[1])))
    from velostream.cli.sql_commands import app

    app()


def __getattr__(name: str) -> Any:
    if name == "app":
        from velostream.cli.sql_commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
