"""Prometheus metrics of the error system and of jobs, on an injected registry.

Seed names are kept: `velo_error_messages_total` (a true counter here),
`velo_unique_error_types`, `velo_buffered_error_messages` and
`velo_error_message{message}`. The last is read from the buffer at scrape time, so
it only ever holds the buffered entries (series vanish on eviction and reset).
Job-level families carry bounded labels: `job` (at most max jobs), `stage` and
`kind` (fixed sets). `remove_job` drops an undeployed job's series.

Every family is kept in plain Python and exported by a collector at scrape time, so
prometheus_client (~35 ms to import) is imported only when a registry is needed: one
handed in, `registry` read, or a scrape (`exposition`). A `velo-sql run` that serves
no metrics never imports it; its collectors are registered when it first is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from velostream.errors import ErrorKind, Severity, Stage
from velostream.observability.catalog import DEFAULT_CATALOG_CAPACITY, ErrorCatalog, RecordOutcome
from velostream.observability.error_tracker import (
    DEFAULT_BUFFER_CAPACITY,
    DeploymentContext,
    ErrorEntry,
    ErrorMessageBuffer,
    ErrorStats,
)
from velostream.observability.job_metrics import (
    BATCH_DURATION_BUCKETS,
    DLQ_RECORDS,
    DLQ_WRITE_FAILURES,
    JOB_STATUSES,
    RECORDS_FAILED,
    RECORDS_IN,
    RECORDS_OUT,
    JobCounters,
    JobFamilies,
)
from velostream.observability.source_metrics import SourceFamilies
from velostream.observability.state_metrics import StateFamilies
from velostream.observability.text import safe_text
from velostream.observability.user_metrics import UserMetrics

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

__all__ = [
    "BATCH_DURATION_BUCKETS",
    "JOB_STATUSES",
    "MAX_MESSAGE_LABEL_CHARS",
    "MetricsProvider",
]

# A label value is not a log line: long messages are cut (the catalog keeps the text).
MAX_MESSAGE_LABEL_CHARS = 300
_UNATTRIBUTED_JOB = ""
_ACTIVE_STATUSES = frozenset({"starting", "running", "paused"})


class _Gauge:
    """A gauge kept as plain values and exported at scrape time: prometheus_client's
    `Gauge`, for `set` only, without importing prometheus_client first."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = list(labelnames)
        # label values -> value; an unlabelled gauge has its one series from the start
        self._values: dict[tuple[str, ...], float] = {} if labelnames else {(): 0.0}

    def set(self, value: float, labels: Sequence[str] = ()) -> None:
        """Set the series of `labels` (none for an unlabelled gauge) to `value`."""
        if len(labels) != len(self._labelnames):
            raise ValueError(f"{self._name} takes labels {self._labelnames}, not {labels}")
        self._values[tuple(labels)] = float(value)

    def value(self, labels: Sequence[str] = ()) -> float | None:
        return self._values.get(tuple(labels))

    def describe(self) -> Iterable[Metric]:
        return self._families({})

    def collect(self) -> Iterable[Metric]:
        return self._families(dict(self._values))

    def _families(self, values: dict[tuple[str, ...], float]) -> Iterator[Metric]:
        from prometheus_client.metrics_core import GaugeMetricFamily

        family = GaugeMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for labels, value in values.items():
            family.add_metric(list(labels), value)
        yield family


class _BufferedMessagesCollector:
    """`velo_error_message{message}`: the buffered entries, read at scrape time."""

    def __init__(self, buffer: ErrorMessageBuffer) -> None:
        self._buffer = buffer

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.metrics_core import GaugeMetricFamily

        family = GaugeMetricFamily(
            "velo_error_message",
            "Occurrences of each error message currently in the rolling buffer",
            labels=["message"],
        )
        # Messages sharing their first MAX_MESSAGE_LABEL_CHARS are one series.
        counts: dict[str, int] = {}
        for message, count in self._buffer.get_message_counts().items():
            label = safe_text(message)[:MAX_MESSAGE_LABEL_CHARS]
            counts[label] = counts.get(label, 0) + count
        for label, count in counts.items():
            family.add_metric([label], count)
        yield family


