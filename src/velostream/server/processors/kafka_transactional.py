"""Transactional mode for Kafka jobs: a batch's outputs, dead letters and source offsets
commit in one producer transaction, or not at all (exactly-once from topic to topic).

Every Kafka sink (and a Kafka dead-letter queue) shares one transactional producer.
During a batch the sinks only encode; at commit the committer begins a transaction,
the sinks and the dead-letter queue produce into it, the source's offsets are added
with `send_offsets_to_transaction` (with the consumer's group metadata, so a stale
member is fenced) and the transaction commits. Producing only at commit keeps aborts
cheap and leaves nothing for a reader to skip. On any failure the transaction is
aborted, the sinks forget the batch, the source seeks back to the last committed
offsets and the executor's state is restored, so the batch is processed again. After
a crash, `init_transactions` with the same `transactional.id` aborts whatever the
previous process left open; the group's committed offsets say where to resume.

The `transactional.id` is the first sink's `transactional.id` property, else
`velo-<group.id>-<node_id>`: servers sharing a group need distinct NODE_IDs.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from velostream.datasource.kafka.client import ClientErrors, translate
from velostream.datasource.kafka.sink import DeliveryReport, KafkaSink
from velostream.datasource.kafka.source import KafkaSource, parse_position
from velostream.datasource.traits import SourceBatch
from velostream.dlq.kafka import KafkaDeadLetterQueue
from velostream.errors import ConfigurationError, Stage, VelostreamError
from velostream.server.checkpoint import Checkpoint

if TYPE_CHECKING:
    from velostream.server.processors.processor import JobProcessor

__all__ = ["KafkaTransactionalCommitter", "uses_kafka"]

log = logging.getLogger("velostream.kafka")

_TIMEOUT = 30.0  # seconds for each transaction call
_COMMIT_ATTEMPTS = 3


def uses_kafka(processor: JobProcessor) -> bool:
    """Whether the job reads Kafka, so transactional mode means Kafka transactions."""
    return isinstance(processor.source, KafkaSource)


class KafkaTransactionalCommitter:
    """Commits each batch as one Kafka transaction; see the module docstring."""

    def __init__(self, processor: JobProcessor) -> None:
        self.p = processor
        source = processor.source
        if not isinstance(source, KafkaSource):
            raise ConfigurationError(
                "Kafka transactions need a kafka_source", job=processor.job.name
            )
        others = [s.name for s in processor.sinks if not isinstance(s, KafkaSink)]
        if others or not processor.sinks:
            raise ConfigurationError(
                f"job {processor.job.name!r}: transactional mode over Kafka needs every sink "
                f"to be a kafka_sink (not: {', '.join(others) or 'no sink'}); "
                "use job_mode simple",
                job=processor.job.name,
            )
        self.source: KafkaSource = source
        self.sinks: list[KafkaSink] = [s for s in processor.sinks if isinstance(s, KafkaSink)]
        servers = {s.config.client["bootstrap.servers"] for s in self.sinks}
        if len(servers) > 1:
            raise ConfigurationError(
                f"job {processor.job.name!r}: one transaction cannot span clusters "
                f"({', '.join(sorted(servers))})",
                job=processor.job.name,
            )
        self.position: Any = None
        self.state: Any = None
        self.batches = 0
        self.in_transaction = False
        self._producer: Producer | None = None
        self._errors = ClientErrors(self.sinks[0].name, Stage.COMMIT)
        self._report = DeliveryReport()

    @property
    def transactional_id(self) -> str:
        configured = self.sinks[0].properties.get("transactional.id")
        if configured:
            return str(configured)
        context = self.p.observability.deployment_context_for_job(self.p.job.name)
        node = context.node_id or os.environ.get("HOSTNAME") or socket.gethostname()
        return f"velo-{self.source.config.group_id}-{node}"

    def recover(self) -> None:
        p = self.p
        settings = {
            **self.sinks[0].config.client,
            "transactional.id": self.transactional_id,
            "error_cb": self._errors.callback(),
            "on_delivery": self._report,
            "delivery.report.only.error": True,
        }
        try:
            producer = Producer(settings)
            producer.init_transactions(_TIMEOUT)  # aborts what a crashed predecessor left
        except (KafkaException, ValueError, TypeError) as exc:
            error = translate(exc, stage=Stage.SINK, name=self.sinks[0].name, doing="starting")
            p.record_error(Stage.SINK, str(error), exc=error)
            raise error from exc
        self._producer = producer
        for sink in self.sinks:
            sink.attach_transactional(producer)
        if isinstance(p.dlq, KafkaDeadLetterQueue):
            p.dlq.attach_transactional(producer)
        self.state = p.executor.snapshot()
        checkpoint = p.checkpoints.load(p.job.name) if p.checkpoints is not None else None
        if checkpoint is not None:
            self.batches = checkpoint.batches
            if checkpoint.state is not None:
                p.executor.restore(checkpoint.state)
                self.state = checkpoint.state

    def commit(self, batch: SourceBatch | None) -> None:
        p = self.p
        producer = self._producer
        assert producer is not None, "recover() first"
        position = batch.position if batch is not None else self.position
        try:
            producer.begin_transaction()
            self.in_transaction = True
            p.flush_sinks()  # the sinks produce the batch's outputs into the transaction
            dlq_offset = p.flush_dead_letters()
            offsets = [
                TopicPartition(self.source.topic, partition, offset)
                for partition, offset in parse_position(position, self.source.topic).items()
                if partition in self.source.assignment
            ]
            if offsets:
                metadata = self.source.consumer.consumer_group_metadata()
                producer.send_offsets_to_transaction(offsets, metadata, _TIMEOUT)
            self._commit_transaction(producer)
        except Exception as exc:
            self._abort_transaction()
            if isinstance(exc, KafkaException):
                error = translate(
                    exc, stage=Stage.COMMIT, name=self.source.name, doing="committing"
                )
                p.record_error(Stage.COMMIT, f"commit failed: {error}", exc=error)
                raise error from exc
            raise
        self.source.committed(position)
        self.position = position
        self.state = p.executor.snapshot()
        self.batches += 1
        if p.checkpoints is not None:
            checkpoint = Checkpoint(
                position=position,
                dlq_offset=dlq_offset,
                state=self.state,
                version=p.job.version,
                batches=self.batches,
            )
            try:
                p.checkpoints.save(p.job.name, checkpoint)
            except Exception as exc:
                # The transaction is committed: the state file is only behind by a batch.
                p.record_error(Stage.COMMIT, f"checkpoint after commit failed: {exc}", exc=exc)

    def _commit_transaction(self, producer: Producer) -> None:
        for attempt in range(1, _COMMIT_ATTEMPTS + 1):
            try:
                producer.commit_transaction(_TIMEOUT)
                self.in_transaction = False
                return
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                retriable = isinstance(error, KafkaError) and error.retriable()
                if not retriable or attempt == _COMMIT_ATTEMPTS:
                    raise
                log.warning("kafka: commit_transaction retry %d: %s", attempt, error)

    def _abort_transaction(self) -> None:
        if not self.in_transaction or self._producer is None:
            return
        self.in_transaction = False
        try:
            self._producer.abort_transaction(_TIMEOUT)
        except KafkaException as exc:
            error = translate(exc, stage=Stage.COMMIT, name=self.source.name, doing="aborting")
            self.p.record_error(Stage.COMMIT, f"abort failed: {error}", exc=error)

    def abort(self) -> None:
        """Undo the batch: abort its transaction, forget its outputs, rewind source and state."""
        p = self.p
        self._abort_transaction()
        for sink in self.sinks:
            sink.discard()
        if p.dlq is not None:
            p.dlq.truncate(None)
        if self.state is not None:
            p.executor.restore(self.state)
        try:
            self.source.seek(self.position)
        except VelostreamError as exc:
            p.record_error(Stage.SOURCE, f"rewinding {self.source.name}: {exc}", exc=exc)
            raise
