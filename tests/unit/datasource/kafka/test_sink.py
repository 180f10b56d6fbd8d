"""KafkaSink and the Kafka dead-letter queue over a recording producer."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from confluent_kafka import KafkaError

from tests.unit.datasource.kafka.conftest import FakeProducer
from velostream.datasource.kafka.codec import HEADERS_TYPE
from velostream.datasource.kafka.dlq import KafkaDeadLetterQueue, kafka_dead_letter_queue
from velostream.datasource.kafka.sink import KafkaSink
from velostream.datasource.traits import BadRecord
from velostream.errors import (
    BrokerConnectionError,
    ConfigurationError,
    DeadLetterError,
    ErrorKind,
    OperationTimeoutError,
    SchemaError,
    Stage,
)
from velostream.observability.error_tracker import DeploymentContext
from velostream.server.processors.dlq import dead_letter

PROPS = {"bootstrap.servers": "localhost:1", "topic": "out"}


def _sink(producer: FakeProducer, **props: str) -> KafkaSink:
    sink = KafkaSink("out", {**PROPS, **props})
    sink._producer = producer  # type: ignore[assignment]
    return sink


def test_write_produces_values_keys_headers_and_timestamps() -> None:
    producer = FakeProducer(full_once=True)
    sink = _sink(producer, **{"key.columns": "id"})
    sink.write(
        pa.table(
            {
                "id": [1, 2],
                "name": ["a", "b"],
                "_headers": pa.array([[("h", b"1")], None], HEADERS_TYPE),
                "_timestamp": pa.array([5, 6], pa.timestamp("ms")),
            }
        )
    )
    assert producer.produced == [
        {
            "topic": "out",
            "value": b'{"id":1,"name":"a"}',
            "key": "1",
            "headers": [("h", b"1")],
            "timestamp": 5,
        },
        {
            "topic": "out",
            "value": b'{"id":2,"name":"b"}',
            "key": "2",
            "headers": None,
            "timestamp": 6,
        },
    ]
    assert producer.polls >= 2  # waited once for room in the queue
    assert sink.written == 2


def test_write_errors_are_sink_errors() -> None:
    sink = _sink(FakeProducer(), **{"key.columns": "nope"})
    with pytest.raises(SchemaError) as info:
        sink.write(pa.table({"id": [1]}))
    assert info.value.stage == Stage.SINK and info.value.source == "out"


def test_flush_raises_failed_deliveries_with_their_kind() -> None:
    sink = _sink(FakeProducer())
    sink._report(KafkaError(KafkaError._MSG_TIMED_OUT, "timed out"), None)
    sink._report(KafkaError(KafkaError._MSG_TIMED_OUT, "timed out"), None)
    with pytest.raises(OperationTimeoutError, match=r"2 messages not delivered") as info:
        sink.flush()
    assert info.value.stage == Stage.SINK
    sink.flush()  # reported once


def test_flush_gives_up_on_a_broker_that_does_not_answer() -> None:
    sink = _sink(FakeProducer(undelivered=3), flush_timeout="10ms")
    with pytest.raises(OperationTimeoutError, match="3 message"):
        sink.flush()
    sink._errors.callback()(KafkaError(KafkaError._TRANSPORT, "connection refused"))
    with pytest.raises(BrokerConnectionError, match="connection refused"):
        sink.flush()


def test_transactional_sink_produces_only_in_flush() -> None:
    sink = KafkaSink("out", PROPS)
    producer = FakeProducer()
    sink.attach_transactional(producer)  # type: ignore[arg-type]
    sink.write(pa.table({"a": [1, 2]}))
    assert producer.produced == []
    sink.discard()
    sink.write(pa.table({"a": [3]}))
    sink.flush()
    assert [p["value"] for p in producer.produced] == [b'{"a":3}']


class Lookup:
    def message(self, ref: str) -> tuple[bytes | None, list[tuple[str, bytes]] | None] | None:
        if ref == "trades/1/42":
            return b"key-42", [("trace", b"t1"), ("velo.error.kind", b"stale")]
        return None


def _letter(ref: str, raw: bytes = b"{bad") -> Any:
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
