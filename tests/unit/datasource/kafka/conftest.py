"""In-memory doubles for the Kafka unit tests: messages and a scripted consumer."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaException, Message, TopicPartition

from velostream.datasource.kafka import source as kafka_source
from velostream.datasource.kafka.source import KafkaSource


def message(
    value: bytes | None,
    *,
    partition: int = 0,
    offset: int = 0,
    key: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
    timestamp: int = 1_700_000_000_000,
    topic: str = "t",
    error: Any = None,
) -> Message:
    return Message(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        headers=headers,
        timestamp=(1, timestamp),
        error=error,
    )


class FakeConsumer:
    """Serves scripted `consume` results; records commits and seeks."""

    def __init__(self) -> None:
        self.results: list[list[Message] | Callable[[], list[Message]]] = []
        self.commits: list[dict[int, int]] = []
        self.seeks: list[tuple[int, int]] = []
        self.commit_error: KafkaException | None = None
        self.closed = False
        self.calls: list[tuple[int, float]] = []  # (num_messages, timeout) of each consume
        #: Seconds on the source's clock once `use_clock` gave it this one: an empty
        #: consume then moves it by its timeout, at once, instead of sleeping.
        self.clock: float | None = None

    def use_clock(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The source reads time from this consumer, which no busy machine delays."""
        self.clock = 0.0
        monkeypatch.setattr(kafka_source, "time", SimpleNamespace(monotonic=lambda: self.clock))

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        self.calls.append((num_messages, timeout))
        if not self.results:
            if self.clock is not None:
                self.clock += timeout
            else:
                time.sleep(timeout)  # as the client: nothing came within the timeout
            return []
        result = self.results.pop(0)
        return result() if callable(result) else result

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> Any:
        assert asynchronous is False
        if self.commit_error is not None:
            raise self.commit_error
        self.commits.append({tp.partition: tp.offset for tp in offsets})
        return offsets

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def consumer() -> FakeConsumer:
    return FakeConsumer()


@pytest.fixture
def make_source(consumer: FakeConsumer) -> Callable[..., KafkaSource]:
    """make_source(partitions={0, 1}, **properties) -> a source reading the fake consumer."""

    def make(partitions: set[int] | None = None, **props: str) -> KafkaSource:
        properties = {"bootstrap.servers": "localhost:1", "topic": "t", **props}
        source = KafkaSource("src", properties)
        source._consumer = consumer  # type: ignore[assignment]
        source._assigned = set(partitions if partitions is not None else {0, 1})
        return source

    return make


class FakeProducer:
    """Records what is produced; `full_once` makes the first produce find the queue full."""

    def __init__(self, *, undelivered: int = 0, full_once: bool = False) -> None:
        self.produced: list[dict[str, Any]] = []
        self.undelivered = undelivered
        self.full_once = full_once
        self.polls = 0

    def produce(self, topic: str, value: Any = None, key: Any = None, **kwargs: Any) -> None:
        if self.full_once:
            self.full_once = False
            raise BufferError("Local: Queue full")
        self.produced.append({"topic": topic, "value": value, "key": key, **kwargs})

    def poll(self, timeout: float = 0) -> int:
        self.polls += 1
        return 0

    def flush(self, timeout: float = -1) -> int:
        return self.undelivered

    def __len__(self) -> int:
        return self.undelivered
