"""A job's connectors as the server creates them: its source, its sinks and its DLQ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from velostream.datasource.file.pipe import Pipe
from velostream.datasource.file.source import FileSource
from velostream.datasource.multi import MultiSource, sources_of
from velostream.datasource.registry import create_sink, create_source
from velostream.datasource.traits import Sink, Source
from velostream.dlq import FileDeadLetterQueue
from velostream.sql.model import Application, ConnectorConfig, JobSpec
from velostream.sql.pipeline import PIPE_FROM
from velostream.sql.plan_union import stream_sources

__all__ = ["Pipes", "file_dlq_path", "job_connectors"]


def _sink_properties(job: JobSpec, sink: ConnectorConfig) -> dict[str, str]:
    """A sink's properties; a Kafka sink also learns the PRIMARY KEY columns."""
    props = dict(sink.properties)
    if sink.type == "kafka_sink" and job.primary_keys:
        props.setdefault("key.columns", ",".join(job.primary_keys))
    return props


def file_dlq_path(job: JobSpec, data_dir: Path) -> Path | None:
    """The file of the job's dead letters: `dlq.path`, else `<data_dir>/dlq/<job>.jsonl`;
    None with `dlq.type = kafka`."""
    if job.properties.get("dlq.type") == "kafka":
        return None
    return Path(job.properties.get("dlq.path") or data_dir / "dlq" / f"{job.name}.jsonl")


def _dead_letter_queue(job: JobSpec, source: Source, sinks: list[Sink], data_dir: Path) -> Any:
    """The job's DLQ: a Kafka topic with `dlq.type = kafka`, else a JSON-lines file."""
    path = file_dlq_path(job, data_dir)
    if path is not None:
        return FileDeadLetterQueue(path)
    from velostream.dlq.kafka import kafka_dead_letter_queue

    return kafka_dead_letter_queue(
        job.name,
        job.properties,
        [*sources_of(source), *sinks],
        lookup=source if hasattr(source, "message") else None,
        replayed_path=data_dir / "dlq" / f"{job.name}.kafka.replayed",
    )


def job_connectors(job: JobSpec, data_dir: Path) -> tuple[Source, list[Sink], Any]:
    """Create the job's source, sinks and dead-letter queue (no I/O beyond opening).

    A job reading several sources (UNION ALL) gets one `MultiSource` over them all.
    """
    created = [create_source(s.name, s.type, s.properties) for s in stream_sources(job)]
    source = created[0] if len(created) == 1 else MultiSource(created)
    sinks = [create_sink(s.name, s.type, _sink_properties(job, s)) for s in job.sinks]
    return source, sinks, _dead_letter_queue(job, source, sinks, data_dir)


class Pipes:
    """The server's pipes, one per (application, writing statement): a statement that
    reads an earlier one's file output reads only what that job has committed
    (`velostream.datasource.file.pipe`). Kept across a job's restart or upgrade, so
    a reader goes on with the writer's next run."""

    def __init__(self) -> None:
        self._pipes: dict[tuple[str, str], Pipe] = {}

    def _get(self, app: str, writer: str, path: str) -> Pipe:
        key = (app, writer.lower())
        pipe = self._pipes.get(key)
        if pipe is None or pipe.path != path:
            pipe = self._pipes[key] = Pipe(writer, path)
        return pipe

    def wire(self, app: Application, job: JobSpec, source: Source, processor: Any) -> None:
        """Give `job`'s piped file sources their pipes, and its processor the pipes of
        the later statements that read its output."""
        for reader in sources_of(source):
            writer = reader.properties.get(PIPE_FROM)
            if writer and isinstance(reader, FileSource):
                reader.attach_pipe(self._get(app.name, writer, reader.config.path))
        read = {
            c.properties.get(PIPE_FROM, "").lower()
            for other in app.jobs
            for c in other.sources
            if c.type == "file_source"
        }
        if job.statement_name.lower() not in read:
            return
        for sink in job.sinks:
            if sink.type == "file_sink":
                pipe = self._get(app.name, job.statement_name, sink.properties.get("path", ""))
                processor.pipes.attach(sink.name, pipe)
