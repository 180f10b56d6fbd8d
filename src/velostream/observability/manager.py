"""The server's observability: configuration, metrics provider, per-job contexts."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace

from prometheus_client import CollectorRegistry

from velostream import __version__
from velostream.observability.catalog import DEFAULT_CATALOG_CAPACITY
from velostream.observability.error_tracker import DEFAULT_BUFFER_CAPACITY, DeploymentContext
from velostream.observability.logging import ERROR_LOGGER, LogThrottle
from velostream.observability.metrics import MetricsProvider

__all__ = ["ObservabilityManager", "StreamingConfig"]

_log = logging.getLogger("velostream.observability")


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamingConfig:
    """Observability settings. Error tracking is always on: it cannot be switched off."""

    enable_prometheus_metrics: bool = True
    error_buffer_size: int = DEFAULT_BUFFER_CAPACITY
    error_catalog_size: int = DEFAULT_CATALOG_CAPACITY
    log_throttle_seconds: float = 5.0
    process_metrics: bool = True
    node_context: DeploymentContext | None = None

    def __post_init__(self) -> None:
        if self.error_buffer_size < 1:
            raise ValueError(f"error_buffer_size must be >= 1, got {self.error_buffer_size}")
        if self.error_catalog_size < 1:
            raise ValueError(f"error_catalog_size must be >= 1, got {self.error_catalog_size}")
        if self.log_throttle_seconds < 0:
            raise ValueError(f"log_throttle_seconds must be >= 0, got {self.log_throttle_seconds}")

    @classmethod
    def default(cls) -> StreamingConfig:
        return cls()

    def with_prometheus_metrics(self) -> StreamingConfig:
        return replace(self, enable_prometheus_metrics=True)

    def with_error_buffer_size(self, size: int) -> StreamingConfig:
        return replace(self, error_buffer_size=size)

    def with_error_catalog_size(self, size: int) -> StreamingConfig:
        return replace(self, error_catalog_size=size)

    def with_node_context(self, context: DeploymentContext) -> StreamingConfig:
        return replace(self, node_context=context)


class ObservabilityManager:
    """Owns the metrics provider, the error-log throttle and each job's context."""

    def __init__(self, config: StreamingConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self._registry = registry
        self._metrics: MetricsProvider | None = None
        self._lock = threading.Lock()
        self._job_contexts: dict[str, DeploymentContext] = {}
        self.node_context = config.node_context or DeploymentContext.from_env()
        self.log_throttle = LogThrottle(config.log_throttle_seconds)
        self.error_logger = logging.getLogger(ERROR_LOGGER)

    @classmethod
    def from_streaming_config(
        cls, config: StreamingConfig, registry: CollectorRegistry | None = None
    ) -> ObservabilityManager:
        return cls(config, registry)

    def initialize(self) -> None:
        """Create the metrics provider; idempotent."""
        with self._lock:
            if self._metrics is None:
                self._metrics = MetricsProvider(
                    self._registry,
                    buffer_capacity=self.config.error_buffer_size,
                    catalog_capacity=self.config.error_catalog_size,
                    deployment_context=self.node_context,
                    process_metrics=self.config.process_metrics,
                    build_version=__version__,
                    log_throttle=self.log_throttle,
                )

    def metrics(self) -> MetricsProvider | None:
        return self._metrics

    def require_metrics(self) -> MetricsProvider:
        """The provider, initialising on first use."""
        if self._metrics is None:
            self.initialize()
        assert self._metrics is not None
        return self._metrics

    def set_deployment_context_for_job(self, job: str, context: DeploymentContext) -> None:
        """Attribute `job`'s errors to `context` (kept per job, not one global)."""
        with self._lock:
            self._job_contexts[job] = context
        _log.info(
            "job %r: deployment context node_id=%s region=%s version=%s",
            job,
            context.node_id,
            context.region,
            context.version or "unknown",
        )

    def deployment_context_for_job(self, job: str) -> DeploymentContext:
        """The job's context, else the node's."""
        return self._job_contexts.get(job) or self.node_context

    def remove_job(self, job: str) -> None:
        with self._lock:
            self._job_contexts.pop(job, None)
        if self._metrics is not None:
            self._metrics.remove_job(job)

    def flush_log_throttle(self) -> None:
        """Write one line for every fingerprint whose repeats are still unreported."""
        for key, suppressed in self.log_throttle.pending().items():
            job, fp = key if isinstance(key, tuple) else (None, key)
            self.error_logger.warning(
                "%d more occurrences of error %s were not logged",
                suppressed,
                fp,
                extra={"job": job, "fingerprint": fp, "suppressed": suppressed},
            )

    def shutdown(self) -> None:
        self.flush_log_throttle()
