"""Reading an application file for `velo-sql run` and `velo-sql validate`: parse, plan
and bind it (imported alone by `validate`, which runs no job)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from velostream.datasource.validation import check_application
from velostream.errors import VelostreamError
from velostream.sql.model import Application

__all__ = ["load_application", "validate_application"]


def load_application(path: Path, *, notes: Callable[[str], None] | None = None) -> Application:
    """Parse, plan and bind an application file; raises VelostreamError listing every
    problem. `notes` is told of each source whose columns could not be checked."""
    return check_application(_read(path), base_dir=path.parent, source_name=str(path), notes=notes)


def validate_application(path: Path) -> Application:
    """`load_application`, with a warning for each source whose columns it could not
    check (a Kafka topic of JSON values, a file not there yet)."""
    notes: list[str] = []
    app = load_application(path, notes=notes.append)
    return replace(app, warnings=(*app.warnings, *notes))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise VelostreamError(f"cannot read {path}: {exc.strerror or exc}") from exc
