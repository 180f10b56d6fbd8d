"""The server's observability: configuration, metrics provider, error recorder, job contexts."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from velostream import __version__
from velostream.errors import Stage
from velostream.observability.catalog import DEFAULT_CATALOG_CAPACITY
from velostream.observability.error_tracker import DEFAULT_BUFFER_CAPACITY, DeploymentContext
from velostream.observability.logging import job_logger
from velostream.observability.metrics import MetricsProvider
from velostream.observability.recorder import ErrorRecorder, JobErrors

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

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
    """Owns the metrics provider, the error recorder and each job's deployment context."""

    def __init__(self, config: StreamingConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self._registry = registry
        self._metrics: MetricsProvider | None = None
        self._errors: ErrorRecorder | None = None
        self._lock = threading.Lock()
        self._job_contexts: dict[str, DeploymentContext] = {}
        self.node_context = config.node_context or DeploymentContext.from_env()

    @classmethod
    def from_streaming_config(
        cls, config: StreamingConfig, registry: CollectorRegistry | None = None
    ) -> ObservabilityManager:
        return cls(config, registry)

    def initialize(self) -> None:
        """Create the metrics provider and the error recorder; idempotent."""
        with self._lock:
            if self._metrics is None:
                metrics = MetricsProvider(
                    self._registry,
                    buffer_capacity=self.config.error_buffer_size,
                    catalog_capacity=self.config.error_catalog_size,
                    deployment_context=self.node_context,
                    process_metrics=self.config.process_metrics,
                    build_version=__version__,
                )
                self._errors = ErrorRecorder(
                    metrics,
                    self.deployment_context_for_job,
                    throttle_seconds=self.config.log_throttle_seconds,
                )
                self._metrics = metrics

    def metrics(self) -> MetricsProvider | None:
        return self._metrics

    def require_metrics(self) -> MetricsProvider:
        """The provider, initialising on first use."""
        if self._metrics is None:
            self.initialize()
        assert self._metrics is not None
        return self._metrics

    @property
    def errors(self) -> ErrorRecorder:
        """The one error path (initialising on first use)."""
        if self._errors is None:
            self.initialize()
        assert self._errors is not None
        return self._errors

    def record_error(
        self, job: str, stage: Stage | str, message: str, **details: Any
    ) -> str | None:
        """Record an error everywhere; the details and result are `ErrorRecorder.record`'s."""
        return self.errors.record(job, stage, message, **details)

    def job_errors(self, job: str) -> JobErrors:
        """The error recorder bound to `job`."""
        return self.errors.for_job(job)

    def set_deployment_context_for_job(self, job: str, context: DeploymentContext) -> None:
        """Attribute `job`'s errors to `context` (kept per job, not one global)."""
        with self._lock:
            self._job_contexts[job] = context
        job_logger(_log, job).info(
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
        if self._errors is not None:
            self._errors.flush()

    def shutdown(self) -> None:
        self.flush_log_throttle()
