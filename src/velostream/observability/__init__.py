"""Error tracking, metrics and logging: where every error is recorded."""

from __future__ import annotations

from typing import TYPE_CHECKING

from velostream.lazy import lazy_exports

if TYPE_CHECKING:
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

__getattr__ = lazy_exports(
    __name__,
    {
        "ErrorCatalog": "velostream.observability.catalog",
        "ErrorGroup": "velostream.observability.catalog",
        "DeploymentContext": "velostream.observability.error_tracker",
        "ErrorEntry": "velostream.observability.error_tracker",
        "ErrorMessageBuffer": "velostream.observability.error_tracker",
        "ErrorStats": "velostream.observability.error_tracker",
        "configure_logging": "velostream.observability.logging",
        "ObservabilityManager": "velostream.observability.manager",
        "StreamingConfig": "velostream.observability.manager",
        "MetricsProvider": "velostream.observability.metrics",
    },
)
