"""Kafka sources, sinks and dead-letter queue (confluent-kafka; `pip install 'velostream[kafka]'`).

`kafka_source` and `kafka_sink` are created through the registry by their type; the
dead-letter queue by `kafka_dead_letter_queue` for jobs with `dlq.type = kafka`.
"""

from velostream.datasource.kafka.dlq import KafkaDeadLetterQueue, kafka_dead_letter_queue
from velostream.datasource.kafka.sink import KafkaSink
from velostream.datasource.kafka.source import KafkaSource

__all__ = ["KafkaDeadLetterQueue", "KafkaSink", "KafkaSource", "kafka_dead_letter_queue"]
