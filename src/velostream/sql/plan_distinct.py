"""`SELECT DISTINCT` on a stream: what the planner accepts, and how its state is bounded.

A DISTINCT stream emits each distinct row once, at its first occurrence, so the engine
remembers the rows it emitted. That memory must be bounded: by `'distinct.ttl'` (a row
is forgotten that long after it was emitted) or by the source ending. On an unbounded
source (Kafka, a watched file) without a TTL the job is refused at validation, naming
the fix: it would otherwise grow without end and fail hours later.

DISTINCT is for plain SELECTs (projection and WHERE). With GROUP BY, aggregates, a time
window or window functions it is refused: a GROUP BY already emits one row per group
(per window), and its changelog rows are not meant to be deduplicated.
"""

from __future__ import annotations

import re

from sqlglot import exp

from velostream.errors import PlanError
from velostream.sql.model import JobSpec
from velostream.sql.plan_sql import quote

__all__ = ["TTL_KEY", "distinct_of", "distinct_time_sql", "unbounded_source"]

TTL_KEY = "distinct.ttl"
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def unbounded_source(job: JobSpec) -> str | None:
    """`name (type)` of the first source of `job` that may never end, else None.

    A source type this layer does not know is taken as unbounded: a DISTINCT that is
    refused with a clear fix beats one that grows without end.
    """
    for source in job.sources:
        props = {k.lower(): str(v).strip().lower() for k, v in source.properties.items()}
        kind = source.type.lower()
        if kind == "file_source" and props.get("watch", "false") not in _TRUE:
            continue
        if kind == "memory_source" and props.get("bounded", "true") not in _FALSE:
            continue
        return f"{source.name} ({source.type}{', watched' if kind == 'file_source' else ''})"
    return None


def distinct_of(tree: exp.Select, job: JobSpec, *, grouped: bool, windowed: bool) -> bool:
    """Whether the SELECT is DISTINCT; PlanError for a DISTINCT the engine cannot honour.

    An accepted DISTINCT is taken off `tree`: the engine deduplicates across batches.
    """
    node = tree.args.get("distinct")
    if node is None:
        if TTL_KEY in job.properties:
            raise PlanError(
                f"'{TTL_KEY}' is set but the SELECT is not DISTINCT: write SELECT DISTINCT, "
                "or remove the key"
            )
        return False
    found = re.search(r"\bDISTINCT\b", job.select_sql, re.IGNORECASE)
    at = found.start() if found else None
    if node.args.get("on") is not None:
        raise PlanError(
            "SELECT DISTINCT ON (...) is not supported: SELECT DISTINCT <columns> emits "
            "the first row of each distinct combination",
            at,
        )
    if grouped:
        raise PlanError(
            "SELECT DISTINCT cannot be combined with GROUP BY, aggregates or a time window: "
            "a GROUP BY already emits one row per group (drop DISTINCT, or GROUP BY the "
            "selected columns with EMIT FINAL)",
            at,
        )
    if windowed:
        raise PlanError(
            "SELECT DISTINCT cannot be combined with window functions (OVER): "
            "deduplicate in one statement and compute the window in the next",
            at,
        )
    if TTL_KEY not in job.properties:
        unbounded = unbounded_source(job)
        if unbounded is not None:
            raise PlanError(
                f"SELECT DISTINCT on source {unbounded}, which never ends, would remember "
                f"every distinct row forever: set '{TTL_KEY}' (such as '1h') to forget a "
                "row that long after it was emitted",
                at,
            )
    tree.set("distinct", None)
    return True


def distinct_time_sql(job: JobSpec) -> str | None:
    """The event time that ages remembered rows (`event.time.field`); None: processing time."""
    field = job.event_time_field or job.properties.get("event.time.field")
    return quote(field.strip()) if field and field.strip() else None