class _ErrorCounts:
    """Error counters as plain integers under one lock, exported at scrape time.

    `record_error` is on every error path; one lock and a few dict increments cost a
    fraction of a prometheus_client child's `inc()` each.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.total = 0
        # (job, stage value, kind value): plain strings hash in C, enum members do not.
        self.by_job: dict[tuple[str, str, str], int] = {}
        self.last_error: dict[str, float] = {}
        self.groups_created = 0
        self.evictions = 0
        self.recording_failures = 0

    def count(self, job: str, stage: Stage, kind: ErrorKind, now: float, n: int = 1) -> None:
        """Count errors whose filing failed (no catalog outcome)."""
        with self.lock:
            self.total += n
            if job:
                key = (job, stage._value_, kind._value_)
                self.by_job[key] = self.by_job.get(key, 0) + n
                self.last_error[job] = now

    def record(
        self,
        job: str,
        stage: Stage,
        kind: ErrorKind,
        now: float,
        outcome: RecordOutcome,
        count: int = 1,
    ) -> None:
        """Count `count` errors and the catalog's outcome."""
        with self.lock:
            self.total += count
            if job:
                key = (job, stage._value_, kind._value_)
                self.by_job[key] = self.by_job.get(key, 0) + count
                self.last_error[job] = now
            if outcome.new_group:
                self.groups_created += 1
            if outcome.evicted:
                self.evictions += 1

    def remove_job(self, job: str) -> None:
        with self.lock:
            for key in [k for k in self.by_job if k[0] == job]:
                del self.by_job[key]
            self.last_error.pop(job, None)

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

        with self.lock:
            by_job = list(self.by_job.items())
            last_error = list(self.last_error.items())
            totals = (
                ("velo_error_messages", "Errors recorded since the server started", self.total),
                (
                    "velo_error_groups_created",
                    "New error groups (fingerprints) seen",
                    self.groups_created,
                ),
                (
                    "velo_error_catalog_evictions",
                    "Error groups evicted from the bounded catalog",
                    self.evictions,
                ),
                (
                    "velo_error_recording_failures",
                    "Failures inside error recording itself (the error was still counted)",
                    self.recording_failures,
                ),
            )
        for name, doc, value in totals:
            yield CounterMetricFamily(name, doc, value=value)
        errors = CounterMetricFamily(
            "velo_job_errors", "Errors per job, stage and kind", labels=["job", "stage", "kind"]
        )
        for (job, stage, kind), count in by_job:
            errors.add_metric([safe_text(job), stage, kind], count)
        yield errors
        last = GaugeMetricFamily(
            "velo_job_last_error_timestamp_seconds",
            "Unix time of a job's last error",
            labels=["job"],
        )
        for job, ts in last_error:
            last.add_metric([safe_text(job)], ts)
        yield last


