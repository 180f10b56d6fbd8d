"""A dead-letter queue on a Kafka topic (job property `dlq.type = kafka`).

Imported only for a job that asks for it: confluent-kafka is loaded with this module,
never with `velostream.dlq`, so jobs with a file queue do not need it.

Each dead letter is one message on `dlq.topic` (default `<job>.dlq`): the record's
original bytes as the value, the original key and headers when the record came from
Kafka, plus `velo.error.*` headers with the context (id, job, app, version, stage,
kind, message, fingerprint, source, position, source.topic, source.partition,
source.offset, timestamp, node_id, node_name, region). `flush` waits until the broker
has them all and fails loudly otherwise (the job then fails rather than lose a
record). Reading back (`read`) rebuilds the dead letters from the topic; replayed ids
are remembered in memory and, when given a path, in a file.

In a transactional job the committer attaches its transactional producer, so dead
letters commit with the batch's outputs and offsets.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from velostream.datasource.kafka.client import (
    PRODUCER_DEFAULTS,
    ClientErrors,
    client_config,
    producer_settings,
    translate,
)
from velostream.datasource.kafka.codec import Encoded
from velostream.datasource.kafka.sink import DeliveryReport, produce_all, wait_delivered
from velostream.dlq.letter import DeadLetter, encode_payload
from velostream.dlq.replay import ReplayLog
from velostream.errors import ConfigurationError, DeadLetterError, Stage, VelostreamError

__all__ = [
    "ERROR_HEADER_PREFIX",
    "KafkaDeadLetterQueue",
    "MessageLookup",
    "kafka_dead_letter_queue",
]

ERROR_HEADER_PREFIX = "velo.error."
_CONTEXT = (
    "id",
    "job",
    "app",
    "version",
    "stage",
    "kind",
    "message",
    "fingerprint",
    "source",
    "position",
    "timestamp",
    "node_id",
    "node_name",
    "region",
)
# Client settings a dead-letter producer may take over from the job's Kafka connectors.
_SHARED_PREFIXES = ("bootstrap.servers", "security.", "sasl.", "ssl.", "client.")


class MessageLookup(Protocol):
    """A source that can give a recent message's key and headers by its ref."""

    def message(self, ref: str) -> tuple[bytes | None, list[tuple[str, bytes]] | None] | None: ...


class KafkaDeadLetterQueue:
    """Dead letters of one job on a topic; same interface as `FileDeadLetterQueue`."""

    def __init__(
        self,
        topic: str,
        client: Mapping[str, Any],
        *,
        name: str = "dlq",
        lookup: MessageLookup | None = None,
        flush_timeout: float = 30.0,
        replayed_path: Path | None = None,
    ) -> None:
        self.topic = topic
        self.name = name
        self._client = dict(client)
        self._lookup = lookup
        self._flush_timeout = flush_timeout
        self._replayed = ReplayLog(replayed_path)
        self._pending: list[DeadLetter] = []
        self._producer: Producer | None = None
        self._errors = ClientErrors(name, Stage.DLQ)
        self._report = DeliveryReport()
        self.delivered = 0

    # -- writing --------------------------------------------------------------------

    def attach_transactional(self, producer: Producer) -> None:
        """Produce dead letters with `producer`, inside its transaction."""
        self._producer = producer

    def _ensure_producer(self) -> Producer:
        if self._producer is None:
            try:
                self._producer = Producer(
                    producer_settings(self._client, self._errors, self._report)
                )
            except (KafkaException, ValueError, TypeError) as exc:
                raise self._failure(exc, "opening") from exc
        return self._producer

    def write(self, letters: list[DeadLetter]) -> None:
        self._pending.extend(letters)

    @property
    def pending(self) -> bool:
        """Whether letters wait for the next `flush`."""
        return bool(self._pending)

    def flush(self) -> int:
        """Deliver pending letters; return how many this queue has delivered."""
        pending, self._pending = self._pending, []
        if not pending:
            return self.delivered
        messages = Encoded([letter.payload for letter in pending], [], [])
        assert messages.keys is not None and messages.headers is not None
        for letter in pending:
            key, headers = self._original(letter.doc.get("position"))
            messages.keys.append(key)
            messages.headers.append(headers + _error_headers(letter.doc))
        try:
            producer = self._ensure_producer()
            produce_all(producer, self.topic, messages, stage=Stage.DLQ, name=self.name)
            wait_delivered(
                producer,
                self._flush_timeout,
                self._report,
                self._errors,
                stage=Stage.DLQ,
                name=self.name,
                topic=self.topic,
            )
        except VelostreamError as exc:
            raise DeadLetterError(
                f"cannot write {len(pending)} dead letter(s) to topic '{self.topic}': {exc}",
                stage=Stage.DLQ,
            ) from exc
        self.delivered += len(pending)
        return self.delivered

    def _original(self, ref: Any) -> tuple[bytes | None, list[tuple[str, bytes]]]:
        found = self._lookup.message(str(ref)) if self._lookup is not None and ref else None
        if found is None:
            return None, []
        key, headers = found
        kept = [(k, v) for k, v in headers or [] if not k.startswith(ERROR_HEADER_PREFIX)]
        return key, kept

    def truncate(self, offset: int | None) -> None:
        """Drop letters not yet flushed; a topic cannot be cut back (a transaction aborts)."""
        self._pending.clear()

    def close(self) -> None:
        self._producer = None

    # -- reading back ---------------------------------------------------------------

    def read(self, offset: int = 0, limit: int = 100) -> tuple[list[DeadLetter], int | None]:
        """A page of dead letters, oldest first (partition by partition); the next offset.

        Partitions are read from their start until a poll brings nothing more: brokers
        such as tansu may report a high watermark one short of the last message.
        """
        settings = {k: v for k, v in self._client.items() if k.startswith(_SHARED_PREFIXES)} | {
            "group.id": f"velo-dlq-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "log_level": 3,
        }
        replayed = self._replayed.ids()
        consumer = Consumer(settings)
        page: list[DeadLetter] = []
        seen = 0
        more = False
        try:
            for partition in self._partitions(consumer):
                wanted = offset + limit - seen + 1  # one more: is there a next page?
                for m in _read_partition(consumer, self.topic, partition, wanted):
                    if seen >= offset + limit:
                        more = True
                        break
                    if seen >= offset:
                        letter = DeadLetter(_letter(m))
                        page.append(letter.with_replayed(letter.id in replayed))
                    seen += 1
                if more:
                    break
        except KafkaException as exc:
            raise self._failure(exc, "reading dead letters") from exc
        finally:
            consumer.close()
        return page, offset + len(page) if more else None

    def _partitions(self, consumer: Consumer) -> list[int]:
        metadata = consumer.list_topics(self.topic, timeout=10)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            return []
        return sorted(topic.partitions)

    def mark_replayed(self, ids: list[str]) -> None:
        self._replayed.add(ids)

    def _failure(self, exc: BaseException, doing: str) -> DeadLetterError:
        cause = translate(exc, stage=Stage.DLQ, name=self.name, doing=doing)
        return DeadLetterError(f"dead-letter topic '{self.topic}': {cause}", stage=Stage.DLQ)


