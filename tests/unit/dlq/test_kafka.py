"""The Kafka dead-letter queue over a recording producer: original message, error
headers, loud delivery failures, settings from the job and its connectors."""

from __future__ import annotations

import pytest

from tests.unit.datasource.kafka.conftest import FakeProducer
from velostream.datasource.kafka.sink import KafkaSink
from velostream.datasource.traits import BadRecord
from velostream.dlq import DeadLetter, dead_letter
from velostream.dlq.kafka import KafkaDeadLetterQueue, kafka_dead_letter_queue
from velostream.errors import ConfigurationError, DeadLetterError, ErrorKind, Stage
from velostream.observability.error_tracker import DeploymentContext

PROPS = {"bootstrap.servers": "localhost:1", "topic": "out"}


class Lookup:
    def message(self, ref: str) -> tuple[bytes | None, list[tuple[str, bytes]] | None] | None:
        if ref == "trades/1/42":
            return b"key-42", [("trace", b"t1"), ("velo.error.kind", b"stale")]
        return None


def _letter(ref: str, raw: bytes = b"{bad") -> DeadLetter:
    record = BadRecord(raw, ref, "invalid JSON", ErrorKind.PARSE, Stage.DESERIALIZE)
    return dead_letter(
        record,
        job="big",
        app="demo",
        version="1.0",
        source="trades",
        fingerprint="fp1",
        context=DeploymentContext.with_all("node-7", "Node", "eu-1", "1.0"),
    )


def test_dead_letters_carry_the_original_message_and_the_error_headers() -> None:
    producer = FakeProducer()
    queue = KafkaDeadLetterQueue("big.dlq", {}, lookup=Lookup())
    queue.attach_transactional(producer)  # type: ignore[arg-type]
    queue.write([_letter("trades/1/42"), _letter("data.csv:3", b"\xff")])
    assert queue.flush() == 2
    first, second = producer.produced
    assert (first["topic"], first["value"], first["key"]) == ("big.dlq", b"{bad", b"key-42")
    headers = dict(first["headers"][1:])
    assert first["headers"][0] == ("trace", b"t1")
    assert {k: v.decode() for k, v in headers.items() if k != "velo.error.timestamp"} == {
        "velo.error.id": headers["velo.error.id"].decode(),
        "velo.error.job": "big",
        "velo.error.app": "demo",
        "velo.error.version": "1.0",
        "velo.error.stage": "deserialize",
        "velo.error.kind": "ParseError",
        "velo.error.message": "invalid JSON",
        "velo.error.fingerprint": "fp1",
        "velo.error.source": "trades",
        "velo.error.position": "trades/1/42",
        "velo.error.node_id": "node-7",
        "velo.error.node_name": "Node",
        "velo.error.region": "eu-1",
        "velo.error.source.topic": "trades",
        "velo.error.source.partition": "1",
        "velo.error.source.offset": "42",
    }
    assert second["value"] == b"\xff" and second["key"] is None
    assert not any(k.startswith("velo.error.source.") for k, _ in second["headers"])


def test_a_dead_letter_that_cannot_be_delivered_fails_loudly() -> None:
    queue = KafkaDeadLetterQueue("big.dlq", {}, flush_timeout=0.01)
    queue.attach_transactional(FakeProducer(undelivered=1))  # type: ignore[arg-type]
    queue.write([_letter("x")])
    with pytest.raises(DeadLetterError, match="cannot write 1 dead letter"):
        queue.flush()
    queue.write([_letter("y")])
    queue.truncate(None)
    assert queue.flush() == 0


def test_dlq_settings_come_from_the_job_and_its_connectors() -> None:
    sink = KafkaSink("out", {**PROPS, "security.protocol": "SSL", "linger.ms": "50"})
    queue = kafka_dead_letter_queue(
        "big", {"dlq.type": "kafka", "dlq.compression.type": "zstd"}, [sink]
    )
    assert queue.topic == "big.dlq"
    assert queue._client["bootstrap.servers"] == "localhost:1"
    assert queue._client["security.protocol"] == "SSL"
    assert queue._client["compression.type"] == "zstd"
    assert queue._client["linger.ms"] == 5  # the sink's tuning is its own
    named = kafka_dead_letter_queue("big", {"dlq.topic": "errs", "dlq.bootstrap.servers": "b:2"})
    assert named.topic == "errs" and named._client["bootstrap.servers"] == "b:2"
    with pytest.raises(ConfigurationError, match=r"dlq\.bootstrap\.servers"):
        kafka_dead_letter_queue("big", {"dlq.type": "kafka"})
