"""The public surface: each package's and core module's `__all__` is what we mean to export."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import prometheus_client
import pytest

import velostream

EXPORTS: dict[str, set[str]] = {
    "velostream": {"__version__"},
    "velostream.errors": {
        "ApiProblem",
        "AuthError",
        "BatchFailedError",
        "BrokerConnectionError",
        "ConfigurationError",
        "DeadLetterError",
        "ErrorKind",
        "InternalError",
        "JobConflictError",
        "JobLimitError",
        "JobStateError",
        "OperationTimeoutError",
        "PlanError",
        "QueryExecutionError",
        "RecordError",
        "ReplayError",
        "ResourceExhaustedError",
        "RetryableBatchError",
        "SandboxError",
        "SchemaError",
        "Severity",
        "SinkConflictError",
        "SinkError",
        "SourceError",
        "SqlValidationError",
        "Stage",
        "StateIncompatibleError",
        "VelostreamError",
        "classify",
        "default_severity",
    },
    "velostream.sql": {
        "Application",
        "ConnectorCatalog",
        "ConnectorConfig",
        "ConnectorOptions",
        "EmitMode",
        "FailureStrategy",
        "JobMode",
        "JobSpec",
        "MetricSpec",
        "OptionCheck",
        "Position",
        "StatementKind",
        "parse_application",
        "parse_duration_ms",
    },
    "velostream.sql.connectors": {
        "ConnectorCatalog",
        "ConnectorOptions",
        "OptionCheck",
        "Role",
        "build_connector",
    },
    "velostream.sql.duration": {"DURATION_UNITS_MS", "parse_duration_ms"},
    "velostream.datasource": {
        "BadRecord",
        "RecordRefs",
        "Sink",
        "Source",
        "SourceBatch",
        "TransactionCapability",
        "connector_catalog",
        "create_sink",
        "create_source",
        "register_sink",
        "register_source",
        "sink_types",
        "source_types",
    },
    "velostream.datasource.validation": {"check_application"},
    "velostream.observability": {
        "DeploymentContext",
        "ErrorCatalog",
        "ErrorEntry",
        "ErrorGroup",
        "ErrorMessageBuffer",
        "ErrorStats",
        "MetricsProvider",
        "ObservabilityManager",
        "StreamingConfig",
        "configure_logging",
    },
    "velostream.observability.error_tracker": {
        "DEFAULT_BUFFER_CAPACITY",
        "DeploymentContext",
        "ErrorEntry",
        "ErrorMessageBuffer",
        "ErrorStats",
    },
    "velostream.observability.catalog": {
        "DEFAULT_CATALOG_CAPACITY",
        "ErrorCatalog",
        "ErrorGroup",
        "RecordOutcome",
        "fingerprint",
        "normalize_message",
    },
    "velostream.observability.metrics": {
        "BATCH_DURATION_BUCKETS",
        "JOB_STATUSES",
        "MAX_MESSAGE_LABEL_CHARS",
        "MetricsProvider",
    },
    "velostream.observability.recorder": {"ErrorRecorder", "JobErrors", "as_kind", "as_stage"},
    "velostream.observability.manager": {"ObservabilityManager", "StreamingConfig"},
    "velostream.observability.logging": {
        "ERROR_LOGGER",
        "TRACE",
        "JobContextFilter",
        "JsonFormatter",
        "LogThrottle",
        "TextFormatter",
        "bind_job",
        "bind_stage",
        "configure_logging",
        "job_logger",
        "parse_level",
    },
    "velostream.observability.text": {"dumps", "raw_bytes", "safe_json", "safe_text"},
    "velostream.dlq": {
        "DeadLetter",
        "DeadLetterQueue",
        "FileDeadLetterQueue",
        "MemoryDeadLetterQueue",
        "ReplayLog",
        "dead_letter",
        "decode_payload",
        "encode_payload",
        "letters_to_replay",
    },
    "velostream.dlq.letter": {
        "DeadLetter",
        "dead_letter",
        "dead_letters",
        "decode_payload",
        "decode_text",
        "encode_payload",
        "encode_text",
    },
    "velostream.dlq.queue": {"DeadLetterQueue"},
    "velostream.dlq.replay": {"ReplayLog", "letters_to_replay", "refuse_truncated"},
    "velostream.dlq.file": {"FileDeadLetterQueue"},
    "velostream.dlq.memory": {"MemoryDeadLetterQueue"},
    "velostream.dlq.kafka": {
        "ERROR_HEADER_PREFIX",
        "KafkaDeadLetterQueue",
        "MessageLookup",
        "kafka_dead_letter_queue",
    },
    "velostream.server": set(),
    "velostream.server.processors": {"ErrorTracker"},
    "velostream.server.processors.error_tracking_helper": {"ErrorTracker"},
    "velostream.api": {"create_app"},
    "velostream.api.app": {"create_app"},
    "velostream.cli": set(),
}

CORE_MODULES = [name for name in EXPORTS if not hasattr(importlib.import_module(name), "__path__")]


@pytest.mark.parametrize("name", EXPORTS)
def test_all_is_what_we_mean_to_export(name: str) -> None:
    module = importlib.import_module(name)
    assert set(module.__all__) == EXPORTS[name]
    assert len(module.__all__) == len(set(module.__all__))


@pytest.mark.parametrize("name", EXPORTS)
def test_every_exported_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    for exported in module.__all__:
        assert hasattr(module, exported), f"{name}.{exported}"


def test_packages_re_export_the_same_objects() -> None:
    from velostream import observability
    from velostream.observability import catalog, error_tracker, logging, manager, metrics

    assert observability.ErrorMessageBuffer is error_tracker.ErrorMessageBuffer
    assert observability.ErrorCatalog is catalog.ErrorCatalog
    assert observability.MetricsProvider is metrics.MetricsProvider
    assert observability.ObservabilityManager is manager.ObservabilityManager
    assert observability.configure_logging is logging.configure_logging

    from velostream import dlq
    from velostream.dlq import file, letter, memory, queue, replay

    assert dlq.DeadLetter is letter.DeadLetter
    assert dlq.DeadLetterQueue is queue.DeadLetterQueue
    assert dlq.FileDeadLetterQueue is file.FileDeadLetterQueue
    assert dlq.MemoryDeadLetterQueue is memory.MemoryDeadLetterQueue
    assert dlq.ReplayLog is replay.ReplayLog


@pytest.mark.parametrize("name", CORE_MODULES)
def test_public_classes_and_functions_of_a_module_are_exported(name: str) -> None:
    module = importlib.import_module(name)
    defined_here = {
        attr
        for attr, obj in vars(module).items()
        if not attr.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ == name
    }
    assert defined_here <= set(module.__all__)


def all_packages() -> list[ModuleType]:
    packages = [velostream]
    for info in pkgutil.walk_packages(velostream.__path__, "velostream."):
        if info.ispkg:
            packages.append(importlib.import_module(info.name))
    return packages


def test_every_package_declares_its_surface() -> None:
    for package in all_packages():
        assert hasattr(package, "__all__"), package.__name__
        for exported in package.__all__:
            assert hasattr(package, exported), f"{package.__name__}.{exported}"


def test_importing_registers_nothing_globally() -> None:
    for name in EXPORTS:
        importlib.import_module(name)
    assert not [f.name for f in prometheus_client.REGISTRY.collect() if f.name.startswith("velo")]


def test_version_is_a_string() -> None:
    assert isinstance(velostream.__version__, str)
    assert velostream.__version__.count(".") == 2
