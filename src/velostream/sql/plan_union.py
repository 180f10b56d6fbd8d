"""Plan `SELECT ... FROM a UNION ALL SELECT ... FROM b [UNION ALL ...]`: one branch per source.

A union job reads several sources (a multi-source job); each batch comes from one of
them and runs through that source's branch only, a stateless SELECT with its own
WHERE and projection. The branches are found in the SELECT's text at its top-level
`UNION ALL`s and each is planned alone by the ordinary planner, over the job's SELECT
text with every other branch blanked, so an error in a branch points at its line and
column.

What is refused, each with the nearest supported form: `UNION` without ALL, `EXCEPT`,
`INTERSECT` (they need state across batches), a branch with GROUP BY, a window, LIMIT
or ORDER BY, two branches over one source, and branches whose columns differ (names
here; types in `check_union_types`, against the sources' sampled schemas).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot.errors import TokenError
from sqlglot.tokenizer_core import Token, TokenType

from velostream.errors import PlanError
from velostream.sql.duckdb_check import binding_connection
from velostream.sql.model import ConnectorConfig, JobSpec
from velostream.sql.plan import BATCH, ROW, PlanKind, QueryPlan
from velostream.sql.plan_sql import blank

__all__ = [
    "branch_job",
    "check_union_types",
    "is_union",
    "plan_union",
    "stream_sources",
    "union_branches",
]

# The nearest supported form for an aggregate over several sources.
GROUP_BY_OVER_UNION = (
    "GROUP BY over a UNION ALL is not supported yet: write the UNION ALL to a sink in one "
    "statement (a file or Kafka topic) and GROUP BY in a second statement that reads it"
)


def _tokens(sql: str) -> list[Token]:
    try:
        return list(sqlglot.tokenize(sql, read="duckdb"))
    except TokenError:
        return []  # the ordinary planner reports the syntax error


def _set_operations(sql: str) -> list[tuple[Token, Token | None]]:
    """Each top-level UNION / EXCEPT / INTERSECT token with the token after it."""
    tokens = _tokens(sql)
    depth, found = 0, []
    for index, token in enumerate(tokens):
        if token.token_type == TokenType.L_PAREN:
            depth += 1
        elif token.token_type == TokenType.R_PAREN:
            depth -= 1
        elif depth == 0 and token.token_type in (
            TokenType.UNION,
            TokenType.EXCEPT,
            TokenType.INTERSECT,
        ):
            after = tokens[index + 1] if index + 1 < len(tokens) else None
            found.append((token, after))
    return found


def stream_sources(job: JobSpec) -> tuple[ConnectorConfig, ...]:
    """The sources `job` reads as streams: every branch's of a UNION ALL, both sides of a
    stream–stream join (`'join.timeout'`, plan_stream_join), else its FROM source; the
    others (JOIN and subquery table sides) are loaded whole, not streamed."""
    if is_union(job.select_sql):
        return job.sources
    if "join.timeout" in job.properties:  # the planner refuses anything but two sources
        return job.sources[:2]
    return job.sources[:1]


def is_union(sql: str) -> bool:
    """Whether the SELECT text has a top-level set operation (UNION, EXCEPT, INTERSECT)."""
    return bool(_set_operations(sql))


def union_branches(sql: str) -> list[str]:
    """The branches of a top-level `UNION ALL`, each as the whole text with the rest blanked.

    Keeping every offset lets the ordinary planner place an error in the user's file.
    A branch in parentheses loses them (blanked). Raises PlanError for UNION without
    ALL, EXCEPT and INTERSECT.
    """
    cuts: list[tuple[int, int]] = []
    for token, after in _set_operations(sql):
        word = token.text.upper()
        if token.token_type != TokenType.UNION:
            raise PlanError(
                f"{word} is not supported on streams: it needs state across batches "
                "(UNION ALL of stateless SELECTs is)",
                token.start,
            )
        if after is None or after.token_type != TokenType.ALL:
            raise PlanError(
                "UNION (without ALL) is not supported on streams: removing duplicates needs "
                "state across batches; use UNION ALL",
                token.start,
            )
        cuts.append((token.start, after.end + 1))
    if not cuts:
        return [sql]
    starts = [0, *(end for _, end in cuts)]
    ends = [*(start for start, _ in cuts), len(sql)]
    branches = []
    for start, end in zip(starts, ends, strict=True):
        text = blank(sql[:start]) + sql[start:end] + blank(sql[end:])
        branches.append(_strip_parentheses(text, start, end))
    return branches


def _strip_parentheses(text: str, start: int, end: int) -> str:
    """Blank the parentheses around a whole branch: `(SELECT ...)` is the SELECT."""
    body = text[start:end]
    lead, trail = len(body) - len(body.lstrip()), len(body.rstrip())
    if not body.strip().startswith("(") or not body.rstrip().endswith(")"):
        return text
    depth = 0
    for index in range(lead, trail):
        depth += {"(": 1, ")": -1}.get(body[index], 0)
        if depth == 0 and index < trail - 1:
            return text  # `(...) x (...)`: the first parenthesis closes early
    opened, closed = start + lead, start + trail - 1
    return text[:opened] + " " + text[opened + 1 : closed] + " " + text[closed + 1 :]


def branch_job(job: JobSpec, branch_sql: str) -> JobSpec:
    """`job` with one branch as its SELECT (the other branches blanked)."""
    return dataclasses.replace(job, select_sql=branch_sql)


def plan_union(job: JobSpec, plan_branch: Callable[[JobSpec], QueryPlan]) -> QueryPlan:
    """Plan each branch with `plan_branch` (the ordinary planner) and check they fit.

    The union's plan has kind UNION, the first branch's columns, and `branches` in the
    order written; PlanError names what does not fit and the nearest supported form.
    """
    branches: list[QueryPlan] = []
    seen: dict[str, int] = {}
    for number, sql in enumerate(union_branches(job.select_sql), start=1):
        plan = plan_branch(branch_job(job, sql))
        offset = len(sql) - len(sql.lstrip())
        if plan.kind != PlanKind.STATELESS:
            raise PlanError(
                f"UNION ALL branch {number} (FROM {plan.source}) is not a stateless SELECT: "
                f"{GROUP_BY_OVER_UNION}",
                offset,
            )
        if plan.limit is not None:
            raise PlanError(
                f"LIMIT in UNION ALL branch {number} is not supported: a union job emits "
                "every row of its branches (filter with WHERE)",
                offset,
            )
        if plan.source in seen:
            raise PlanError(
                f"UNION ALL branches {seen[plan.source]} and {number} both read "
                f"{plan.source}: each source may appear in one branch; declare a second "
                "source over the same data, or use one SELECT with WHERE ... OR ...",
                offset,
            )
        seen[plan.source] = number
        if plan.stars == [] and branches and not branches[0].stars:
            _check_names(branches[0], plan, number, offset)
        branches.append(plan)
    first = branches[0]
    return QueryPlan(
        kind=PlanKind.UNION,
        source=first.source,
        output_columns=list(first.output_columns),
        select_sql=list(first.select_sql),
        emit=job.emit,
        branches=branches,
    )


def _check_names(first: QueryPlan, plan: QueryPlan, number: int, offset: int) -> None:
    if first.output_columns != plan.output_columns:
        raise PlanError(
            f"UNION ALL branches must produce the same columns in the same order: branch 1 "
            f"(FROM {first.source}) gives {', '.join(first.output_columns)}; branch {number} "
            f"(FROM {plan.source}) gives {', '.join(plan.output_columns)} (rename with AS)",
            offset,
        )


def check_union_types(
    plan: QueryPlan, schemas: Mapping[str, pa.Schema], offsets: Mapping[str, int] | None = None
) -> None:
    """Check every branch yields the same column names and types over its source's schema.

    `schemas` maps a branch's source to its sampled `pyarrow.Schema` where the types are
    known (typed samples only); a branch whose source's types are unknown is not judged.
    `offsets` (by source) place an error at the branch that differs from the first.
    """
    at = offsets or {}
    known: list[tuple[QueryPlan, list[tuple[str, str]]]] = []
    con = binding_connection()
    try:
        for branch in plan.branches:
            schema = schemas.get(branch.source)
            if schema is None:
                continue
            con.register(BATCH, schema.empty_table())
            try:
                columns = list(schema.names)
                described = con.sql(
                    f"SELECT {branch.select_list(columns, (ROW,))} FROM {BATCH} LIMIT 0"
                )
                known.append(
                    (branch, list(zip(described.columns, map(str, described.types), strict=True)))
                )
            except duckdb.Error:
                continue  # the branch's own binding reports it
            finally:
                con.unregister(BATCH)
    finally:
        con.close()
    if len(known) < 2:
        return
    first, first_columns = known[0]
    for branch, columns in known[1:]:
        if [n for n, _ in columns] != [n for n, _ in first_columns]:
            raise PlanError(
                f"UNION ALL branches must produce the same columns in the same order: FROM "
                f"{first.source} gives {', '.join(n for n, _ in first_columns)}; FROM "
                f"{branch.source} gives {', '.join(n for n, _ in columns)} (rename with AS)",
                at.get(branch.source),
            )
        for (name, kind), (_, other) in zip(first_columns, columns, strict=True):
            if kind != other:
                raise PlanError(
                    f"UNION ALL column {name} is {kind} FROM {first.source} but {other} FROM "
                    f"{branch.source}: CAST one of them so the types agree",
                    at.get(branch.source),
                )
