"""StreamingConfig and ObservabilityManager: settings, lifecycle, per-job contexts."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from prometheus_client import CollectorRegistry

from tests.helpers import NODE_CONTEXT, ManagerFactory
from velostream import __version__
from velostream.errors import ErrorKind, Stage
from velostream.observability.error_tracker import DeploymentContext
from velostream.observability.manager import ObservabilityManager, StreamingConfig
from velostream.server.processors.error_tracking_helper import ErrorTracker

# --- StreamingConfig ---------------------------------------------------------------------


def test_default_config() -> None:
    config = StreamingConfig.default()
    assert config == StreamingConfig()
    assert config.enable_prometheus_metrics
    assert config.error_buffer_size == 10
    assert config.error_catalog_size == 1000
    assert config.log_throttle_seconds == 5.0
    assert config.process_metrics
    assert config.node_context is None


def test_config_is_frozen_and_keyword_only() -> None:
    config = StreamingConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.error_buffer_size = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        StreamingConfig(True)  # type: ignore[call-arg]


def test_builders_return_new_configs() -> None:
    base = StreamingConfig(enable_prometheus_metrics=False)
    ctx = DeploymentContext(node_id="n")
    built = (
        base.with_prometheus_metrics()
        .with_error_buffer_size(3)
        .with_error_catalog_size(7)
        .with_node_context(ctx)
    )
    assert built == StreamingConfig(
        enable_prometheus_metrics=True, error_buffer_size=3, error_catalog_size=7, node_context=ctx
    )
    assert base == StreamingConfig(enable_prometheus_metrics=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"error_buffer_size": 0}, "error_buffer_size must be >= 1"),
        ({"error_catalog_size": 0}, "error_catalog_size must be >= 1"),
        ({"log_throttle_seconds": -1.0}, "log_throttle_seconds must be >= 0"),
    ],
)
def test_invalid_config_is_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StreamingConfig(**kwargs)  # type: ignore[arg-type]


def test_invalid_builder_value_is_refused() -> None:
    with pytest.raises(ValueError, match="error_buffer_size"):
        StreamingConfig().with_error_buffer_size(0)


# --- lifecycle ----------------------------------------------------------------------------------


def test_metrics_exist_only_after_initialize(make_manager: ManagerFactory) -> None:
    manager = make_manager(initialize=False)
    assert manager.metrics() is None
    manager.initialize()
    provider = manager.metrics()
    assert provider is not None
    manager.initialize()  # idempotent: a second provider would clash on the registry
    assert manager.metrics() is provider
    assert manager.require_metrics() is provider


def test_require_metrics_initialises_on_first_use(make_manager: ManagerFactory) -> None:
    manager = make_manager(initialize=False)
    provider = manager.require_metrics()
    assert manager.metrics() is provider


def test_the_provider_uses_the_config_and_the_given_registry(
    make_manager: ManagerFactory, registry: CollectorRegistry
) -> None:
    manager = make_manager(buffer_size=2, catalog_size=3, registry=registry)
    provider = manager.require_metrics()
    assert provider.registry is registry
    assert provider.buffer.capacity == 2
    assert provider.catalog.capacity == 3
    assert provider.buffer.get_deployment_context() == NODE_CONTEXT
    labels = {"version": __version__, "node_id": "node-1", "node_name": "Test Node"}
    assert registry.get_sample_value("velo_build_info", {**labels, "region": "eu-west-1"}) == 1
    assert not [f for f in registry.collect() if f.name.startswith("process_")]
    assert manager.errors.metrics is provider


def test_from_streaming_config_is_the_constructor() -> None:
    config = StreamingConfig.default().with_prometheus_metrics()
    manager = ObservabilityManager.from_streaming_config(config, CollectorRegistry())
    assert isinstance(manager, ObservabilityManager)
    assert manager.config is config


def test_node_context_comes_from_the_environment_when_not_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("NODE_ID", "HOSTNAME", "POD_NAME", "AWS_REGION", "REGION", "APP_VERSION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NODE_ID", "env-node")
    monkeypatch.setenv("REGION", "env-region")
    manager = ObservabilityManager(StreamingConfig(process_metrics=False), CollectorRegistry())
    assert manager.node_context.node_id == "env-node"
    assert manager.node_context.region == "env-region"


# --- per-job deployment contexts -----------------------------------------------------------------


def test_each_job_keeps_its_own_context(manager: ObservabilityManager) -> None:
    v1 = DeploymentContext(node_id="node-1", version="1.0")
    v2 = DeploymentContext(node_id="node-1", version="2.0")
    manager.set_deployment_context_for_job("orders", v1)
    manager.set_deployment_context_for_job("trades", v2)
    # The seed overwrote one global: the last job's context won for every job.
    assert manager.deployment_context_for_job("orders") == v1
    assert manager.deployment_context_for_job("trades") == v2
    assert manager.deployment_context_for_job("unknown") == NODE_CONTEXT


def test_errors_are_attributed_to_their_jobs_context(manager: ObservabilityManager) -> None:
    v1 = DeploymentContext(node_id="node-1", version="1.0")
    v2 = DeploymentContext(node_id="node-1", version="2.0")
    manager.set_deployment_context_for_job("orders", v1)
    manager.set_deployment_context_for_job("trades", v2)
    ErrorTracker.record_error(manager, "orders", "bad", stage=Stage.PROCESS)
    ErrorTracker.record_error(manager, "trades", "bad", stage=Stage.PROCESS)
    provider = manager.require_metrics()
    assert {g.job: g.deployment_context for g in provider.catalog.groups()} == {
        "orders": v1,
        "trades": v2,
    }
    assert [str(e) for e in provider.get_error_messages()] == [
        "[node_id=node-1, version=1.0] [orders] bad (count: 1)",
        "[node_id=node-1, version=2.0] [trades] bad (count: 1)",
    ]


def test_setting_a_context_is_logged(
    manager: ObservabilityManager, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="velostream.observability"):
        manager.set_deployment_context_for_job("orders", DeploymentContext(region="r"))
    assert "job 'orders': deployment context node_id=None region=r version=unknown" in (
        caplog.messages
    )


def test_remove_job_forgets_its_context_and_series(
    manager: ObservabilityManager, registry: CollectorRegistry
) -> None:
    manager.set_deployment_context_for_job("orders", DeploymentContext(version="1.0"))
    ErrorTracker.record_error(manager, "orders", "bad", stage=Stage.SINK, kind=ErrorKind.IO)
    manager.remove_job("orders")
    assert manager.deployment_context_for_job("orders") == NODE_CONTEXT
    labels = {"job": "orders", "stage": "sink", "kind": "IOError"}
    assert registry.get_sample_value("velo_job_errors_total", labels) is None


def test_remove_job_before_initialize_is_harmless(make_manager: ManagerFactory) -> None:
    manager = make_manager(initialize=False)
    manager.set_deployment_context_for_job("j", DeploymentContext(version="1"))
    manager.remove_job("j")
    assert manager.metrics() is None


# --- throttle flush on shutdown ------------------------------------------------------------------


def test_shutdown_writes_the_suppressed_counts(
    make_manager: ManagerFactory, error_log: list[logging.LogRecord]
) -> None:
    manager = make_manager(throttle_seconds=3600.0)
    fingerprint = None
    for _ in range(5):
        fingerprint = ErrorTracker.record_error(manager, "j", "boom", stage=Stage.PROCESS)
    assert len(error_log) == 1
    manager.shutdown()
    assert len(error_log) == 2
    summary = error_log[1]
    assert summary.levelno == logging.WARNING
    assert summary.getMessage() == f"4 more occurrences of error {fingerprint} were not logged"
    assert summary.__dict__["fingerprint"] == fingerprint
    assert summary.__dict__["suppressed"] == 4
    manager.flush_log_throttle()  # nothing pending any more
    assert len(error_log) == 2
