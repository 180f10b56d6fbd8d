"""KafkaSink over a recording producer."""

from __future__ import annotations

import pyarrow as pa
import pytest
from confluent_kafka import KafkaError

from tests.unit.datasource.kafka.conftest import FakeProducer
from velostream.datasource.kafka.codec import HEADERS_TYPE
from velostream.datasource.kafka.sink import KafkaSink
from velostream.errors import (
    BrokerConnectionError,
    OperationTimeoutError,
    SchemaError,
    Stage,
)

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


class FullAtThird(FakeProducer):
    """Finds the queue full at the third message, once."""

    def produce(
        self, topic: str, value: object = None, key: object = None, **kwargs: object
    ) -> None:
        if len(self.produced) == 2 and not self.polls:
            raise BufferError("Local: Queue full")
        super().produce(topic, value, key, **kwargs)


@pytest.mark.parametrize("keyed", [False, True])
def test_values_alone_are_produced_once_each_in_order_past_a_full_queue(keyed: bool) -> None:
    producer = FullAtThird()
    sink = _sink(producer, **({"key.columns": "id"} if keyed else {}))
    sink.write(pa.table({"id": [1, 2, 3, 4, 5]}))
    assert [m["value"] for m in producer.produced] == [b'{"id":%d}' % i for i in range(1, 6)]
    expected_keys = [str(i) for i in range(1, 6)] if keyed else [None] * 5
    assert [m["key"] for m in producer.produced] == expected_keys
    assert all(set(m) == {"topic", "value", "key"} for m in producer.produced)  # no headers
    assert producer.polls >= 2  # waited once for room, then polled after the batch
    assert sink.written == 5


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
