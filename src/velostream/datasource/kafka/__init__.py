"""Kafka sources and sinks (confluent-kafka; `pip install 'velostream[kafka]'`).

`kafka_source` and `kafka_sink` are created through the registry by their type. The
Kafka dead-letter queue lives with the other queues, in `velostream.dlq.kafka`.
"""

from velostream.datasource.kafka.sink import KafkaSink
from velostream.datasource.kafka.source import KafkaSource

__all__ = ["KafkaSink", "KafkaSource"]
