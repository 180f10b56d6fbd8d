"""kafka_source / kafka_sink properties (spec/SQL.md), validated once."""

from __future__ import annotations

import pytest

from velostream.datasource.kafka.config import KafkaSinkConfig, KafkaSourceConfig
from velostream.errors import ConfigurationError

BROKERS = {"bootstrap.servers": "localhost:9092"}


def test_source_defaults() -> None:
    config = KafkaSourceConfig.from_properties("trades", BROKERS)
    assert config.topic == "trades" and config.value_format == "json"
    assert config.key_format == "string" and config.partitions is None
    assert config.polling_interval == 0.5
    assert config.group_id == "velo-trades"
    assert config.client["enable.auto.commit"] is False
    assert config.client["auto.offset.reset"] == "earliest"


def test_source_keys_and_aliases() -> None:
    config = KafkaSourceConfig.from_properties(
        "src",
        {
            "brokers": "b:1",
            "topic.name": "orders",
            "value.serializer": "string",
            "key.format": "bytes",
            "partitions": "2, 0,2",
            "polling_interval": "50ms",
            "group.id": "velo-app-job",
            "auto.offset.reset": "latest",
        },
    )
    assert (config.topic, config.value_format, config.key_format) == ("orders", "string", "bytes")
    assert config.partitions == (0, 2) and config.polling_interval == 0.05
    assert config.group_id == "velo-app-job"
    assert config.client["auto.offset.reset"] == "latest"
    assert "value.serializer" not in config.client and "topic.name" not in config.client


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"value.format": "avro"}, "valid values: bytes, json, jsonl, raw, string, text"),
        ({"partitions": "one"}, "comma list of partition numbers"),
        ({"key.format": "int"}, "unknown key.format"),
        ({"polling_interval": "soon"}, "must be a duration"),
    ],
)
def test_source_rejects_bad_values(props: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        KafkaSourceConfig.from_properties("src", {**BROKERS, **props})


def test_sink_key_columns_and_client() -> None:
    config = KafkaSinkConfig.from_properties(
        "out",
        {**BROKERS, "key.columns": "id, symbol", "group.id": "g", "compression.type": "lz4"},
    )
    assert config.topic == "out" and config.key_columns == ("id", "symbol")
    assert config.client["compression.type"] == "lz4" and "group.id" not in config.client
    assert config.flush_timeout == 30.0
