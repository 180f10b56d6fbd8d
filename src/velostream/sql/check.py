"""Check a whole application before anything runs: parse it, then plan every job."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa

from velostream.errors import PlanError, SqlValidationError
from velostream.fsutil import PathRoots
from velostream.sql.bind import SchemaLookup, SourceSchema, bind_job
from velostream.sql.connectors import ConnectorCatalog
from velostream.sql.model import Application, JobSpec, Position
from velostream.sql.parser import parse_application
from velostream.sql.partitioning import partitioning_problem
from velostream.sql.pipeline import PIPE_FROM
from velostream.sql.plan import TABLE, TableSide
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


def _table_schema(
    job: JobSpec, name: str, schemas: SchemaLookup, outputs: Mapping[str, SourceSchema | None]
) -> SourceSchema | None:
    """The columns of table side `name` of `job`: an in-app table's output, or a source's."""
    if any(t.statement_name.lower() == name.lower() for t in job.tables):
        return outputs.get(name.lower())
    return schemas(job, name)


def _piped(schemas: SchemaLookup, outputs: Mapping[str, SourceSchema | None]) -> SchemaLookup:
    """`schemas`, but a source reading an earlier statement's output (a pipeline) has
    the columns that statement's SELECT gives (None when it did not bind)."""

    def lookup(job: JobSpec, name: str) -> SourceSchema | None:
        connector = next((c for c in job.sources if c.name == name), None)
        writer = connector.properties.get(PIPE_FROM) if connector is not None else None
        if writer is None:
            return schemas(job, name)
        return outputs.get(writer.lower())

    return lookup


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
    ones. `base_dir` is where relative paths are taken from (the application file's folder).
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
    # In-app tables first (each before the statements that read it), in statement order.
    statements = sorted(
        [*app.tables, *app.jobs], key=lambda j: (j.position.line, j.position.column)
    )
    outputs: dict[str, SourceSchema | None] = {}
    lookup = None if schemas is None else _piped(schemas, outputs)
    for index, job in enumerate(statements, start=1):
        try:
            plan = plan_job(job)
            refused = partitioning_problem(job, plan)
            if refused is not None:
                raise PlanError(refused)
            if lookup is None:
                continue
            if plan.kind == PlanKind.UNION:
                output = _bind_union(job, plan, lookup)
            elif plan.kind == PlanKind.STREAM_JOIN:
                output = _bind_stream_join(job, plan, lookup)
            else:
                tables = {
                    side.name: _table_schema(job, side.name, lookup, outputs)
                    for side in plan.tables
                }
                output = bind_job(job, plan, lookup(job, plan.source), tables)
            what = "in-app table" if job.is_table else "statement"
            outputs[job.statement_name.lower()] = (
                None
                if output is None
                else SourceSchema(
                    source=job.statement_name,
                    columns=output,
                    origin=f"as {what} {job.statement_name}'s SELECT gives them",
                    typed=not any(f.type == pa.null() for f in output),
                )
            )
        except PlanError as exc:
            outputs[job.statement_name.lower()] = None
            at = _locate(job, exc.offset)
            problems.append(f"statement {index} ({job.name}) at {at}: {exc}")
    if problems:
        found = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
        raise SqlValidationError(
            f"{source_name}: {found} found:\n" + "\n".join(f"  {p}" for p in problems),
            problems=problems,
        )
    return app


def _bind_stream_join(job: JobSpec, plan: QueryPlan, schemas: SchemaLookup) -> pa.Schema | None:
    """Bind a stream–stream join's query to both sides' columns (the right side as if
    a table), after checking each has the event-time column; its output columns."""
    join = plan.stream_join
    assert join is not None
    left, right = schemas(job, join.left), schemas(job, join.right)
    for schema, name in ((left, join.left), (right, join.right)):
        if schema is None:
            continue
        if join.time_column.lower() not in (f.name.lower() for f in schema.columns):
            raise PlanError(
                f"{name} has no event-time column {join.time_column}: a stream–stream join "
                "matches rows by event time; set 'event.time.field' to a column both sides have"
            )
    relation = TABLE.format(join.right.lower())
    bound = dataclasses.replace(plan, tables=[TableSide(name=join.right, relation=relation)])
    return bind_job(job, bound, left, {join.right: right})


def _bind_union(job: JobSpec, plan: QueryPlan, schemas: SchemaLookup) -> pa.Schema | None:
    """Bind each UNION ALL branch to its source, then check their columns agree; the
    output columns (the first branch's, which the others match)."""
    typed, offsets, outputs = {}, {}, []
    for sql, branch in zip(union_branches(job.select_sql), plan.branches, strict=True):
        schema = schemas(job, branch.source)
        outputs.append(bind_job(branch_job(job, sql), branch, schema))
        offsets[branch.source] = len(sql) - len(sql.lstrip())
        if schema is not None and schema.typed:
            typed[branch.source] = schema.columns
    check_union_types(plan, typed, offsets)
    return outputs[0] if outputs else None
