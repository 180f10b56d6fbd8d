"""Kafka sources and sinks (confluent-kafka; `pip install 'velostream[kafka]'`).

`kafka_source` and `kafka_sink` are created through the registry by their type. The
Kafka dead-letter queue lives with the other queues, in `velostream.dlq.kafka`.

The names below are imported on first use: validating a Kafka connector's keys
(`options`) imports this package, and must work where confluent-kafka is not installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from velostream.datasource.kafka.sink import KafkaSink
    from velostream.datasource.kafka.source import KafkaSource

__all__ = ["KafkaSink", "KafkaSource"]

_HOMES = {
    "KafkaSink": "velostream.datasource.kafka.sink",
    "KafkaSource": "velostream.datasource.kafka.source",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
