"""A Kafka topic read as a table: its latest row per key, up to the end it has now.

A `kafka_source` joined to a stream (or read in a subquery) is a compacted topic seen
as a table, as a ksqlDB TABLE sees it: every partition is read from its first offset to
the end the broker reports when the read starts, and for each message key only the
latest message counts; a latest message with a null value (a tombstone) deletes its
key. Messages without a key are rows of their own. Values are decoded as the source
decodes them, so a value that cannot be decoded is a bad record of the table.

Nothing is committed and no consumer group is joined (partitions are assigned). Whether
the topic has changed is told by its partitions' end offsets (`ends`), which a reader
compares with those of its last read.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from velostream.datasource.kafka.client import translate
from velostream.datasource.kafka.source import KafkaSource
from velostream.datasource.traits import BadRecord
from velostream.errors import SourceError, Stage

__all__ = ["read_compacted", "topic_ends"]

_TIMEOUT = 10.0
# How long a read waits for the last messages once it has seen nothing new.
_QUIET = 0.5


def _consumer(source: KafkaSource) -> Consumer:
    settings = {
        **source.config.client,
        "group.id": f"{source.config.group_id}-table-{time.monotonic_ns()}",
        "enable.auto.commit": False,
    }
    try:
        return Consumer(settings)
    except (KafkaException, ValueError, TypeError) as exc:
        raise translate(exc, stage=Stage.SOURCE, name=source.name, doing="opening") from exc


def _ends(consumer: Consumer, source: KafkaSource) -> dict[int, tuple[int, int]]:
    topic = source.topic
    metadata = consumer.list_topics(topic, timeout=_TIMEOUT)
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        raise SourceError(f"table {source.name}: no topic '{topic}'", source=source.name)
    wanted = source.config.partitions or sorted(described.partitions)
    return {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=_TIMEOUT)
        for p in wanted
    }


def topic_ends(source: KafkaSource) -> tuple[tuple[int, int], ...]:
    """(partition, end offset) of the topic now: what a change check compares."""
    consumer = _consumer(source)
    try:
        return tuple((p, high) for p, (_, high) in sorted(_ends(consumer, source).items()))
    except KafkaException as exc:
        raise translate(exc, stage=Stage.SOURCE, name=source.name, doing="reading") from exc
    finally:
        consumer.close()


def read_compacted(source: KafkaSource) -> tuple[pa.Table | None, list[BadRecord]]:
    """The topic's latest row per key (see the module docstring), and its bad records."""
    consumer = _consumer(source)
    try:
        ends = _ends(consumer, source)
        consumer.assign([TopicPartition(source.topic, p, low) for p, (low, _) in ends.items()])
        messages = _read_to_end(consumer, source, {p: high for p, (_, high) in ends.items()})
    except KafkaException as exc:
        raise translate(exc, stage=Stage.SOURCE, name=source.name, doing="reading") from exc
    finally:
        consumer.close()
    latest = _latest(messages)
    if not messages:
        empty = source.decode_records([]).table
        user_columns = [n for n in empty.column_names if not n.startswith("_")]
        return (empty.slice(0, 0) if user_columns else None), []
    batch = source._batch(messages)  # decoded as the source decodes
    keep = np.zeros(len(messages), dtype=bool)
    keep[latest] = True
    table = batch.table
    wanted = {(messages[i].partition(), messages[i].offset()) for i in np.flatnonzero(keep)}
    codes = pc.add(
        pc.multiply(table.column("_partition").cast(pa.int64()), 1 << 40),
        table.column("_offset"),
    )
    mask = pc.is_in(codes, value_set=pa.array([p * (1 << 40) + o for p, o in wanted], pa.int64()))
    return table.filter(mask), list(batch.bad)


def _read_to_end(consumer: Consumer, source: KafkaSource, ends: dict[int, int]) -> list[Any]:
    """Every message up to `ends`; a broker may report an end one short of its last
    message, so reading goes on until a poll past it brings nothing more."""
    out: list[Any] = []
    reached = {p: -1 for p in ends}
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        got = consumer.consume(100_000, _QUIET)
        for message in got:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(error)
            out.append(message)
            reached[int(message.partition() or 0)] = int(message.offset() or 0)
        if not got and all(reached[p] >= end - 1 for p, end in ends.items()):
            return out
    raise SourceError(
        f"table {source.name}: topic '{source.topic}' was not read to its end in 60s",
        source=source.name,
    )


def _latest(messages: list[Any]) -> list[int]:
    """Indexes of the messages that make the table: the last of each key, unless it is
    a tombstone, and every message without a key."""
    last: dict[bytes, int] = {}
    unkeyed: list[int] = []
    for index, message in enumerate(messages):
        key = message.key()
        if key is None:
            if message.value() is not None:
                unkeyed.append(index)
        else:
            last[key] = index
    kept = [i for i in last.values() if messages[i].value() is not None]
    return sorted([*kept, *unkeyed])
