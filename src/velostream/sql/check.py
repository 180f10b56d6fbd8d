"""Check a whole application before anything runs: parse it, then plan every job."""

from __future__ import annotations

from pathlib import Path

from velostream.errors import SqlValidationError
from velostream.sql.model import Application
from velostream.sql.parser import parse_application
from velostream.sql.planner import PlanError, plan_job

__all__ = ["check_application"]


def check_application(text: str, *, base_dir: Path, source_name: str) -> Application:
    """The parsed application; `SqlValidationError` lists every problem with line:column.

    `base_dir` resolves relative `config_file` paths (the application file's folder).
    """
    app = parse_application(text, base_dir=base_dir, source_name=source_name)
    problems = []
    for index, job in enumerate(app.jobs, start=1):
        try:
            plan_job(job)
        except PlanError as exc:
            problems.append(f"statement {index} ({job.name}) at {job.select_position}: {exc}")
    if problems:
        found = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
        raise SqlValidationError(
            f"{source_name}: {found} found:\n" + "\n".join(f"  {p}" for p in problems),
            problems=problems,
        )
    return app
