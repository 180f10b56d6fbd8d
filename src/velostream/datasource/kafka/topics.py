"""Topics a job creates for itself: changelogs and repartition topics."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from velostream.datasource.kafka.client import translate
from velostream.errors import ConfigurationError, Stage

__all__ = ["ensure_topic", "partition_count"]

log = logging.getLogger("velostream.kafka")
_TIMEOUT = 30.0


def _admin(client: Mapping[str, Any]) -> AdminClient:
    return AdminClient({k: v for k, v in client.items() if not callable(v)})


def partition_count(client: Mapping[str, Any], topic: str, *, name: str) -> int:
    """How many partitions `topic` has; ConfigurationError if it does not exist."""
    try:
        metadata = _admin(client).list_topics(topic, timeout=_TIMEOUT).topics.get(topic)
    except KafkaException as exc:
        raise translate(exc, stage=Stage.SOURCE, name=name, doing=f"reading {topic}") from exc
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise ConfigurationError(f"kafka '{name}': topic '{topic}' does not exist", source=name)
    return len(metadata.partitions)


def ensure_topic(
    client: Mapping[str, Any], topic: str, partitions: int, *, compact: bool, name: str
) -> None:
    """Create `topic` with `partitions` partitions unless it exists; one that exists
    with fewer partitions cannot hold every input partition's state: refused."""
    admin = _admin(client)
    config = {"cleanup.policy": "compact"} if compact else {}
    futures = admin.create_topics([NewTopic(topic, partitions, config=config)])
    try:
        futures[topic].result(_TIMEOUT)
        log.info("kafka '%s': created topic %s (%d partitions)", name, topic, partitions)
        return
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if not (isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS):
            raise translate(exc, stage=Stage.SOURCE, name=name, doing=f"creating {topic}") from exc
    have = len(admin.list_topics(topic, timeout=_TIMEOUT).topics[topic].partitions)
    if have < partitions:
        raise ConfigurationError(
            f"kafka '{name}': topic '{topic}' has {have} partitions, fewer than the "
            f"{partitions} of the input whose state it keeps; delete it or add partitions",
            source=name,
        )
