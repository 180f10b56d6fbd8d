"""`kafka_sink`: output rows as messages on a topic.

Values are encoded a batch at a time (see `codec`); the key is the `key.columns`
(the job's PRIMARY KEY) joined with `|`, else an output column `_key`; an output
`_headers` column becomes the headers and `_timestamp` the message time. `write`
hands the messages to the producer, which sends them in the background; `flush`
waits until the broker has them all, and a failed delivery, or a broker that does not
answer within `flush_timeout`, is raised as our exception so the job records it as a
sink error and its strategy decides (the source is not committed meanwhile).

In a transactional job the committer attaches one transactional producer to every
Kafka sink; `write` then only encodes, and `flush` produces inside the transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa
from confluent_kafka import KafkaError, KafkaException, Producer

from velostream.datasource.kafka.client import ClientErrors, producer_settings, translate
from velostream.datasource.kafka.codec import Encoded, encode
from velostream.datasource.kafka.config import KafkaSinkConfig
from velostream.datasource.traits import Sink
from velostream.errors import BrokerConnectionError, OperationTimeoutError, Stage, VelostreamError
from velostream.sql.pipeline import REPARTITION_OF

__all__ = ["DeliveryReport", "KafkaSink", "produce_all", "wait_delivered"]

log = logging.getLogger("velostream.kafka")

_FLUSH_SLICE = 1.0  # seconds per wait, so client errors surface while the broker is away


def produce_all(
    producer: Producer,
    topic: str,
    messages: Encoded,
    *,
    stage: Stage,
    name: str,
) -> None:
    """Hand every message to `producer`, waiting for room when its queue is full."""
    i, n = 0, len(messages)
    while i < n:
        try:
            i = _produce_from(producer.produce, topic, messages, i)
        except (KafkaException, ValueError, TypeError) as exc:
            raise translate(exc, stage=stage, name=name, doing=f"producing to '{topic}'") from exc
        if i < n:
            producer.poll(0.05)  # the queue is full: let deliveries drain it
    producer.poll(0)


def _produce_from(produce: Callable[..., None], topic: str, messages: Encoded, start: int) -> int:
    """Produce messages from `start` on until the queue is full; returns where it stopped.

    Each call passes only what the messages carry: a keyword argument costs about as
    much as the call itself, and values alone are the common case.
    """
    values, keys, n = messages.values, messages.keys, len(messages)
    i = start
    try:
        if messages.headers is None and messages.timestamps is None:
            if keys is None:
                for i in range(start, n):
                    produce(topic, values[i])
            else:
                for i in range(start, n):
                    produce(topic, values[i], keys[i])
        else:
            keys = keys or [None] * n
            headers = messages.headers or [None] * n
            stamps = messages.timestamps or [None] * n
            for i in range(start, n):
                produce(topic, values[i], keys[i], headers=headers[i], timestamp=stamps[i] or 0)
    except BufferError:
        return i  # message i was not queued
    return n


class DeliveryReport:
    """Failed deliveries reported by the producer (only failures are reported)."""

    def __init__(self) -> None:
        self.failures: list[KafkaError] = []

    def __call__(self, error: KafkaError | None, message: Any) -> None:
        if error is not None:
            self.failures.append(error)

    def raise_failures(self, *, stage: Stage, name: str, topic: str) -> None:
        if not self.failures:
            return
        failures, self.failures = self.failures, []
        exc = translate(failures[0], stage=stage, name=name, doing=f"delivering to '{topic}'")
        if len(failures) > 1:
            exc.message = f"{exc.message} ({len(failures)} messages not delivered)"
            exc.args = (exc.message,)
        raise exc


def wait_delivered(
    producer: Producer,
    timeout: float,
    report: DeliveryReport,
    errors: ClientErrors,
    *,
    stage: Stage,
    name: str,
    topic: str,
) -> None:
    """Wait until the broker has every message; raise failures and a broker that is away."""
    deadline = time.monotonic() + timeout
    while True:
        left = producer.flush(min(_FLUSH_SLICE, max(0.0, deadline - time.monotonic())))
        report.raise_failures(stage=stage, name=name, topic=topic)
        if left == 0:
            errors.clear()
            return
        if time.monotonic() >= deadline:
            break
    cause = errors.take(f"flushing to '{topic}'")
    message = f"kafka '{name}': {left} message(s) to '{topic}' not delivered within {timeout:g}s"
    if isinstance(cause, BrokerConnectionError):
        raise BrokerConnectionError(f"{message}: {cause.message}", stage=stage, source=name)
    if cause is not None:
        raise type(cause)(f"{message}: {cause.message}", stage=stage, source=name)
    raise OperationTimeoutError(message, stage=stage, source=name)


class KafkaSink(Sink):
    """Writes one topic; see the module docstring."""

    def __init__(self, name: str, properties: Mapping[str, str]) -> None:
        super().__init__(name, properties)
        self.config = KafkaSinkConfig.from_properties(name, self.properties)
        self.topic = self.config.topic
        self._producer: Producer | None = None
        self._errors = ClientErrors(name, Stage.SINK)
        self._report = DeliveryReport()
        self._deferred: list[Encoded] | None = None
        self.written = 0

    def open(self, schema: pa.Schema | None = None) -> None:
        if self._producer is not None:
            return
        like = self.properties.get(REPARTITION_OF)
        if like:  # a repartition topic: as many partitions as the topic it repartitions
            from velostream.datasource.kafka.topics import ensure_topic, partition_count

            count = partition_count(self.config.client, like, name=self.name)
            ensure_topic(self.config.client, self.topic, count, compact=False, name=self.name)
        try:
            self._producer = Producer(
                producer_settings(self.config.client, self._errors, self._report)
            )
        except (KafkaException, ValueError, TypeError) as exc:
            raise translate(exc, stage=Stage.SINK, name=self.name, doing="opening") from exc

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self.open()
        assert self._producer is not None
        return self._producer

    def attach_transactional(self, producer: Producer) -> None:
        """Use `producer` (transactional) and produce only in `flush`, inside its transaction."""
        self._producer = producer
        self._deferred = []

    @property
    def pending(self) -> bool:
        """Whether messages wait for the next `flush` (in transactional use)."""
        return bool(self._deferred)

    def discard(self) -> None:
        """Forget what was written since the last flush (an aborted transaction)."""
        if self._deferred is not None:
            self._deferred.clear()

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        try:
            messages = encode(table, self.config.value_format, self.config.key_columns)
        except VelostreamError as exc:
            exc.stage, exc.source = Stage.SINK, self.name
            raise
        if self._deferred is not None:
            self._deferred.append(messages)
            return
        produce_all(self.producer, self.topic, messages, stage=Stage.SINK, name=self.name)
        self.written += len(messages)

    def flush(self) -> None:
        if self._producer is None:
            return
        if self._deferred:
            pending, self._deferred = self._deferred, []
            for messages in pending:
                produce_all(self._producer, self.topic, messages, stage=Stage.SINK, name=self.name)
                self.written += len(messages)
        wait_delivered(
            self._producer,
            self.config.flush_timeout,
            self._report,
            self._errors,
            stage=Stage.SINK,
            name=self.name,
            topic=self.topic,
        )
        log.debug("kafka '%s': flushed, %d messages written in all", self.name, self.written)

    def close(self) -> None:
        if self._producer is None:
            return
        try:
            if self._deferred is None:
                self.flush()
        finally:
            self._producer = None
