"""The per-job families, kept in plain Python and rendered straight to exposition text.

Records in/out/failed, dead letters, DLQ write failures, the job status state set
and the batch duration histogram: with 50 jobs these are ~1,250 samples. Formatting
them through prometheus_client's generic exposition costs ~8 µs a sample — about
10 ms of every scrape, under the GIL the busy jobs compete for, so a scrape took
hundreds of milliseconds. Here each job's label is escaped once and a scrape is string
joins (~0.5 ms for 50 jobs). `collect()` hands the same families to a registry, so
`get_sample_value` and any other exporter see them as usual.

A job's counts live in one place, its `JobCounters`: the job's processor adds to them
as it goes (plain attribute increments; one writer, the job's thread), `/jobs` and the
run summary read them, and a scrape renders them. They outlive a restart or an upgrade
of the job (counters never go back), until the job is undeployed.

Every series of a job exists from its first update (counters start at 0, so `rate()`
and `increase()` work from the first scrape). `_created` samples are rendered in the
OpenMetrics format only, where they belong.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, NamedTuple

from velostream.observability.text import safe_text

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["BATCH_DURATION_BUCKETS", "JOB_STATUSES", "JobCounters", "JobCounts", "JobFamilies"]

JOB_STATUSES: tuple[str, ...] = ("starting", "running", "paused", "completed", "stopped", "failed")
BATCH_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# (family name without `_total`, help): the exported counters, in the order of `_FIELDS`.
COUNTERS: tuple[tuple[str, str], ...] = (
    ("velo_job_records_in", "Records read by a job"),
    ("velo_job_records_out", "Records written by a job"),
    ("velo_job_records_failed", "Records that failed in a job"),
    ("velo_dlq_records", "Records written to a job's dead-letter queue"),
    ("velo_dlq_write_failures", "Failed dead-letter writes"),
    ("velo_late_records", "Records that came after their window closed (dropped or dead-lettered)"),
)
# The JobCounters attribute behind each of COUNTERS.
_FIELDS = (
    "records_in",
    "records_out",
    "records_failed",
    "dead_letters",
    "dlq_write_failures",
    "late_records",
)
RECORDS_IN, RECORDS_OUT, RECORDS_FAILED, DLQ_RECORDS, DLQ_WRITE_FAILURES, LATE_RECORDS = range(
    len(COUNTERS)
)
STATUS = ("velo_job_status", "1 for a job's current state, 0 otherwise")
BATCH_DURATION = ("velo_job_batch_duration_seconds", "Time to process one micro-batch")
_LE = [*(repr(float(b)) for b in BATCH_DURATION_BUCKETS), "+Inf"]


def escape_label_value(value: str) -> str:
    """A label value as the text formats quote it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class JobCounts(NamedTuple):
    """A job's counts at one moment (or between two, see `JobCounters.since`)."""

    records_in: int = 0
    records_out: int = 0
    records_failed: int = 0
    dead_letters: int = 0
    dlq_write_failures: int = 0
    late_records: int = 0
    batches: int = 0
    retries: int = 0


