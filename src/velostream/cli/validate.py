"""`velo-sql validate FILE`: check an application without running it.

Kept apart from the command-line app so that `velo-sql validate FILE` can run without
building it (see `velo_sql.main`): the check itself needs DuckDB, Arrow and sqlglot,
not Typer and the Pydantic it coerces arguments with.
"""

from __future__ import annotations

from pathlib import Path

from velostream.errors import VelostreamError

__all__ = ["validate_file"]


def validate_file(file: Path, *, explain: bool = False) -> int:
    """Check `file`; print its problems (exit code 1) or that it is valid (0), then,
    with `explain`, what each job will do (`velostream.sql.explain`)."""
    from velostream.cli.load import validate_application

    try:
        application = validate_application(file)
    except VelostreamError as exc:
        from rich.console import Console

        from velostream.cli.problems import print_problems

        print_problems(Console(stderr=True), exc)
        return 1
    if application.warnings:
        from rich.console import Console

        console = Console(stderr=True)
        for warning in application.warnings:
            console.print(f"[yellow]warning:[/yellow] {warning}")
    jobs = ", ".join(j.name for j in application.jobs)
    # Plain: Rich (a tenth of the command's time) is loaded only for what it colours.
    print(f"{file}: valid ({len(application.jobs)} job(s): {jobs})")
    if explain:
        from velostream.sql.explain import explain_application

        print("\n".join(explain_application(application)))
    return 0