def _error_headers(doc: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    headers = []
    for field in _CONTEXT:
        value = doc.get(field)
        if value is not None:
            headers.append((ERROR_HEADER_PREFIX + field, str(value).encode("utf-8")))
    position = str(doc.get("position") or "")
    parts = position.rsplit("/", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        for field, value in zip(("topic", "partition", "offset"), parts, strict=True):
            headers.append((f"{ERROR_HEADER_PREFIX}source.{field}", value.encode("utf-8")))
    return headers


def _letter(message: Any) -> dict[str, Any]:
    """A dead letter's document, rebuilt from its message."""
    doc: dict[str, Any] = {}
    original: list[list[Any]] = []
    for key, value in message.headers() or []:
        if key.startswith(ERROR_HEADER_PREFIX):
            doc[key[len(ERROR_HEADER_PREFIX) :]] = None if value is None else value.decode()
        else:
            original.append([key, None if value is None else value.decode("utf-8", "replace")])
    doc.setdefault("id", f"{message.topic()}/{message.partition()}/{message.offset()}")
    if doc.get("timestamp") is not None:
        doc["timestamp"] = float(doc["timestamp"])
    doc.update(encode_payload(message.value() or b""))
    key = message.key()
    doc["key"] = None if key is None else key.decode("utf-8", "backslashreplace")
    doc["headers"] = original
    doc["dlq_position"] = f"{message.topic()}/{message.partition()}/{message.offset()}"
    return doc


def _read_partition(consumer: Consumer, topic: str, partition: int, most: int) -> list[Any]:
    """Up to `most` messages of a partition from its start, until a poll brings none."""
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    out: list[Any] = []
    deadline = time.monotonic() + 30.0
    while len(out) < most and time.monotonic() < deadline:
        batch = consumer.consume(min(most - len(out) + 1, 10_000), 0.5)
        if not batch:
            break
        out.extend(m for m in batch if m.error() is None)
    return out


def kafka_dead_letter_queue(
    job_name: str,
    properties: Mapping[str, str],
    connectors: Sequence[Any] = (),
    *,
    lookup: MessageLookup | None = None,
    replayed_path: Path | None = None,
) -> KafkaDeadLetterQueue:
    """The Kafka DLQ of a job from its properties (`dlq.topic`, `dlq.<client key>`).

    The brokers (and security settings) default to those of the job's first Kafka
    source or sink in `connectors`.
    """
    topic = str(properties.get("dlq.topic") or f"{job_name}.dlq").strip()
    shared: dict[str, str] = {}
    for connector in connectors:
        config = getattr(connector, "config", None)
        client = getattr(config, "client", None)
        if isinstance(client, Mapping):
            shared = {k: v for k, v in client.items() if str(k).startswith(_SHARED_PREFIXES)}
            break
    own = {
        key[len("dlq.") :]: value
        for key, value in properties.items()
        if key.startswith("dlq.") and key not in ("dlq.type", "dlq.topic", "dlq.path")
    }
    settings = {**shared, **own}
    if not settings.get("bootstrap.servers") and not settings.get("brokers"):
        raise ConfigurationError(
            f"job '{job_name}': dlq.type 'kafka' needs 'dlq.bootstrap.servers' "
            "or a Kafka source or sink to take the brokers from",
            job=job_name,
        )
    client = client_config(settings, PRODUCER_DEFAULTS, name=f"{job_name}.dlq")
    return KafkaDeadLetterQueue(
        topic, client, name=f"{job_name}.dlq", lookup=lookup, replayed_path=replayed_path
    )
