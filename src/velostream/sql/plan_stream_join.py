"""Plan a stream–stream join: `FROM a [INNER | LEFT [OUTER]] JOIN b ON a.k = b.k ...`.

A join is stream–stream when the job sets `'join.timeout'` and its joined side is a
declared source (Kafka, a file, watched or not): both sides are then streamed (one
`MultiSource`), and rows match when the ON condition holds and their event times
(`event.time.field`, else `_timestamp`) are at most `join.timeout` apart. A watched
file joined without `'join.timeout'` is refused here, naming the key; a Kafka topic
joined without it stays a table side (plan_join).

Only a stateless projection and WHERE may follow the join: GROUP BY, windows and row
windows over it are refused by the planner with the nearest form (write the join to a
sink and aggregate it in a second statement).
"""

from __future__ import annotations

import re

from sqlglot import exp

from velostream.errors import PlanError
from velostream.sql.duration import parse_duration_ms
from velostream.sql.model import JobSpec
from velostream.sql.plan import BATCH, TABLE, StreamJoin
from velostream.sql.plan_sql import quote, start_of, to_sql

__all__ = ["AGGREGATE_OVER_JOIN", "plan_stream_join", "stream_join_from_sql"]

AGGREGATE_OVER_JOIN = (
    "GROUP BY, windows and row windows over a stream–stream join are not supported yet: "
    "write the join to a sink (a file or Kafka topic) in one statement and aggregate it "
    "in a second statement that reads it"
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_WATCHED = ("true", "1", "yes", "on")


def _watched(job: JobSpec, name: str) -> bool:
    connector = next((c for c in job.sources if c.name.lower() == name.lower()), None)
    if connector is None or connector.type != "file_source":
        return False
    return str(connector.properties.get("watch", "false")).strip().lower() in _WATCHED


def _declared(job: JobSpec, name: str) -> bool:
    in_app = any(t.statement_name.lower() == name.lower() for t in job.tables)
    return not in_app and any(c.name.lower() == name.lower() for c in job.sources)


def plan_stream_join(tree: exp.Select, job: JobSpec, stream: str) -> StreamJoin | None:
    """The stream–stream join of `tree` (taken out of it), or None if it has none.

    PlanError, in one line with the nearest supported form, at what cannot be honoured.
    """
    joins = list(tree.args.get("joins") or [])
    timeout = job.properties.get("join.timeout")
    candidates = [
        j
        for j in joins
        if isinstance(j.this, exp.Table)
        and _declared(job, j.this.name)
        and j.this.name.lower() != stream.lower()
        and (timeout is not None or _watched(job, j.this.name))
    ]
    if not candidates:
        if timeout is not None:
            raise PlanError(
                "'join.timeout' is for a stream–stream join (FROM a JOIN b, both declared "
                "sources), which this statement has not: remove it"
            )
        return None
    join = candidates[0]
    name = join.this.name
    if timeout is None:
        raise PlanError(
            f"JOIN {name}: {name} is a watched file (unbounded): a stream–stream join needs "
            f"'join.timeout' (rows match within it of event time), or join {name} without "
            "'watch' (a table side)",
            start_of(join),
        )
    if job.is_table:
        raise PlanError(
            f"in-app table {job.statement_name} cannot be a stream–stream join (it is "
            "computed whole, from bounded inputs): give the statement a sink, or join a "
            "table side without 'join.timeout'",
            start_of(join),
        )
    if len(joins) > 1:
        raise PlanError(
            "a stream–stream join joins exactly two sources: write the join to a sink and "
            "join further in a second statement",
            start_of(joins[1]),
        )
    _check_kind(join)
    from_ = tree.args.get("from_")
    assert from_ is not None and isinstance(from_.this, exp.Table)
    left_alias = from_.this.alias or from_.this.name
    right_alias = join.this.alias or name
    if left_alias.lower() == right_alias.lower():
        raise PlanError(
            f"both sides of the join are called {left_alias}: give one an alias", start_of(join)
        )
    on = join.args.get("on")
    if on is None:
        raise PlanError(
            "a stream–stream join needs ON with an equality of a key of each side: "
            f"ON {left_alias}.k = {right_alias}.k [AND ...] (USING is not supported)",
            start_of(join),
        )
    if not _has_key_equality(on, left_alias, right_alias):
        raise PlanError(
            "the ON of a stream–stream join needs an equality of a key of each side, "
            f"qualified: ON {left_alias}.k = {right_alias}.k [AND ...]",
            start_of(on),
        )
    time_column = job.event_time_field or job.properties.get("event.time.field") or "_timestamp"
    if not _IDENTIFIER.match(time_column):
        raise PlanError(
            f"a stream–stream join's event time must be a column both sides have, not "
            f"{time_column!r} ('event.time.field')"
        )

    def named(alias: str) -> tuple[str, ...]:
        found = {c.name for c in tree.find_all(exp.Column) if c.table.lower() == alias.lower()}
        return tuple(sorted(found))

    right_columns, left_columns = named(right_alias), named(left_alias)
    tree.set("joins", None)
    return StreamJoin(
        left=stream,
        right=name,
        left_alias=left_alias,
        right_alias=right_alias,
        on_sql=to_sql(on),
        timeout_ms=parse_duration_ms(timeout),
        time_column=time_column,
        kind=(join.args.get("side") or "INNER").upper(),
        right_columns=right_columns,
        left_columns=left_columns,
    )


def _check_kind(join: exp.Join) -> None:
    side = (join.args.get("side") or "").upper()
    kind = (join.args.get("kind") or "").upper()
    method = (join.args.get("method") or "").upper()
    if method or kind not in ("", "INNER", "OUTER") or (kind == "OUTER" and not side):
        what = " ".join(w for w in (method, side, kind) if w)
        raise PlanError(
            f"{what} JOIN is not supported: use [INNER | LEFT | RIGHT | FULL [OUTER]] JOIN b "
            "ON condition",
            start_of(join),
        )


def _has_key_equality(on: exp.Expr, left: str, right: str) -> bool:
    """Whether a top-level conjunct of `on` is `left.x = right.y` (either way round)."""
    conjuncts = list(on.flatten()) if isinstance(on, exp.And) else [on]
    for node in conjuncts:
        node = node.unnest()
        if not isinstance(node, exp.EQ):
            continue
        tables = [
            {c.table.lower() for c in side.find_all(exp.Column)}
            for side in (node.this, node.expression)
        ]
        if {left.lower()} in tables and {right.lower()} in tables:
            return True
    return False


def stream_join_from_sql(join: StreamJoin) -> str:
    """The join as one FROM over the batch (left) and `__table_<right>`: what validation
    binds the query against (both sides' columns, and the event time of each)."""
    left, right = quote(join.left_alias), quote(join.right_alias)
    time = quote(join.time_column)
    return (
        f"{BATCH} AS {left} {'JOIN' if join.kind == 'INNER' else join.kind + ' JOIN'} "
        f"{TABLE.format(join.right.lower())} AS {right} ON ({join.on_sql}) "
        f"AND {left}.{time} IS NOT NULL AND {right}.{time} IS NOT NULL"
    )