class JobCounters:
    """One job's counts and batch-duration histogram; `label` is its `job="..."` text.

    Written by the job's own thread only (a replay runs under the job's batch lock),
    so increments need no lock; readers see each value as of some recent moment.
    """

    __slots__ = (
        "batches",
        "buckets",
        "count",
        "created",
        "dead_letters",
        "dlq_write_failures",
        "label",
        "late_records",
        "records_failed",
        "records_in",
        "records_out",
        "retries",
        "status",
        "sum",
    )

    def __init__(self, job: str) -> None:
        self.label = f'job="{escape_label_value(safe_text(job))}"'
        self.records_in = 0
        self.records_out = 0
        self.records_failed = 0
        self.dead_letters = 0
        self.dlq_write_failures = 0
        self.late_records = 0
        self.batches = 0
        self.retries = 0
        self.created = time.time()
        self.buckets = [0] * (len(BATCH_DURATION_BUCKETS) + 1)  # per bucket; the last is +Inf
        self.sum = 0.0
        self.count = 0
        self.status: str | None = None

    def snapshot(self) -> JobCounts:
        return JobCounts(*(getattr(self, name) for name in JobCounts._fields))

    def since(self, before: JobCounts) -> JobCounts:
        """What was counted after `before` (one run of the job: /jobs, summaries)."""
        return JobCounts(*(now - then for now, then in zip(self.snapshot(), before, strict=True)))

    @property
    def counts(self) -> list[int]:
        """The exported counters' values, in the order of COUNTERS."""
        return [getattr(self, name) for name in _FIELDS]

    def observe_batch(self, seconds: float) -> None:
        """One batch took `seconds` (the batch-duration histogram)."""
        self.buckets[bisect.bisect_left(BATCH_DURATION_BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1


class JobFamilies:
    """Thread-safe per-job series with a fast exposition (`render`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, JobCounters] = {}

    def _series(self, job: str) -> JobCounters:
        series = self._jobs.get(job)
        if series is None:
            series = self._jobs[job] = JobCounters(job)
        return series

    def counters(self, job: str) -> JobCounters:
        """`job`'s counters (created at 0 on first use): what its processor adds to."""
        series = self._jobs.get(job)
        if series is None:
            with self._lock:
                series = self._series(job)
        return series

    def add(self, job: str, counter: int, n: int = 1) -> None:
        """Add `n` to one of the COUNTERS (by index) of `job`."""
        if n < 0:
            raise ValueError("counters only go up")
        series = self.counters(job)
        name = _FIELDS[counter]
        setattr(series, name, getattr(series, name) + n)

    def observe_batch(self, job: str, seconds: float) -> None:
        self.counters(job).observe_batch(seconds)

    def set_status(self, job: str, status: str) -> None:
        if status not in JOB_STATUSES:
            raise ValueError(f"unknown job status {status!r}; valid: {', '.join(JOB_STATUSES)}")
        with self._lock:
            self._series(job).status = status

    def statuses(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(job, s.status) for job, s in self._jobs.items() if s.status is not None]

    def remove(self, job: str) -> None:
        with self._lock:
            self._jobs.pop(job, None)

    # --- exposition -------------------------------------------------------------

    def render(self, *, openmetrics: bool = False) -> str:
        """The families in the Prometheus text format (or OpenMetrics, without `# EOF`)."""
        with self._lock:
            jobs = list(self._jobs.values())
            lines: list[str] = []
            for index, (name, help_text) in enumerate(COUNTERS):
                family = name if openmetrics else f"{name}_total"
                lines += (f"# HELP {family} {help_text}", f"# TYPE {family} counter")
                field = _FIELDS[index]
                for s in jobs:
                    lines.append(f"{name}_total{{{s.label}}} {float(getattr(s, field))!r}")
                    if openmetrics:
                        lines.append(f"{name}_created{{{s.label}}} {s.created!r}")
            name, help_text = STATUS
            lines += (f"# HELP {name} {help_text}", f"# TYPE {name} gauge")
            for s in jobs:
                if s.status is not None:
                    lines += (
                        f'{name}{{{s.label},status="{st}"}} {"1.0" if st == s.status else "0.0"}'
                        for st in JOB_STATUSES
                    )
            name, help_text = BATCH_DURATION
            lines += (f"# HELP {name} {help_text}", f"# TYPE {name} histogram")
            for s in jobs:
                cumulative = 0
                for le, n in zip(_LE, s.buckets, strict=True):
                    cumulative += n
                    lines.append(f'{name}_bucket{{{s.label},le="{le}"}} {float(cumulative)!r}')
                lines.append(f"{name}_count{{{s.label}}} {float(s.count)!r}")
                lines.append(f"{name}_sum{{{s.label}}} {s.sum!r}")
                if openmetrics:
                    lines.append(f"{name}_created{{{s.label}}} {s.created!r}")
        lines.append("")
        return "\n".join(lines)

    def describe(self) -> Iterable[Metric]:
        return self._families({})

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            snapshot = {
                job: (list(s.counts), s.created, list(s.buckets), s.sum, s.status)
                for job, s in self._jobs.items()
            }
        return self._families(snapshot)

    @staticmethod
    def _families(
        snapshot: dict[str, tuple[list[int], float, list[int], float, str | None]],
    ) -> Iterator[Metric]:
        from prometheus_client.metrics_core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        for index, (name, help_text) in enumerate(COUNTERS):
            counter = CounterMetricFamily(name, help_text, labels=["job"])
            for job, (counts, created, _, _, _) in snapshot.items():
                counter.add_metric([safe_text(job)], counts[index], created=created)
            yield counter
        status = GaugeMetricFamily(*STATUS, labels=["job", "status"])
        for job, (_, _, _, _, current) in snapshot.items():
            if current is not None:
                for st in JOB_STATUSES:
                    status.add_metric([safe_text(job), st], 1 if st == current else 0)
        yield status
        histogram = HistogramMetricFamily(*BATCH_DURATION, labels=["job"])
        for job, (_, _, buckets, total, _) in snapshot.items():
            cumulative, pairs = 0, []
            for le, n in zip(_LE, buckets, strict=True):
                cumulative += n
                pairs.append((le, float(cumulative)))
            histogram.add_metric([safe_text(job)], pairs, total, timestamp=None)
        yield histogram
