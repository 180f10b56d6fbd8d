"""`velo-sql`: the job server, and applications run in the foreground.

The commands are in `sql_commands` (`app`, read here on first use). `main` runs the
plain `velo-sql validate FILE` without it: Typer coerces every argument through a
Pydantic TypeAdapter, and importing Typer, Click, Pydantic and Rich took about as long
as importing DuckDB (`benchmarks/bench_cli.py`), for a command that only has to bind
SQL. Likewise `velo-sql run FILE [--data-dir DIR]`, the form a user types most, runs
without the app when no `VELO_LOG_*` setting asks for the options' checks. Any other form
(`--help`, another option, a second argument) goes to the app.

`run`, `validate` and the help start without the cyclic GC (`velostream.cli.startup`):
`run` turns it back on once the application is planned, before its jobs start. Every
command keeps OpenBLAS to one thread (`single_blas_thread`).

`run` and `validate` end with `exit_now`: once their output is written, flushed and
closed, the interpreter's teardown (freeing DuckDB's, Arrow's and NumPy's modules and
every object one by one) is work the operating system does at once when the process
ends; it took about a tenth of a 2M-row run (`benchmarks/bench_cli.py`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from velostream.cli import DATA_DIR
from velostream.cli.startup import asks_for_help, pause_gc, single_blas_thread

if TYPE_CHECKING:
    from velostream.cli.sql_commands import app

__all__ = ["app", "main"]


def main() -> None:
    """The `velo-sql` console script."""
    single_blas_thread()  # before anything imports NumPy
    args = sys.argv[1:]
    if args[:1] in (["run"], ["validate"]) or asks_for_help(args):
        pause_gc()  # `run_file` resumes it; help and validate end first
    if args[:1] in (["run"], ["validate"]) and not asks_for_help(args):
        from velostream.sql.duckdb_check import open_early

        open_early()  # while the rest of what the command needs is imported
    if len(args) == 2 and args[0] == "validate" and not args[1].startswith("-"):
        from velostream.cli.validate import validate_file

        exit_now(validate_file(Path(args[1])))
    data_dir = _plain_run(args)
    if data_dir is not None:
        from velostream.cli.run import run_file

        try:
            exit_now(run_file(Path(args[1]), data_dir))
        except KeyboardInterrupt:  # before the jobs started (they stop on their own)
            exit_now(130)
    from velostream.cli.sql_commands import app

    if args[:1] != ["run"]:
        app()
        return
    try:
        app()
    except SystemExit as exc:
        exit_now(exc.code)
    exit_now(0)


def _plain_run(args: list[str]) -> Path | None:
    """The data dir of `run FILE [--data-dir DIR]` with the defaults the app would give;
    None for any other command line, or when a `VELO_LOG_*` variable is set."""
    if len(args) < 2 or args[0] != "run" or args[1].startswith("-"):
        return None
    if any(name.startswith("VELO_LOG_") for name in os.environ):
        return None
    rest = args[2:]
    if not rest:
        return Path(os.environ.get("VELO_DATA_DIR", DATA_DIR))
    if len(rest) == 1 and rest[0].startswith("--data-dir="):
        rest = ["--data-dir", rest[0].partition("=")[2]]
    if len(rest) == 2 and rest[0] == "--data-dir" and rest[1] and not rest[1].startswith("-"):
        return Path(rest[1])
    return None


def exit_now(code: int | str | None) -> NoReturn:
    """End the process as `sys.exit(code)` would, without the interpreter's teardown.

    For commands whose every file is closed by the time they return: the log handlers
    are flushed and closed, and standard output and error flushed, first.
    """
    import contextlib
    import logging  # loaded already by any command that logs; `--help` needs neither

    logging.shutdown()
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed, or a broken pipe
            stream.flush()
    os._exit(code or 0)


def __getattr__(name: str) -> Any:
    if name == "app":
        from velostream.cli.sql_commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
