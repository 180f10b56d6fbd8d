"""`velo-sql validate --explain`: what each job of an application will do, in words.

One paragraph per job: what it reads and writes, the kind of query, and for a job
whose state is partitioned, where the state lives and how keys reach it (a job the
parser added to repartition a topic says whose it is).
"""

from __future__ import annotations

from velostream.sql.model import Application, ConnectorConfig, JobSpec
from velostream.sql.partitioning import changelog_topic, wants_partitioned
from velostream.sql.pipeline import PIPE_FROM, REPARTITION_OF
from velostream.sql.planner import PlanKind, plan_job

__all__ = ["explain_application"]

_KINDS = {
    PlanKind.AGGREGATE: "GROUP BY",
    PlanKind.UNION: "UNION ALL",
    PlanKind.ROW_WINDOW: "row windows",
    PlanKind.DISTINCT: "SELECT DISTINCT",
    PlanKind.STREAM_JOIN: "stream–stream join",
}


def _connector(c: ConnectorConfig) -> str:
    props = c.properties
    where = props.get("topic") or props.get("path")
    keyed = props.get("key.columns")
    text = f"{c.name} ({c.type}{f', {where}' if where else ''}"
    if keyed:
        text += f", keyed by {keyed}"
    return text + ")"


def _job_lines(job: JobSpec, app: str) -> list[str]:
    lines = [f"{job.name}:"]
    lines.append("  reads " + ", ".join(_connector(c) for c in job.sources))
    lines.append("  writes " + (", ".join(_connector(s) for s in job.sinks) or "nothing"))
    plan = plan_job(job)
    kind = _KINDS.get(plan.kind, "stateless")
    if plan.kind == PlanKind.AGGREGATE and plan.keys:
        kind += f" {', '.join(plan.keys)}"
    if plan.window is not None:
        kind += ", windowed"
    lines.append(f"  query: {kind}")
    source = job.sources[0] if job.sources else None
    repartitions = bool(job.sinks) and REPARTITION_OF in job.sinks[0].properties
    if source is not None and repartitions:
        lines.append(
            f"  repartitions {source.properties.get('topic', source.name)} by "
            f"{job.sinks[0].properties.get('key.columns')} for the job after it "
            "(added because that job's state is partitioned)"
        )
    if wants_partitioned(job) and source is not None:
        group = source.properties.get("group.id", f"velo-{app}-{job.name}")
        lines.append(
            f"  state: one store per partition of {source.properties.get('topic')}, "
            f"changelog {changelog_topic(app, job.name, group)}"
        )
        if source.properties.get(PIPE_FROM):
            lines.append(
                f"  keys reach it through {source.properties.get('topic')}, written by "
                f"{source.properties[PIPE_FROM]}"
            )
    return lines


def explain_application(app: Application) -> list[str]:
    """The lines `velo-sql validate --explain` prints for `app` (already validated)."""
    lines: list[str] = []
    for job in app.jobs:
        lines += _job_lines(job, app.name)
    return lines