class MetricsProvider:
    """Error tracking (buffer + catalog) and every Prometheus family of the server."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        buffer_capacity: int = DEFAULT_BUFFER_CAPACITY,
        catalog_capacity: int = DEFAULT_CATALOG_CAPACITY,
        deployment_context: DeploymentContext | None = None,
        process_metrics: bool = True,
        build_version: str = "0.0.0",
    ) -> None:
        self._registry = registry
        # What `exposition` renders through prometheus_client: all but the job families
        # (made with the registry, see `_expose`).
        self._rest: CollectorRegistry | None = None
        self.buffer = ErrorMessageBuffer(buffer_capacity)
        self.catalog = ErrorCatalog(catalog_capacity)
        self._buffer_capacity = buffer_capacity
        self._context = deployment_context
        if deployment_context is not None:
            self.buffer.set_deployment_context(deployment_context)
        self._lock = threading.Lock()
        self._job_buffers: dict[str, ErrorMessageBuffer] = {}

        self.unique_error_types = _Gauge(
            "velo_unique_error_types", "Distinct error groups (fingerprints) tracked"
        )
        self.buffered_error_messages = _Gauge(
            "velo_buffered_error_messages",
            "Unique messages in the rolling error buffer (0..capacity)",
        )
        self.error_counts = _ErrorCounts()
        self.user_metrics = UserMetrics()
        self.jobs = JobFamilies()  # rendered apart by `exposition`, see job_metrics
        self.sources = SourceFamilies()  # per source of a multi-source job
        self.state = StateFamilies()  # of jobs whose state is partitioned
        self.active_jobs = _Gauge("velo_active_jobs", "Jobs deployed and not finished")
        self.build_info = _Gauge(
            "velo_build_info",
            "Build and node identity (always 1)",
            ["version", "node_id", "node_name", "region"],
        )
        ctx = deployment_context or DeploymentContext()
        identity = (ctx.node_id or "", ctx.node_name or "", ctx.region or "")
        self.build_info.set(1, [build_version, *map(safe_text, identity)])
        self._process_metrics = process_metrics
        # What `register_collector` was given before the registry was made.
        self._registered: list[Collector] = []
        # The collectors, in their order of registration, and whether `_rest` has them
        # too (all but the job families).
        self._collectors: list[tuple[Collector, bool]] = [
            (self.unique_error_types, True),
            (self.buffered_error_messages, True),
            (self.error_counts, True),
            (self.user_metrics, True),
            (_BufferedMessagesCollector(self.buffer), True),
            (self.jobs, False),
            (self.sources, True),
            (self.state, True),
            (self.active_jobs, True),
            (self.build_info, True),
        ]
        if registry is not None:  # handed one: prometheus_client is loaded already
            self._expose()

    @property
    def registry(self) -> CollectorRegistry:
        """The registry that has every family (made on first use if none was given)."""
        return self._expose()[0]

    def _expose(self) -> tuple[CollectorRegistry, CollectorRegistry]:
        """The registry and `_rest`, each collector registered in them, made at the first
        call (importing prometheus_client)."""
        with self._lock:
            if self._rest is not None:
                assert self._registry is not None
                return self._registry, self._rest
            from prometheus_client import (
                CollectorRegistry,
                GCCollector,
                PlatformCollector,
                ProcessCollector,
            )

            registry = self._registry if self._registry is not None else CollectorRegistry()
            rest = CollectorRegistry()
            collectors = list(self._collectors)
            if self._process_metrics:
                collectors += [
                    (ProcessCollector(registry=None), True),
                    (PlatformCollector(registry=None), True),
                ]
            for collector, also_rest in collectors:
                if also_rest:
                    rest.register(collector)
                registry.register(collector)
            if self._process_metrics:
                registry.register(GCCollector(registry=rest))  # it registers itself in `rest`
            for collector in self._registered:
                rest.register(collector)
                registry.register(collector)
            self._registry, self._rest = registry, rest
            return registry, rest

    # --- the seed's API (section 9.2) ---------------------------------------

    def record_error_message(self, message: str) -> None:
        """Record an unattributed error message (the seed's entry point)."""
        self.record_job_error(_UNATTRIBUTED_JOB, Stage.JOB, ErrorKind.INTERNAL, message)

    def get_error_stats(self) -> ErrorStats | None:
        return self.buffer.get_stats()

    def get_top_errors(self, limit: int) -> list[tuple[str, int]]:
        return self.buffer.get_stats().get_top_errors(limit)

    def get_error_messages(self) -> list[ErrorEntry]:
        return self.buffer.get_messages()

    def sync_error_metrics(self) -> None:
        """Bring the error gauges up to date; call before every scrape."""
        self.unique_error_types.set(len(self.catalog))
        self.buffered_error_messages.set(self.buffer.buffer_size())

    def get_total_errors(self) -> int:
        """Errors recorded since the last reset (the seed's buffer total)."""
        return self.buffer.total_errors

    def get_unique_error_types(self) -> int:
        """Distinct error groups tracked in the catalog (not only the buffered ones)."""
        return len(self.catalog)

    def get_buffered_error_count(self) -> int:
        return self.buffer.buffer_size()

    def reset_error_tracking(self) -> None:
        """Clear the buffers and the catalog; counters, being counters, keep counting."""
        self.buffer.reset()
        self.catalog.reset()
        with self._lock:
            buffers = list(self._job_buffers.values())
        for buf in buffers:
            buf.reset()
        self.sync_error_metrics()

    def get_metrics_text(self, openmetrics: bool = False) -> str:
        accept = "application/openmetrics-text" if openmetrics else None
        return self.exposition(accept)[0].decode("utf-8")

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The scrape body and its content type for an HTTP Accept header."""
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
        from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS
        from prometheus_client.openmetrics.exposition import (
            generate_latest as generate_openmetrics,
        )

        _, rest = self._expose()
        self.sync_error_metrics()
        if accept and "application/openmetrics-text" in accept:
            text: bytes = generate_openmetrics(rest)  # type: ignore[no-untyped-call]
            jobs = self.jobs.render(openmetrics=True).encode()
            return text.removesuffix(b"# EOF\n") + jobs + b"# EOF\n", OPENMETRICS
        return generate_latest(rest) + self.jobs.render().encode(), CONTENT_TYPE_LATEST

    # --- attributed errors ----------------------------------------------------

    def record_job_error(
        self,
        job: str,
        stage: Stage,
        kind: ErrorKind,
        message: str,
        *,
        severity: Severity | None = None,
        context: DeploymentContext | None = None,
        record_ref: str | None = None,
        count: int = 1,
    ) -> str:
        """Feed an error (`count` identical occurrences) to the buffers, the catalog and
        the counters; return its fingerprint. Logging is the caller's
        (`observability.recorder.ErrorRecorder`, the one error path)."""
        now = time.time()
        # The buffers and the catalog hold text as it is shown (/errors, the scrape, the
        # console): undecodable bytes of a name or a line are escaped once, here. The
        # isascii() tests (O(1)) keep the call off the common path.
        if not message.isascii():
            message = safe_text(message)
        if record_ref is not None and not record_ref.isascii():
            record_ref = safe_text(record_ref)
        try:
            line = f"[{job}] {message}" if job else message
            self.buffer.add_error(line if line.isascii() else safe_text(line), context, count)
            # positional: keyword passing costs measurably on this path
            outcome = self.catalog.record(
                job, stage, kind, message, severity, context, record_ref, now, count
            )
            if job:
                buffer = self._job_buffers.get(job) or self._new_job_buffer(job, context)
                buffer.add_error(message, context, count)
        except BaseException:
            # The error still counts even when filing it failed.
            self.error_counts.count(job, stage, kind, now, count)
            raise
        self.error_counts.record(job, stage, kind, now, outcome, count)
        return outcome.fingerprint

    def register_collector(self, collector: Collector) -> None:
        """Export `collector`'s families with the others (scraped through `exposition`)."""
        with self._lock:
            if self._rest is None:  # registered after the others, when they are
                self._registered.append(collector)
                return
            registry, rest = self._registry, self._rest
        assert registry is not None
        rest.register(collector)
        registry.register(collector)

    def count_recording_failure(self, n: int = 1) -> None:
        with self.error_counts.lock:
            self.error_counts.recording_failures += n

    def total_recorded(self) -> int:
        """Errors recorded since start (the counter; unlike the buffer, never reset)."""
        return self.error_counts.total

    def job_buffer(self, job: str) -> ErrorMessageBuffer | None:
        with self._lock:
            return self._job_buffers.get(job)

    def _new_job_buffer(self, job: str, context: DeploymentContext | None) -> ErrorMessageBuffer:
        with self._lock:
            buf = self._job_buffers.get(job)
            if buf is None:
                buf = ErrorMessageBuffer(self._buffer_capacity)
                if context is not None:
                    buf.set_deployment_context(context)
                self._job_buffers[job] = buf
        return buf

    # --- job-level families -----------------------------------------------------

    def job_counters(self, job: str) -> JobCounters:
        """`job`'s counters, the one place its counts live (read at scrape time)."""
        return self.jobs.counters(job)

    def add_records_in(self, job: str, n: int = 1) -> None:
        if n:
            self.jobs.add(job, RECORDS_IN, n)

    def add_records_out(self, job: str, n: int = 1) -> None:
        if n:
            self.jobs.add(job, RECORDS_OUT, n)

    def add_records_failed(self, job: str, n: int = 1) -> None:
        if n:
            self.jobs.add(job, RECORDS_FAILED, n)

    def add_dlq_records(self, job: str, n: int = 1) -> None:
        if n:
            self.jobs.add(job, DLQ_RECORDS, n)

    def add_dlq_write_failure(self, job: str) -> None:
        self.jobs.add(job, DLQ_WRITE_FAILURES)

    def observe_batch(self, job: str, seconds: float) -> None:
        self.jobs.observe_batch(job, seconds)

    def set_job_status(self, job: str, status: str) -> None:
        """Mark `status` as the job's current state (a Prometheus state set)."""
        with self._lock:
            self.jobs.set_status(job, status)
            self.active_jobs.set(self._count_active())

    def _count_active(self) -> int:
        return sum(1 for _, st in self.jobs.statuses() if st in _ACTIVE_STATUSES)

    def remove_job(self, job: str) -> None:
        """Drop every series and buffer of an undeployed job."""
        with self._lock:
            self.jobs.remove(job)
            self.sources.remove(job)
            self.state.remove(job)
            self._job_buffers.pop(job, None)
            self.active_jobs.set(self._count_active())
        self.catalog.remove_job(job)
        self.error_counts.remove_job(job)
        self.user_metrics.remove_job(job)

    def job_statuses(self) -> Iterator[tuple[str, str]]:
        yield from self.jobs.statuses()
