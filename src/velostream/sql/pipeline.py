"""Pipelines: a statement that reads an earlier statement's output by its name.

`FROM earlier` with no `'earlier.type'` in the reader's WITH reads what the earlier
statement's sink writes, durably, never an in-memory hand-off: a crash loses nothing
and each job keeps its own position. The reader's source is derived from that sink:

- a `file_sink` gives a `file_source` on the same file and format, fed by a pipe
  (`velostream.datasource.file.pipe`): the reader sees only committed rows, decodes
  them with the writer's schema, and ends when the writer has ended;
- a `kafka_sink` gives a `kafka_source` on the same topic (its own consumer group,
  `velo-<app>-<job>`, from the earliest offset; read_committed, so a transactional
  writer's aborted batches are never read).

Any other sink cannot be read back, and the reader is refused, saying so.
"""

from __future__ import annotations

from velostream.sql.model import ConnectorConfig, JobSpec

__all__ = ["PIPE_FROM", "REPARTITION_OF", "pipeline_source"]

PIPE_FROM = "pipeline.from"
"""The internal key naming the statement whose output a derived source reads."""
REPARTITION_OF = "repartition.of"
"""The internal key naming the topic whose partition count a repartition topic takes
(sql/repartition.py)."""

# Client settings a reader of a writer's topic needs too (the rest are the writer's).
_KAFKA_SHARED = ("bootstrap.servers", "security.", "sasl.", "ssl.", "client.dns.lookup")


def pipeline_source(
    name: str, writer: JobSpec, *, app: str, job: str, unbounded: bool
) -> ConnectorConfig | str:
    """The source reading statement `writer`'s output as `name`, or why it cannot be.

    `unbounded`: whether the writer reads a source that never ends (the reader's
    source then never ends either, and validation treats it so).
    """
    sink = writer.sinks[0] if writer.sinks else None
    if sink is None:
        return f"{name} has no sink to read"
    props = sink.properties
    if sink.type == "file_sink":
        derived = {
            "path": props["path"],
            "format": props.get("format", "csv"),
            "watch": "true" if unbounded else "false",
            PIPE_FROM: writer.statement_name,
        }
        if "delimiter" in props:
            derived["delimiter"] = props["delimiter"]
        return ConnectorConfig(name=name, type="file_source", properties=derived)
    if sink.type == "kafka_sink":
        derived = {k: v for k, v in props.items() if k.startswith(_KAFKA_SHARED)}
        derived.update(
            {
                "topic": props.get("topic", sink.name),
                "value.format": props.get("value.format", "json"),
                "group.id": f"velo-{app}-{job}",
                "auto.offset.reset": "earliest",
                PIPE_FROM: writer.statement_name,
            }
        )
        return ConnectorConfig(name=name, type="kafka_source", properties=derived)
    return (
        f"{name} is statement {writer.statement_name}'s output, written to a {sink.type}, "
        "which cannot be read back: give that statement a file_sink or a kafka_sink to "
        "read it in a pipeline"
    )
