"""Every Kafka client error maps to one of our exceptions, and so to an ErrorKind."""

from __future__ import annotations

import pytest
from confluent_kafka import (
    ConcurrentModificationException,
    IllegalStateException,
    KafkaError,
    KafkaException,
)
from confluent_kafka.error import (
    ConsumeError,
    KeyDeserializationError,
    ProduceError,
    ValueSerializationError,
)

from velostream.datasource.kafka.client import ClientErrors, client_config, translate
from velostream.errors import (
    BrokerConnectionError,
    ConfigurationError,
    ErrorKind,
    InternalError,
    OperationTimeoutError,
    RecordError,
    ResourceExhaustedError,
    SinkError,
    SourceError,
    Stage,
    classify,
)

CASES = [
    (KafkaError._ALL_BROKERS_DOWN, BrokerConnectionError, ErrorKind.CONNECTION),
    (KafkaError._TRANSPORT, BrokerConnectionError, ErrorKind.CONNECTION),
    (KafkaError.NOT_COORDINATOR, BrokerConnectionError, ErrorKind.CONNECTION),
    (KafkaError._MSG_TIMED_OUT, OperationTimeoutError, ErrorKind.TIMEOUT),
    (KafkaError.REQUEST_TIMED_OUT, OperationTimeoutError, ErrorKind.TIMEOUT),
    (KafkaError.TOPIC_AUTHORIZATION_FAILED, ConfigurationError, ErrorKind.CONFIGURATION),
    (KafkaError.SASL_AUTHENTICATION_FAILED, ConfigurationError, ErrorKind.CONFIGURATION),
    (KafkaError.UNKNOWN_TOPIC_OR_PART, ConfigurationError, ErrorKind.CONFIGURATION),
    (KafkaError.PRODUCER_FENCED, ConfigurationError, ErrorKind.CONFIGURATION),
    (KafkaError.MSG_SIZE_TOO_LARGE, ResourceExhaustedError, ErrorKind.RESOURCE),
    (KafkaError._QUEUE_FULL, ResourceExhaustedError, ErrorKind.RESOURCE),
    (KafkaError._BAD_MSG, RecordError, ErrorKind.PARSE),
]


@pytest.mark.parametrize(("code", "cls", "kind"), CASES)
@pytest.mark.parametrize("stage", [Stage.SOURCE, Stage.SINK])
def test_error_codes_map_to_our_exceptions(
    code: int, cls: type, kind: ErrorKind, stage: Stage
) -> None:
    for raised in (KafkaError(code), KafkaException(KafkaError(code))):
        exc = translate(raised, stage=stage, name="trades", doing="reading")
        assert type(exc) is cls and classify(exc) == kind
        assert exc.stage == stage and exc.source == "trades"
        assert exc.message.startswith("kafka 'trades': reading: ")


@pytest.mark.parametrize(
    ("stage", "cls"),
    [
        (Stage.SOURCE, SourceError),
        (Stage.COMMIT, SourceError),
        (Stage.SINK, SinkError),
        (Stage.DLQ, SinkError),
    ],
)
def test_other_codes_are_io_errors_of_their_stage(stage: Stage, cls: type) -> None:
    exc = translate(KafkaError(KafkaError.OFFSET_OUT_OF_RANGE), stage=stage, name="t", doing="x")
    assert type(exc) is cls and classify(exc) == ErrorKind.IO


def test_every_client_exception_class_maps() -> None:
    error = KafkaError(KafkaError._TRANSPORT)
    upstream: list[tuple[BaseException, type]] = [
        (KafkaException(error), BrokerConnectionError),
        (ConsumeError(error), BrokerConnectionError),
        (ProduceError(error), BrokerConnectionError),
        (KeyDeserializationError(exception=ValueError("bad key")), RecordError),
        (ValueSerializationError(exception=TypeError("no")), SinkError),
        (BufferError("Local: Queue full"), ResourceExhaustedError),
        (ValueError("No such configuration property"), ConfigurationError),
        (TypeError("expected str"), ConfigurationError),
        (ConcurrentModificationException("two threads"), InternalError),
        (IllegalStateException("closed"), InternalError),
        (RuntimeError("Consumer closed"), SinkError),
    ]
    for exc, cls in upstream:
        assert type(translate(exc, stage=Stage.SINK, name="o", doing="x")) is cls, exc


def test_our_own_errors_pass_through() -> None:
    ours = BrokerConnectionError("down")
    assert translate(ours, stage=Stage.SINK, name="o", doing="x") is ours


def test_client_errors_keep_the_latest_and_count_repeats() -> None:
    errors = ClientErrors("trades", Stage.SOURCE)
    assert errors.take("reading") is None
    report = errors.callback()
    for _ in range(3):
        report(KafkaError(KafkaError._TRANSPORT, "broker down"))
    report(KafkaError(KafkaError._ALL_BROKERS_DOWN, "all brokers down"))
    exc = errors.take("reading")
    assert isinstance(exc, BrokerConnectionError)
    assert exc.message == "kafka 'trades': reading: all brokers down (and 3 more client errors)"
    assert errors.take("reading") is None and errors.seen == 4


def test_client_config_passes_dotted_keys_and_keeps_ours() -> None:
    config = client_config(
        {
            "brokers": "b:9092",
            "topic": "t",
            "value.format": "json",
            "key.columns": "id",
            "security.protocol": "SASL_SSL",
            "polling_interval": "1s",
            "session.timeout.ms": "7000",
        },
        {"session.timeout.ms": 10_000, "linger.ms": 5},
        name="src",
    )
    config.pop("logger")
    assert config == {
        "bootstrap.servers": "b:9092",
        "security.protocol": "SASL_SSL",
        "session.timeout.ms": "7000",
        "linger.ms": 5,
    }
    with pytest.raises(ConfigurationError, match=r"needs 'bootstrap\.servers'"):
        client_config({"topic": "t"}, {}, name="src")
