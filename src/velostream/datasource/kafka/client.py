"""The boundary with confluent-kafka: client configuration and error translation.

Every Kafka error a source, sink or dead-letter queue sees passes through
`translate`, which maps the client's error code to one of our exceptions (and so to
an `ErrorKind`): unreachable brokers are `BrokerConnectionError`, time-outs
`OperationTimeoutError`, authentication and authorisation failures, unknown topics
and invalid settings `ConfigurationError`, size and queue limits
`ResourceExhaustedError`, corrupt messages `RecordError`; anything else is a
`SourceError` or `SinkError` by stage. Client settings are the connector's dotted
properties minus our own keys (`value.format`, `key.columns`, ...), over defaults
chosen for micro-batches.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException

from velostream.errors import (
    BrokerConnectionError,
    ConfigurationError,
    InternalError,
    OperationTimeoutError,
    RecordError,
    ResourceExhaustedError,
    SinkError,
    SourceError,
    Stage,
    VelostreamError,
)
from velostream.sql.pipeline import PIPE_FROM, REPARTITION_OF

__all__ = [
    "CONSUMER_DEFAULTS",
    "PRODUCER_DEFAULTS",
    "ClientErrors",
    "client_config",
    "producer_settings",
    "translate",
]

log = logging.getLogger("velostream.kafka")

CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,  # offsets are committed after the sink and DLQ flush
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "isolation.level": "read_committed",
    # Detect a dead member in seconds, not the client's 45 s, so its partitions move on.
    "session.timeout.ms": 10_000,
    "heartbeat.interval.ms": 1_000,
    "fetch.wait.max.ms": 100,
}
PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger.ms": 5,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 1_000_000,
}

# Our keys: never handed to the client (it rejects keys it does not know).
_OWN_KEYS = frozenset(
    {
        "topic",
        "topic.name",
        "value.format",
        "value.serializer",
        "key.format",
        "key.columns",
        "brokers",
        "config_file",
        PIPE_FROM,
        REPARTITION_OF,
    }
)

# A client used from two threads, or after close (confluent-kafka 2.13 and later; the
# versions before raise RuntimeError, which is translated like any other failure).
_MISUSE: tuple[type[Exception], ...] = tuple(
    getattr(confluent_kafka, name)
    for name in ("ConcurrentModificationException", "IllegalStateException")
    if hasattr(confluent_kafka, name)
)
_C = KafkaError
_CONNECTION = {
    _C._TRANSPORT,
    _C._ALL_BROKERS_DOWN,
    _C._RESOLVE,
    _C._DESTROY,
    _C._WAIT_COORD,
    _C.NETWORK_EXCEPTION,
    _C.BROKER_NOT_AVAILABLE,
    _C.LEADER_NOT_AVAILABLE,
    _C.NOT_LEADER_FOR_PARTITION,
    _C.COORDINATOR_NOT_AVAILABLE,
    _C.NOT_COORDINATOR,
    _C.COORDINATOR_LOAD_IN_PROGRESS,
}
_TIMEOUT = {_C._TIMED_OUT, _C._MSG_TIMED_OUT, _C.REQUEST_TIMED_OUT, _C._TIMED_OUT_QUEUE}
_ACCESS = {
    _C._AUTHENTICATION,
    _C._SSL,
    _C.SASL_AUTHENTICATION_FAILED,
    _C.ILLEGAL_SASL_STATE,
    _C.UNSUPPORTED_SASL_MECHANISM,
    _C.TOPIC_AUTHORIZATION_FAILED,
    _C.GROUP_AUTHORIZATION_FAILED,
    _C.CLUSTER_AUTHORIZATION_FAILED,
    _C.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    _C.DELEGATION_TOKEN_AUTHORIZATION_FAILED,
}
_SETTINGS = {
    _C._INVALID_ARG,
    _C._UNKNOWN_TOPIC,
    _C._UNKNOWN_PARTITION,
    _C.UNKNOWN_TOPIC_OR_PART,
    _C.TOPIC_EXCEPTION,
    _C.UNKNOWN_TOPIC_ID,
    _C.INVALID_CONFIG,
    _C.INVALID_REQUIRED_ACKS,
    _C.INVALID_TRANSACTION_TIMEOUT,
    _C._UNSUPPORTED_FEATURE,
    _C.UNSUPPORTED_VERSION,
    # Another producer took over our transactional.id (two servers with one NODE_ID).
    _C._FENCED,
    _C.PRODUCER_FENCED,
    _C.INVALID_PRODUCER_EPOCH,
}
_LIMITS = {
    _C.MSG_SIZE_TOO_LARGE,
    _C.INVALID_MSG_SIZE,
    _C._QUEUE_FULL,
    _C.RECORD_LIST_TOO_LARGE,
}
_CORRUPT = {
    _C.INVALID_MSG,
    _C._BAD_MSG,
    _C._KEY_DESERIALIZATION,
    _C._VALUE_DESERIALIZATION,
}
_BY_CODE: dict[int, type[VelostreamError]] = {
    **dict.fromkeys(_CONNECTION, BrokerConnectionError),
    **dict.fromkeys(_TIMEOUT, OperationTimeoutError),
    **dict.fromkeys(_ACCESS | _SETTINGS, ConfigurationError),
    **dict.fromkeys(_LIMITS, ResourceExhaustedError),
    **dict.fromkeys(_CORRUPT, RecordError),
}


def client_config(
    properties: Mapping[str, str], defaults: Mapping[str, Any], *, name: str
) -> dict[str, Any]:
    """The client's settings: defaults, then every dotted property that is not ours.

    `brokers` is an alias of `bootstrap.servers`. Undotted keys are ours or unknown
    and never reach the client.
    """
    config = dict(defaults)
    for key, value in properties.items():
        if key in _OWN_KEYS or "." not in key:
            continue
        config[key] = value
    servers = properties.get("bootstrap.servers") or properties.get("brokers")
    if not servers:
        raise ConfigurationError(
            f"'{name}': Kafka needs 'bootstrap.servers' (or 'brokers'), e.g. 'localhost:9092'",
            source=name,
        )
    config["bootstrap.servers"] = servers
    config["logger"] = log
    return config


def producer_settings(
    client: Mapping[str, Any], errors: ClientErrors, on_delivery: Callable[..., None]
) -> dict[str, Any]:
    """A producer's settings: `client`'s, with its error callback and failed-delivery reports."""
    return {
        **client,
        "error_cb": errors.callback(),
        "on_delivery": on_delivery,
        "delivery.report.only.error": True,
    }


def translate(
    exc: BaseException | KafkaError, *, stage: Stage, name: str, doing: str
) -> VelostreamError:
    """Our exception for a Kafka client error met while `doing` something.

    Accepts a `KafkaError`, a `KafkaException` (or its subclasses, such as
    `ProduceError` and `ConsumeError`), `BufferError` (the producer's queue is full)
    and the `ValueError`/`TypeError` the client raises for bad settings; anything
    else becomes a `SourceError` or `SinkError`.
    """
    if isinstance(exc, VelostreamError):
        return exc
    error = _kafka_error(exc)
    if error is not None:
        cls = _BY_CODE.get(error.code())
        detail = error.str() or error.name()
    elif isinstance(exc, BufferError):
        cls, detail = ResourceExhaustedError, f"the producer's queue is full ({exc})"
    elif isinstance(exc, ValueError | TypeError):
        cls, detail = ConfigurationError, str(exc)
    elif isinstance(exc, _MISUSE):
        # A client used from two threads, or after close: our bug, not the broker's.
        cls, detail = InternalError, f"{type(exc).__name__}: {exc}"
    else:
        cls, detail = None, str(exc) or type(exc).__name__
    if cls is None:
        cls = SinkError if stage in (Stage.SINK, Stage.DLQ) else SourceError
    return cls(f"kafka '{name}': {doing}: {detail}", stage=stage, source=name)


def _kafka_error(exc: BaseException | KafkaError) -> KafkaError | None:
    if isinstance(exc, KafkaError):
        return exc
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


class ClientErrors:
    """Errors the client reports out of band (its `error_cb`), kept until asked for.

    librdkafka reports an unreachable broker again on every reconnect attempt; the
    count since the last `take` says how often.
    """

    def __init__(self, name: str, stage: Stage) -> None:
        self._name, self._stage = name, stage
        self._errors: deque[KafkaError] = deque(maxlen=16)
        self._lock = threading.Lock()
        self.seen = 0

    def callback(self) -> Callable[[KafkaError], None]:
        def on_error(error: KafkaError) -> None:
            log.warning("kafka '%s': client error: %s", self._name, error.str())
            with self._lock:
                self._errors.append(error)
                self.seen += 1

        return on_error

    def add(self, error: KafkaError) -> None:
        with self._lock:
            self._errors.append(error)
            self.seen += 1

    def take(self, doing: str) -> VelostreamError | None:
        """The latest error as our exception (None when there was none); clears them."""
        with self._lock:
            if not self._errors:
                return None
            last, count = self._errors[-1], len(self._errors)
            self._errors.clear()
        exc = translate(last, stage=self._stage, name=self._name, doing=doing)
        if count > 1:
            exc.message = f"{exc.message} (and {count - 1} more client errors)"
            exc.args = (exc.message,)
        return exc

    def clear(self) -> None:
        with self._lock:
            self._errors.clear()
