"""Shared fixtures: a fresh observability stack per test, on its own registry."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from prometheus_client import CollectorRegistry

from tests.helpers import NODE_CONTEXT, FakeClock, ManagerFactory
from velostream.observability import logging as observability_logging
from velostream.observability import metrics as observability_metrics
from velostream.observability.error_tracker import DeploymentContext
from velostream.observability.logging import ERROR_LOGGER
from velostream.observability.manager import ObservabilityManager, StreamingConfig
from velostream.observability.metrics import MetricsProvider

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

# Loggers whose state a test (or configure_logging) may change.
_LOGGERS = ("velostream", ERROR_LOGGER, "velostream.observability")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Escape lone surrogates in a report's captured output: tests feed undecodable
    bytes on purpose, and a report must stay serializable (pytest-xdist sends it)."""
    report.sections = [
        (title, text.encode("utf-8", "backslashreplace").decode("utf-8"))
        for title, text in report.sections
    ]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def make_manager() -> ManagerFactory:
    """Build an initialised manager on a private registry, without process collectors."""

    def factory(
        *,
        buffer_size: int = 10,
        catalog_size: int = 1000,
        throttle_seconds: float = 5.0,
        node_context: DeploymentContext | None = NODE_CONTEXT,
        registry: CollectorRegistry | None = None,
        initialize: bool = True,
    ) -> ObservabilityManager:
        config = StreamingConfig(
            error_buffer_size=buffer_size,
            error_catalog_size=catalog_size,
            log_throttle_seconds=throttle_seconds,
            process_metrics=False,
            node_context=node_context,
        )
        manager = ObservabilityManager.from_streaming_config(
            config, registry if registry is not None else CollectorRegistry()
        )
        if initialize:
            manager.initialize()
        return manager

    return factory


@pytest.fixture
def manager(make_manager: ManagerFactory, registry: CollectorRegistry) -> ObservabilityManager:
    return make_manager(registry=registry)


@pytest.fixture
def metrics(manager: ObservabilityManager) -> MetricsProvider:
    return manager.require_metrics()


@pytest.fixture(autouse=True)
def _restore_velostream_loggers() -> Iterator[None]:
    """Undo what a test did to our loggers (configure_logging sets propagate=False)."""
    saved = []
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.level, logger.propagate))
    yield
    for logger, handlers, level, propagate in saved:
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Freeze every clock the error path reads (recording times, the log throttle)."""
    clock = FakeClock()
    for module in (observability_metrics, observability_logging):
        monkeypatch.setattr(module, "time", clock, raising=False)
    return clock


class RecordingHandler(logging.Handler):
    """Keeps every record it is handed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def error_log() -> Iterator[list[logging.LogRecord]]:
    """Records written to the `velostream.errors` logger during the test."""
    handler = RecordingHandler()
    logger = logging.getLogger(ERROR_LOGGER)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    """A FastAPI TestClient around `create_app(manager)`."""
    # starlette's testclient warns at import when it finds httpx rather than httpx2;
    # the project uses httpx (DESIGN.md), so that one warning is not ours to fail on.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from fastapi.testclient import TestClient

    from velostream.api.app import create_app

    clients: list[TestClient] = []

    def factory(
        manager: ObservabilityManager, *, raise_server_exceptions: bool = True
    ) -> TestClient:
        client = TestClient(create_app(manager), raise_server_exceptions=raise_server_exceptions)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()
