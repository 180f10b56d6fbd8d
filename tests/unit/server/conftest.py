"""Fixtures for the in-process job-server tests (see tests/jobserver.py)."""

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from tests.jobserver import faults, harness
from velostream.observability.manager import ObservabilityManager, StreamingConfig

__all__ = ["faults", "harness"]


@pytest.fixture
def unthrottled_manager() -> Iterator[ObservabilityManager]:
    """An initialised manager on its own registry, logging every error (no throttle)."""
    config = StreamingConfig(log_throttle_seconds=0.0, process_metrics=False)
    manager = ObservabilityManager.from_streaming_config(config, CollectorRegistry())
    manager.initialize()
    yield manager
    manager.shutdown()
