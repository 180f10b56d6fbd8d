"""Repartitioning: a job whose state is partitioned, over a topic keyed otherwise.

A job with `'state.partitioned' = 'true'` needs every row of a group in one partition.
When its kafka_source does not declare `key.columns` that its GROUP BY holds, the
application gets one more job, before it, as Kafka Streams and ksqlDB do:

- `<job>_repartition` reads the source (its consumer group: the source's `group.id`
  with `-repartition`, or `velo-<app>-<job>_repartition`) and writes every row,
  unchanged, with its message time and headers, to `<app>-<job>-repartition`
  (`<group.id>-repartition` when the source names its group), keyed by the GROUP BY
  columns. The topic is created with the source topic's partition
  count (`repartition.of`), whichever of the two jobs opens it first;
- the job itself reads that topic (in the source's consumer group, from the earliest
  offset, read_committed), declared keyed by its GROUP BY columns: its state is then
  partitioned by them.

Both jobs run on every server of the group, and in transactional mode each is
exactly-once. A query that reads `_key`, `_partition` or `_offset` would read the
repartition topic's, not the source's: it is refused.
"""

from __future__ import annotations

import dataclasses
import re

from velostream.sql.model import Application, ConnectorConfig, JobSpec, StatementKind
from velostream.sql.partitioning import PROPERTY, group_topic, keyed_by, wants_partitioned
from velostream.sql.pipeline import PIPE_FROM, REPARTITION_OF

__all__ = [
    "needs_repartition",
    "repartition",
    "repartition_problem",
    "repartition_topic",
    "with_repartitions",
]

_MOVED = re.compile(r"(?<![\w.])(_key|_partition|_offset)\b", re.IGNORECASE)
# Source keys that do not carry over to the reader of the repartition topic.
_NOT_CARRIED = (
    "topic",
    "topic.name",
    "group.id",
    "value.format",
    "value.serializer",
    "key.format",
    "key.columns",
    "auto.offset.reset",
    "partitions",
    "config_file",
)


# Client settings the repartition topic's producer shares with the source.
_CLIENT = ("bootstrap.servers", "brokers", "security.", "sasl.", "ssl.", "client.dns.lookup")


def repartition_topic(app: str, job: str, group: str) -> str:
    return group_topic(app, job, group, "repartition")


def needs_repartition(job: JobSpec, keys: list[str]) -> bool:
    """Whether `job` (asking for partitioned state, GROUP BY `keys`) reads a topic not
    declared keyed by columns its GROUP BY holds."""
    if not wants_partitioned(job) or len(job.sources) != 1 or not keys:
        return False
    source = job.sources[0]
    if source.type != "kafka_source" or source.properties.get(REPARTITION_OF):
        return False
    return not keyed_by(source, keys)


def repartition_problem(job: JobSpec, keys: list[str]) -> str | None:
    """Why `job` cannot be repartitioned (None: it can)."""
    if job.sources and job.sources[0].properties.get("partitions"):
        return (
            f"job {job.name!r}: 'state.partitioned' reads its topic through the consumer "
            "group, not chosen 'partitions'"
        )
    plain = [k for k in keys if re.fullmatch(r'"?[A-Za-z_][\w]*"?', k.strip())]
    if len(plain) != len(keys):
        return (
            f"job {job.name!r}: 'state.partitioned' repartitions by GROUP BY columns; "
            f"GROUP BY {', '.join(keys)} has an expression: group by a column (compute it "
            "in an earlier statement), or declare the topic's key.columns"
        )
    moved = sorted({m.group(1).lower() for m in _MOVED.finditer(job.select_sql)})
    if moved:
        return (
            f"job {job.name!r}: 'state.partitioned' repartitions the topic by the GROUP BY "
            f"columns, so {', '.join(moved)} would be the repartition topic's, not the "
            "source's: leave them out, or declare the source's key.columns"
        )
    return None


def with_repartitions(app: Application) -> Application:
    """`app` with a repartitioning job before each job that needs one (a job whose
    query does not plan is left as it is: validation reports it)."""
    from velostream.errors import PlanError
    from velostream.sql.planner import plan_job

    keys_of: dict[str, list[str]] = {}
    for job in app.jobs:
        if wants_partitioned(job):
            try:
                keys_of[job.name] = plan_job(job).keys
            except PlanError:
                continue
    return repartition(app, keys_of) if keys_of else app


def repartition(app: Application, keys_of: dict[str, list[str]]) -> Application:
    """`app` with a repartitioning job before each job that needs one (see the module
    docstring); `keys_of`: each job's GROUP BY keys, by job name."""
    jobs: list[JobSpec] = []
    for job in app.jobs:
        keys = keys_of.get(job.name, [])
        if not needs_repartition(job, keys) or repartition_problem(job, keys) is not None:
            jobs.append(job)
            continue
        writer, reader = _split(app.name, job, [k.strip().strip('"') for k in keys])
        jobs += [writer, reader]
    return dataclasses.replace(app, jobs=tuple(jobs))


def _split(app: str, job: JobSpec, keys: list[str]) -> tuple[JobSpec, JobSpec]:
    source = job.sources[0]
    props = source.properties
    original = props.get("topic") or props.get("topic.name") or source.name
    group = props.get("group.id") or f"velo-{app}-{job.name}"
    topic = repartition_topic(app, job.name, group)
    name = f"{job.name}_repartition"
    shared = {k: v for k, v in props.items() if k not in _NOT_CARRIED and k != PIPE_FROM}
    sink = ConnectorConfig(
        name=name,
        type="kafka_sink",
        properties={
            **{k: v for k, v in props.items() if k.startswith(_CLIENT)},
            "topic": topic,
            "key.columns": ",".join(keys),
            "value.format": "json",
            REPARTITION_OF: original,
        },
    )
    first_group = f"{props['group.id']}-repartition" if "group.id" in props else None
    writer_source = dataclasses.replace(
        source,
        properties={**props, "group.id": first_group or f"velo-{app}-{name}"},
    )
    writer = dataclasses.replace(
        job,
        kind=StatementKind.STREAM,
        name=name,
        statement_name=name,
        select_sql=f"SELECT *, _timestamp, _headers FROM {source.name}",
        emit=None,
        sources=(writer_source,),
        sinks=(sink,),
        primary_keys=(),
        properties={k: v for k, v in job.properties.items() if k != PROPERTY},
        metrics=(),
        tables=(),
    )
    reader_source = ConnectorConfig(
        name=source.name,
        type="kafka_source",
        properties={
            **shared,
            "topic": topic,
            "group.id": group,
            "value.format": "json",
            "key.columns": ",".join(keys),
            "auto.offset.reset": "earliest",
            REPARTITION_OF: original,
            PIPE_FROM: name,
        },
    )
    reader = dataclasses.replace(job, sources=(reader_source,))
    return writer, reader
