"""Error tracking, metrics and logging: where every error is recorded."""

from velostream.observability.catalog import ErrorCatalog, ErrorGroup
from velostream.observability.error_tracker import (
    DeploymentContext,
    ErrorEntry,
    ErrorMessageBuffer,
    ErrorStats,
)
from velostream.observability.logging import configure_logging
from velostream.observability.manager import ObservabilityManager, StreamingConfig
from velostream.observability.metrics import MetricsProvider

__all__ = [
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
]
