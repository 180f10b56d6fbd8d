"""Transactional mode for Kafka jobs: a batch's outputs, dead letters and source offsets
commit in one producer transaction, or not at all (exactly-once from topic to topic).

Every Kafka sink (and a Kafka dead-letter queue) shares one transactional producer.
During a batch the sinks only encode; at commit the committer begins a transaction,
the sinks and the dead-letter queue produce into it, the source's offsets are added
with `send_offsets_to_transaction` (with the consumer's group metadata, so a stale
member is fenced) and the transaction commits. Producing only at commit keeps aborts
cheap and leaves nothing for a reader to skip. On any failure the transaction is
aborted, the sinks forget the batch, the source seeks back to the last committed
offsets and the executor's state is restored, so the batch is processed again. A batch
that produced nothing (no output, no dead letter) commits its offsets with the
consumer's synchronous commit instead of an empty transaction. After a crash,
`init_transactions` with the same `transactional.id` aborts whatever the previous
process left open; the group's committed offsets say where to resume.

The `transactional.id` is the first sink's `transactional.id` property, else
`velo-<group.id>-<node_id>`: servers sharing a group need distinct NODE_IDs.

A transactional job gets this committer when its source declares
`TransactionCapability.KAFKA_OFFSETS` (committers.py); the source must be a
`KafkaSource`, whose consumer's group metadata fences a stale member. A job reading
several Kafka sources (UNION ALL) sends every source's offsets, each with its own
consumer's group metadata, into the one transaction of the batch: a batch commits its
outputs with all the sources' positions, so each resumes exactly where it was.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from velostream.datasource.kafka.client import ClientErrors, translate
from velostream.datasource.kafka.sink import DeliveryReport, KafkaSink
from velostream.datasource.kafka.source import KafkaSource, parse_position
from velostream.datasource.multi import MultiSource, sources_of
from velostream.datasource.traits import Source, SourceBatch
from velostream.dlq.kafka import KafkaDeadLetterQueue
from velostream.errors import ConfigurationError, Stage, VelostreamError
from velostream.server.checkpoint import Checkpoint
from velostream.server.processors.context import CommitContext

__all__ = ["KafkaTransactionalCommitter"]

log = logging.getLogger("velostream.kafka")

_TIMEOUT = 30.0  # seconds for each transaction call
_COMMIT_ATTEMPTS = 3


class KafkaTransactionalCommitter:
    """Commits each batch as one Kafka transaction; see the module docstring."""

    def __init__(self, context: CommitContext) -> None:
        self.context = context
        kafka = [s for s in sources_of(context.source) if isinstance(s, KafkaSource)]
        if not kafka or len(kafka) != len(sources_of(context.source)):
            raise ConfigurationError("Kafka transactions need a kafka_source", job=context.job.name)
        others = [s.name for s in context.sinks if not isinstance(s, KafkaSink)]
        if others or not context.sinks:
            raise ConfigurationError(
                f"job {context.job.name!r}: transactional mode over Kafka needs every sink "
                f"to be a kafka_sink (not: {', '.join(others) or 'no sink'}); "
                "use job_mode simple",
                job=context.job.name,
            )
        self.source: Source = context.source  # a KafkaSource, or a MultiSource over several
        self.kafka_sources: list[KafkaSource] = kafka
        self.sinks: list[KafkaSink] = [s for s in context.sinks if isinstance(s, KafkaSink)]
        servers = {s.config.client["bootstrap.servers"] for s in self.sinks}
        if len(servers) > 1:
            raise ConfigurationError(
                f"job {context.job.name!r}: one transaction cannot span clusters "
                f"({', '.join(sorted(servers))})",
                job=context.job.name,
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
        context = self.context.deployment_context()
        node = context.node_id or os.environ.get("HOSTNAME") or socket.gethostname()
        return f"velo-{self.kafka_sources[0].config.group_id}-{node}"

    def recover(self) -> None:
        ctx = self.context
        settings = {
            # A server killed inside a transaction holds its partitions' offsets until
            # the broker aborts it: 10 s, as Kafka Streams, not the client's 60 s.
            "transaction.timeout.ms": 10_000,
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
            ctx.record_error(Stage.SINK, str(error), exc=error)
            raise error from exc
        self._producer = producer
        log.debug("kafka: transactional producer %r ready", self.transactional_id)
        for sink in self.sinks:
            sink.attach_transactional(producer)
        if isinstance(ctx.dlq, KafkaDeadLetterQueue):
            ctx.dlq.attach_transactional(producer)
        self.state = ctx.executor.snapshot()
        checkpoint = ctx.checkpoints.load(ctx.job.name) if ctx.checkpoints is not None else None
        if checkpoint is not None:
            self.batches = checkpoint.batches
            if checkpoint.state is not None:
                ctx.executor.restore(checkpoint.state)
                self.state = checkpoint.state

    def commit(self, batch: SourceBatch | None) -> None:
        ctx = self.context
        producer = self._producer
        assert producer is not None, "recover() first"
        position = batch.position if batch is not None else self.position
        try:
            if self._has_output():
                producer.begin_transaction()
                self.in_transaction = True
                ctx.flush_sinks()  # the sinks produce the batch's outputs into the transaction
                dlq_offset = ctx.flush_dead_letters()
                for source, offsets in self._offsets(position):  # all, in one transaction
                    metadata = source.consumer.consumer_group_metadata()
                    producer.send_offsets_to_transaction(offsets, metadata, _TIMEOUT)
                self._commit_transaction(producer)
            else:
                dlq_offset = ctx.flush_dead_letters()  # nothing pending: the queue's length
                self._commit_offsets_only(position)
        except Exception as exc:
            self._abort_transaction()
            if isinstance(exc, KafkaException):
                error = translate(
                    exc, stage=Stage.COMMIT, name=self.source.name, doing="committing"
                )
                ctx.record_error(Stage.COMMIT, f"commit failed: {error}", exc=error)
                raise error from exc
            raise
        committed = getattr(self.source, "committed", None)
        if committed is not None:
            committed(position)
        self.position = position
        self.state = ctx.executor.snapshot()
        self.batches += 1
        log.debug("job %r: committed batch %d at %s", ctx.job.name, self.batches, position)
        if ctx.checkpoints is not None:
            checkpoint = Checkpoint(
                position=position,
                dlq_offset=dlq_offset,
                state=self.state,
                version=ctx.job.version,
                batches=self.batches,
            )
            try:
                ctx.checkpoints.save(ctx.job.name, checkpoint)
            except Exception as exc:
                # The transaction is committed: the state file is only behind by a batch.
                ctx.record_error(Stage.COMMIT, f"checkpoint after commit failed: {exc}", exc=exc)

    def _has_output(self) -> bool:
        """Whether the batch produced anything: output rows or dead letters."""
        dlq = self.context.dlq
        return any(s.pending for s in self.sinks) or (
            isinstance(dlq, KafkaDeadLetterQueue) and dlq.pending
        )

    def _offsets(self, position: Any) -> list[tuple[KafkaSource, list[TopicPartition]]]:
        """Each Kafka source's offsets in `position`, of the partitions it owns now."""
        found = []
        for source, part in self._parts(position):
            offsets = [
                TopicPartition(source.topic, partition, offset)
                for partition, offset in parse_position(part, source.topic).items()
                if partition in source.assignment
            ]
            if offsets:
                found.append((source, offsets))
        return found

    def _commit_offsets_only(self, position: Any) -> None:
        """Commit a batch that produced nothing: its offsets alone, synchronously.

        With no records to make atomic, the consumer's own commit is exactly-once (the
        group generation fences a stale member) and one round trip cheaper than an
        empty transaction. Some Kafka-protocol brokers (tansu) also drop the offsets of
        a transaction that carries no records, which would leave the group behind the
        checkpointed state. Any partition's failure fails the commit: the batch aborts.
        """
        for source, offsets in self._offsets(position):
            for tp in source.consumer.commit(offsets=offsets, asynchronous=False) or []:
                if tp.error is not None:
                    raise KafkaException(tp.error)

    def _parts(self, position: Any) -> list[tuple[KafkaSource, Any]]:
        """Each Kafka source with its part of `position` (a multi-source's is by name)."""
        if not isinstance(self.source, MultiSource):
            return [(self.kafka_sources[0], position)]
        parts = position if isinstance(position, dict) else {}
        return [(s, parts.get(s.name)) for s in self.kafka_sources]

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
        log.debug("job %r: aborting the batch's transaction", self.context.job.name)
        try:
            self._producer.abort_transaction(_TIMEOUT)
        except KafkaException as exc:
            error = translate(exc, stage=Stage.COMMIT, name=self.source.name, doing="aborting")
            self.context.record_error(Stage.COMMIT, f"abort failed: {error}", exc=error)

    def abort(self) -> bool:
        """Undo the batch: abort its transaction, forget its outputs, rewind source and state."""
        ctx = self.context
        self._abort_transaction()
        for sink in self.sinks:
            sink.discard()
        if ctx.dlq is not None:
            ctx.dlq.truncate(None)
        if self.state is not None:
            ctx.executor.restore(self.state)
        try:
            self.source.seek(self.position)
        except VelostreamError as exc:
            ctx.record_error(Stage.SOURCE, f"rewinding {self.source.name}: {exc}", exc=exc)
            raise
        return False
