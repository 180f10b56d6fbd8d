"""Which jobs keep their state per input partition (`'state.partitioned' = 'true'`).

Such a job keeps one state store per partition of its Kafka topic, backed by a
changelog topic, so that several servers in one consumer group share its partitions
and a partition's state moves with it (docs/scaling.md). It needs a GROUP BY query
(windowed or not) over one kafka_source read through its consumer group, and the topic
keyed by GROUP BY columns, declared as the source's `key.columns`: then every row of a
group is in one partition. Anything else is refused at validation, naming what is
missing, rather than run with state that would be wrong.
"""

from __future__ import annotations

from velostream.sql.model import JobSpec
from velostream.sql.planner import PlanKind, QueryPlan

__all__ = ["PROPERTY", "changelog_topic", "partitioning_problem", "wants_partitioned"]

PROPERTY = "state.partitioned"


def changelog_topic(app: str, job: str, group: str, store: str = "state") -> str:
    """The changelog of `job`'s state store: it belongs to the consumer group (servers
    sharing the group share it; a deployment with another `group.id` keeps its own)."""
    if group == f"velo-{app}-{job}":  # the group the parser gives by default
        return f"{app}-{job}-{store}-changelog"
    return f"{group}-{store}-changelog"


def wants_partitioned(job: JobSpec) -> bool:
    return str(job.properties.get(PROPERTY, "false")).strip().lower() in ("true", "1", "yes")


def _plain(sql: str) -> str:
    return sql.strip().strip('"').lower()


def partitioning_problem(job: JobSpec, plan: QueryPlan) -> str | None:
    """Why `job` cannot keep its state per partition (None: it can, or does not ask)."""
    if not wants_partitioned(job):
        return None
    sources = [s for s in job.sources if s.name == plan.source]
    what = f"job {job.name!r}: 'state.partitioned'"
    if len(job.sources) != 1 or not sources or sources[0].type != "kafka_source":
        return f"{what} needs one kafka_source (the state follows its partitions)"
    props = sources[0].properties
    if props.get("partitions"):
        return f"{what} reads its topic through the consumer group, not chosen 'partitions'"
    if plan.kind != PlanKind.AGGREGATE or not plan.keys:
        return (
            f"{what} is built for GROUP BY queries with a key (windowed or not); "
            "this query keeps its state whole: run it on one server"
        )
    if plan.limit is not None or plan.tables:
        return f"{what} does not take LIMIT or a table side yet"
    declared = [_plain(c) for c in str(props.get("key.columns", "")).split(",") if c.strip()]
    keys = {_plain(k) for k in plan.keys}
    if not declared or not set(declared) <= keys:
        from velostream.sql.repartition import repartition_problem

        refused = repartition_problem(job, plan.keys)
        if refused is not None:
            return refused
        return (
            f"{what} needs the topic keyed by its GROUP BY columns: declare them with "
            f"'{plan.source}.key.columns' (the topic's message key must be made of them, "
            f"so every row of a group is in one partition); GROUP BY {', '.join(plan.keys)}"
            + (f" does not hold key.columns {', '.join(declared)}" if declared else "")
        )
    return None
