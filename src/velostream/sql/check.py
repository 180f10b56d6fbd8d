"""Check a whole application before anything runs: parse it, then plan every job."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from velostream.errors import PlanError, SqlValidationError
from velostream.fsutil import PathRoots
from velostream.sql.bind import SchemaLookup, bind_job
from velostream.sql.connectors import ConnectorCatalog
from velostream.sql.model import Application, JobSpec, Position
from velostream.sql.parser import parse_application
from velostream.sql.plan_union import branch_job, check_union_types, union_branches
from velostream.sql.planner import PlanKind, QueryPlan, plan_job

__all__ = ["check_application"]

# The parser cuts `PRIMARY KEY` (and the blanks before it) out of the SELECT it keeps.
_PRIMARY_KEY = re.compile(r"\s+PRIMARY\s+KEY\b", re.IGNORECASE)


def _locate(job: JobSpec, offset: int | None) -> Position:
    """The file position of character `offset` of `job.select_sql` (its start if None).

    The SELECT keeps its line breaks and, comments being blanked, its columns; only a
    `PRIMARY KEY` cut out earlier on the same line moves them, and is added back.
    """
    if offset is None:
        return job.select_position
    before = job.select_sql[: max(offset, 0)]
    line = job.select_position.line + before.count("\n")
    if "\n" in before:
        column = len(before) - before.rfind("\n")
    else:
        column = job.select_position.column + len(before)
    index = line - job.position.line
    statement_lines = job.text.split("\n")
    if 0 <= index < len(statement_lines):
        indent = job.position.column - 1 if index == 0 else 0
        for cut in _PRIMARY_KEY.finditer(statement_lines[index]):
            if indent + cut.start() + 1 < column:
                column += len(cut.group())
    return Position(line, column)


def check_application(
    text: str,
    *,
    connectors: ConnectorCatalog,
    base_dir: Path,
    source_name: str,
    env: Mapping[str, str] | None = None,
    roots: PathRoots | None = None,
    schemas: SchemaLookup | None = None,
) -> Application:
    """The parsed application; `SqlValidationError` lists every problem with line:column.

    `connectors` are the source and sink types there are, each with the check of its
    keys: `velostream.datasource.validation.check_application` passes the registered
    ones. `base_dir` resolves relative `config_file` paths (the application file's folder).
    A planning problem is placed where the planner found it, else at the SELECT. `env`
    is what `${VAR}` resolves from (None: the process environment); `roots`, if given,
    confine the `config_file`s read.

    With `schemas`, each planned job is also bound to its source's columns as
    `schemas` knows them (`velostream.sql.bind`): unknown columns, types and functions
    are problems here rather than errors when the job runs.
    """
    app = parse_application(
        text,
        connectors=connectors,
        env=env,
        base_dir=base_dir,
        source_name=source_name,
        roots=roots,
    )
    problems = []
    for index, job in enumerate(app.jobs, start=1):
        try:
            plan = plan_job(job)
            if schemas is not None and plan.kind == PlanKind.UNION:
                _bind_union(job, plan, schemas)
            elif schemas is not None:
                bind_job(job, plan, schemas(job, plan.source))
        except PlanError as exc:
            at = _locate(job, exc.offset)
            problems.append(f"statement {index} ({job.name}) at {at}: {exc}")
    if problems:
        found = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
        raise SqlValidationError(
            f"{source_name}: {found} found:\n" + "\n".join(f"  {p}" for p in problems),
            problems=problems,
        )
    return app


def _bind_union(job: JobSpec, plan: QueryPlan, schemas: SchemaLookup) -> None:
    """Bind each UNION ALL branch to its source, then check their columns agree."""
    typed, offsets = {}, {}
    for sql, branch in zip(union_branches(job.select_sql), plan.branches, strict=True):
        schema = schemas(job, branch.source)
        bind_job(branch_job(job, sql), branch, schema)
        offsets[branch.source] = len(sql) - len(sql.lstrip())
        if schema is not None and schema.typed:
            typed[branch.source] = schema.columns
    check_union_types(plan, typed, offsets)
