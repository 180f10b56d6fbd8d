"""A job's committer is chosen by its declared mode and its source's declared
transaction capability (not by the source's module), and is given a `CommitContext`,
never the processor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from tests.helpers import ManagerFactory
from tests.jobserver import app_sql
from velostream.datasource.kafka.sink import KafkaSink
from velostream.datasource.kafka.source import KafkaSource
from velostream.datasource.memory import MemorySink, MemorySource
from velostream.datasource.registry import connector_catalog
from velostream.datasource.traits import Source, TransactionCapability
from velostream.dlq import MemoryDeadLetterQueue
from velostream.engine import build_executor
from velostream.errors import ConfigurationError, ErrorKind, SinkError, Stage
from velostream.observability.error_tracker import DeploymentContext
from velostream.server.checkpoint import CheckpointStore
from velostream.server.processors.committers import committer_type
from velostream.server.processors.context import CommitContext
from velostream.server.processors.kafka_transactional import KafkaTransactionalCommitter
from velostream.server.processors.processor import JobProcessor
from velostream.server.processors.simple import SimpleCommitter
from velostream.server.processors.transactional import TransactionalCommitter
from velostream.sql.model import JobMode, JobSpec
from velostream.sql.parser import parse_application
from velostream.sql.planner import plan_job

KAFKA = {"bootstrap.servers": "localhost:1", "topic": "t"}


class OffsetsInTransactions(MemorySource):
    """A custom source that says its offsets commit inside a Kafka transaction."""

    transaction_capability = TransactionCapability.KAFKA_OFFSETS


class AuditedKafkaSource(KafkaSource):
    """A KafkaSource subclass outside `velostream.datasource.kafka`: still Kafka offsets."""


class KafkaWithCheckpoints(KafkaSource):
    """A Kafka source that chooses to keep its position in the job's checkpoint."""

    transaction_capability = TransactionCapability.CHECKPOINT


def _job(mode: str | None = None, **connectors: dict[str, str]) -> JobSpec:
    app = parse_application(
        app_sql(mode=mode, **connectors), connectors=connector_catalog(), env={}
    )
    return app.jobs[0]


@pytest.mark.parametrize(
    ("mode", "source", "expected"),
    [
        (JobMode.SIMPLE, MemorySource("src"), SimpleCommitter),
        (JobMode.SIMPLE, OffsetsInTransactions("src"), SimpleCommitter),
        (JobMode.SIMPLE, KafkaSource("src", KAFKA), SimpleCommitter),
        (JobMode.TRANSACTIONAL, MemorySource("src"), TransactionalCommitter),
        (JobMode.TRANSACTIONAL, KafkaSource("src", KAFKA), KafkaTransactionalCommitter),
        (JobMode.TRANSACTIONAL, OffsetsInTransactions("src"), KafkaTransactionalCommitter),
        (JobMode.TRANSACTIONAL, AuditedKafkaSource("src", KAFKA), KafkaTransactionalCommitter),
        (JobMode.TRANSACTIONAL, KafkaWithCheckpoints("src", KAFKA), TransactionalCommitter),
    ],
    ids=lambda v: getattr(v, "__name__", type(v).__name__ if isinstance(v, Source) else v),
)
def test_the_mode_and_the_source_capability_choose_the_committer(
    mode: JobMode, source: Source, expected: type
) -> None:
    assert committer_type(mode, source) is expected


def test_sources_keep_their_position_in_the_checkpoint_unless_they_say_otherwise() -> None:
    assert Source.transaction_capability is TransactionCapability.CHECKPOINT
    assert MemorySource.transaction_capability is TransactionCapability.CHECKPOINT
    assert KafkaSource.transaction_capability is TransactionCapability.KAFKA_OFFSETS


def test_a_processor_gives_its_committer_a_context_not_itself(
    make_manager: ManagerFactory,
) -> None:
    job = _job("transactional", source={"type": "kafka_source", **KAFKA})
    source = AuditedKafkaSource("src", KAFKA)
    sinks = [KafkaSink("out", {**KAFKA, "topic": "out"})]
    dlq = MemoryDeadLetterQueue()
    processor = JobProcessor(job, source, list(sinks), make_manager(), dlq=dlq)
    committer = processor.committer
    assert isinstance(committer, KafkaTransactionalCommitter)
    context = committer.context
    assert isinstance(context, CommitContext)
    assert context.source is source and context.sinks is processor.sinks
    assert (context.dlq, context.executor, context.job) == (dlq, processor.executor, job)
    assert context.deployment_context().node_id == "node-1"


def test_a_custom_source_declaring_kafka_offsets_must_be_a_kafka_source(
    make_manager: ManagerFactory,
) -> None:
    job = _job("transactional")
    with pytest.raises(ConfigurationError, match="Kafka transactions need a kafka_source"):
        JobProcessor(job, OffsetsInTransactions("src"), [MemorySink("out")], make_manager())


class _Recorder:
    def __init__(self) -> None:
        self.errors: list[tuple[Stage, str, ErrorKind | None]] = []

    def __call__(
        self,
        stage: Stage,
        message: str,
        *,
        kind: ErrorKind | None = None,
        exc: BaseException | None = None,
        record_ref: str | None = None,
    ) -> str | None:
        self.errors.append((stage, message, kind))
        return None


class _FailingSink(MemorySink):
    def flush(self) -> None:
        raise SinkError("disk full")


def _context(tmp_path: Path, source: Source, sink: MemorySink, record: _Recorder) -> CommitContext:
    job = _job()
    return CommitContext(
        job=job,
        source=source,
        sinks=[sink],
        executor=build_executor(plan_job(job), job),
        checkpoints=CheckpointStore(tmp_path),
        dlq=None,
        record_error=record,
        flush_dead_letters=lambda: None,
        deployment_context=DeploymentContext,
    )


def test_a_committer_commits_from_its_context_alone(tmp_path: Path) -> None:
    source = MemorySource("src", data=[pa.table({"id": [1, 2, 3]})])
    record = _Recorder()
    committer = SimpleCommitter(_context(tmp_path, source, MemorySink("out"), record))
    committer.recover()
    batch = source.read_batch(10)
    assert batch is not None
    committer.commit(batch)
    checkpoint = CheckpointStore(tmp_path).load("out")
    assert checkpoint is not None and checkpoint.position == list(batch.position)
    assert committer.batches == 1 and not record.errors


def test_a_sink_that_cannot_flush_is_a_sink_error_before_any_commit(tmp_path: Path) -> None:
    source = MemorySource("src", data=[pa.table({"id": [1]})])
    record = _Recorder()
    committer = SimpleCommitter(_context(tmp_path, source, _FailingSink("out"), record))
    committer.recover()
    with pytest.raises(SinkError, match="disk full"):
        committer.commit(source.read_batch(10))
    assert record.errors == [(Stage.SINK, "flushing out: disk full", None)]
    assert CheckpointStore(tmp_path).load("out") is None


def test_file_and_memory_jobs_never_load_confluent_kafka() -> None:
    code = (
        "import sys\n"
        "import velostream.cli.run, velostream.server.stream_job_server\n"
        "from velostream.datasource.memory import MemorySource\n"
        "from velostream.server.processors.committers import committer_type\n"
        "from velostream.sql.model import JobMode\n"
        "for mode in JobMode:\n"
        "    committer_type(mode, MemorySource('src'))\n"
        "print('confluent_kafka' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
