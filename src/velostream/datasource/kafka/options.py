"""The WITH keys of `kafka_source` and `kafka_sink` as validation checks them.

`check_kafka_source` / `check_kafka_sink` run at validation, through the connector
registry, before any broker is contacted; importing this module needs no
confluent-kafka, so an application can be validated where it is not installed. Dotted
keys other than these go to the Kafka client unchanged (see `config`).
"""

from __future__ import annotations

from velostream.sql.connectors import ConnectorOptions

__all__ = ["ALIASES", "VALUE_FORMATS", "check_kafka_sink", "check_kafka_source"]

ALIASES = {
    "topic.name": "topic",
    "brokers": "bootstrap.servers",
    "value.serializer": "value.format",
}
"""Other spellings of a key -> the key they mean."""
VALUE_FORMATS = ("json", "string", "bytes")


def check_kafka_source(options: ConnectorOptions) -> None:
    """Normalise a `kafka_source`'s keys; its consumer group defaults to `velo-<app>-<job>`."""
    _check(options, source=True)


def check_kafka_sink(options: ConnectorOptions) -> None:
    """Normalise a `kafka_sink`'s keys."""
    _check(options, source=False)


def _check(options: ConnectorOptions, *, source: bool) -> None:
    for alias, canonical in ALIASES.items():
        options.rename(alias, canonical)
    options.values.setdefault("topic", options.name)
    if source:
        options.values.setdefault("group.id", f"velo-{options.app}-{options.job}")
    options.choice("value.format", VALUE_FORMATS, "json")
