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

from velostream.sql.model import ConnectorConfig, JobSpec
from velostream.sql.planner import PlanKind, QueryPlan

__all__ = [
    "PROPERTY",
    "changelog_topic",
    "declared_keys",
    "group_topic",
    "keyed_by",
    "partitioning_problem",
    "wants_partitioned",
]

PROPERTY = "state.partitioned"


def group_topic(app: str, job: str, group: str, suffix: str) -> str:
    """A topic of `job`'s own (its changelog, its repartition topic): it belongs to the
    consumer group, so servers sharing the group share it and a deployment with another
    `group.id` keeps its own. `<app>-<job>-<suffix>` for the parser's default group."""
    if group == f"velo-{app}-{job}":
        return f"{app}-{job}-{suffix}"
    return f"{group}-{suffix}"


def changelog_topic(app: str, job: str, group: str, store: str = "state") -> str:
    """The changelog of `job`'s state store."""
    return group_topic(app, job, group, f"{store}-changelog")


def wants_partitioned(job: JobSpec) -> bool:
    return str(job.properties.get(PROPERTY, "false")).strip().lower() in ("true", "1", "yes")


def _plain(sql: str) -> str:
    return sql.strip().strip('"').lower()


def declared_keys(source: ConnectorConfig) -> list[str]:
    """The columns a kafka_source says its messages are keyed by (`key.columns`)."""
    raw = str(source.properties.get("key.columns", ""))
    return [_plain(c) for c in raw.split(",") if c.strip()]


def keyed_by(source: ConnectorConfig, keys: list[str]) -> bool:
    """Whether every row of a GROUP BY `keys` group is in one partition of `source`:
    its declared key columns are some of the keys."""
    declared = declared_keys(source)
    return bool(declared) and set(declared) <= {_plain(k) for k in keys}


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
    if not keyed_by(sources[0], plan.keys):
        declared = declared_keys(sources[0])
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
