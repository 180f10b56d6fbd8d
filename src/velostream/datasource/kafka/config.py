"""The validated properties of `kafka_source` and `kafka_sink` (spec/SQL.md).

Source keys: `topic` (or `topic.name`), `bootstrap.servers` (or `brokers`), `group.id`
(the parser defaults it to `velo-<app>-<job>`), `auto.offset.reset` (default
`earliest`), `value.format` (or `value.serializer`) = json | string | bytes,
`key.format` = string | bytes (how `_key` is typed), `partitions` (a comma list:
read those partitions by `assign` instead of joining the consumer group),
`polling_interval` (the longest a read waits to fill a batch, default 500ms; once
messages came, it returns as soon as none came for the consumer's `fetch.wait.max.ms`:
the topic has no more for now) and
`key.columns` (comma list: the value columns the topic's messages are keyed, so
partitioned, by; a job whose state is partitioned needs no repartitioning when its
GROUP BY holds them).

Sink keys: `topic`, `bootstrap.servers`, `value.format`, `key.columns` (comma list;
the job's PRIMARY KEY columns, joined with `|` into the message key) and
`flush_timeout` (how long a flush waits for the broker before it is an error,
default 30s). Every other dotted key goes to the client unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from velostream.datasource.kafka.client import CONSUMER_DEFAULTS, PRODUCER_DEFAULTS, client_config
from velostream.datasource.kafka.codec import VALUE_FORMATS
from velostream.datasource.registry import choice_property, duration_property
from velostream.errors import ConfigurationError

__all__ = ["KafkaSinkConfig", "KafkaSourceConfig"]

log = logging.getLogger("velostream.kafka")

_VALUE_FORMATS = {f: f for f in VALUE_FORMATS} | {"jsonl": "json", "text": "string", "raw": "bytes"}
_KEY_FORMATS = {"string": "string", "bytes": "bytes"}
_SOURCE_KEYS = frozenset({"type", "topic", "partitions", "polling_interval", "config_file"})
_SINK_KEYS = frozenset({"type", "topic", "flush_timeout", "config_file"})


def _topic(name: str, props: Mapping[str, str]) -> str:
    topic = str(props.get("topic") or props.get("topic.name") or name).strip()
    if not topic:
        raise ConfigurationError(f"'{name}': Kafka needs a 'topic'", source=name)
    return topic


def _value_format(name: str, props: Mapping[str, str]) -> str:
    merged = dict(props)
    if "value.format" not in merged and "value.serializer" in merged:
        merged["value.format"] = merged["value.serializer"]
    return choice_property(merged, "value.format", _VALUE_FORMATS, "json", name=name)


def _key_columns(props: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(k.strip() for k in str(props.get("key.columns", "")).split(",") if k.strip())


def _warn_unknown(name: str, props: Mapping[str, str], known: frozenset[str]) -> None:
    unknown = sorted(k for k in props if "." not in k and k not in known)
    if unknown:
        log.warning("kafka '%s': ignoring unknown properties %s", name, unknown)


@dataclass(frozen=True, slots=True, kw_only=True)
class KafkaSourceConfig:
    """A `kafka_source`: what to read and the consumer's settings."""

    topic: str
    value_format: str = "json"
    key_format: str = "string"
    partitions: tuple[int, ...] | None = None
    polling_interval: float = 0.5
    key_columns: tuple[str, ...] = ()
    client: dict[str, Any] = field(default_factory=dict)

    @property
    def group_id(self) -> str:
        return str(self.client["group.id"])

    @property
    def quiet_gap(self) -> float:
        """Seconds without a message after which a read returns what it has: the
        broker holds a fetch that long at most when the topic has nothing new."""
        gap = float(self.client.get("fetch.wait.max.ms", 100)) / 1000
        return max(0.001, min(gap, self.polling_interval))

    @classmethod
    def from_properties(cls, name: str, props: Mapping[str, str]) -> KafkaSourceConfig:
        client = client_config(props, CONSUMER_DEFAULTS, name=name)
        client.setdefault("group.id", f"velo-{name}")
        partitions = None
        raw = str(props.get("partitions", "")).strip()
        if raw:
            try:
                partitions = tuple(sorted({int(p) for p in raw.split(",") if p.strip()}))
            except ValueError as exc:
                raise ConfigurationError(
                    f"'{name}': 'partitions' must be a comma list of partition numbers, "
                    f"not '{raw}'",
                    source=name,
                ) from exc
        _warn_unknown(name, props, _SOURCE_KEYS)
        return cls(
            topic=_topic(name, props),
            value_format=_value_format(name, props),
            key_format=choice_property(props, "key.format", _KEY_FORMATS, "string", name=name),
            partitions=partitions or None,
            polling_interval=duration_property(props, "polling_interval", 0.5, name=name),
            key_columns=_key_columns(props),
            client=client,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class KafkaSinkConfig:
    """A `kafka_sink`: where to write, how to key messages and the producer's settings."""

    topic: str
    value_format: str = "json"
    key_columns: tuple[str, ...] = ()
    flush_timeout: float = 30.0
    client: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_properties(cls, name: str, props: Mapping[str, str]) -> KafkaSinkConfig:
        client = client_config(props, PRODUCER_DEFAULTS, name=name)
        for consumer_only in ("group.id", "auto.offset.reset", "isolation.level"):
            client.pop(consumer_only, None)
        keys = _key_columns(props)
        _warn_unknown(name, props, _SINK_KEYS)
        return cls(
            topic=_topic(name, props),
            value_format=_value_format(name, props),
            key_columns=keys,
            flush_timeout=duration_property(props, "flush_timeout", 30.0, name=name),
            client=client,
        )
