"""Per-source accounting of jobs that read several sources (UNION ALL).

A multi-source job's records are counted per source as well as in total, so that for
each source, as for the job, records in = out or filtered + failed + late. Each batch
comes from one source; what the job's counters (`JobCounters`) gained while the batch
was processed — read, written, failed, late, dead-lettered — is that source's
(`SourceTally.batch`), so retries and stops count exactly as the totals do.

Exported as `velo_job_source_records_{in,out,failed}_total`, `velo_job_source_late_records_total`
and `velo_job_source_dlq_records_total`, labelled `job` and `source`: the sources are
those a deployed job's SQL names, so the labels stay bounded. Series of an undeployed
job are removed with the job's.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from velostream.observability.job_metrics import JobCounters, JobCounts
from velostream.observability.text import safe_text

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["SourceCounters", "SourceFamilies", "SourceTally"]

# (family name without `_total`, help, JobCounts field).
_COUNTERS = (
    ("velo_job_source_records_in", "Records a job read from one of its sources", "records_in"),
    ("velo_job_source_records_out", "Records a job wrote from one of its sources", "records_out"),
    (
        "velo_job_source_records_failed",
        "Records of one of a job's sources that failed",
        "records_failed",
    ),
    (
        "velo_job_source_late_records",
        "Records of one of a job's sources that came after their window closed",
        "late_records",
    ),
    ("velo_job_source_dlq_records", "Dead letters of one of a job's sources", "dead_letters"),
)
FIELDS = tuple(field for _, _, field in _COUNTERS)


class SourceCounters:
    """One source's share of a job's counts (written by the job's thread only)."""

    __slots__ = ("dead_letters", "late_records", "records_failed", "records_in", "records_out")

    def __init__(self) -> None:
        self.records_in = 0
        self.records_out = 0
        self.records_failed = 0
        self.late_records = 0
        self.dead_letters = 0

    def as_dict(self) -> dict[str, int]:
        return {field: getattr(self, field) for field in FIELDS}


class SourceFamilies:
    """The per-source counters of every multi-source job, collected at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, dict[str, SourceCounters]] = {}

    def for_job(self, job: str, sources: Sequence[str]) -> dict[str, SourceCounters]:
        """`job`'s counters of `sources` (kept across restarts; new sources start at 0)."""
        with self._lock:
            known = self._jobs.setdefault(job, {})
            for source in sources:
                known.setdefault(source, SourceCounters())
            return known

    def remove(self, job: str) -> None:
        with self._lock:
            self._jobs.pop(job, None)

    def describe(self) -> Iterable[Metric]:
        return self._families({})

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            snapshot = {
                job: {source: c.as_dict() for source, c in sources.items()}
                for job, sources in self._jobs.items()
            }
        return self._families(snapshot)

    @staticmethod
    def _families(snapshot: dict[str, dict[str, dict[str, int]]]) -> Iterator[Metric]:
        from prometheus_client.metrics_core import CounterMetricFamily

        for name, help_text, field in _COUNTERS:
            family = CounterMetricFamily(name, help_text, labels=["job", "source"])
            for job, sources in snapshot.items():
                for source, counts in sources.items():
                    family.add_metric([safe_text(job), safe_text(source)], counts[field])
            yield family


class SourceTally:
    """Attributes to a batch's source what the job's counters gained while it ran."""

    def __init__(self, job: JobCounters, sources: dict[str, SourceCounters]) -> None:
        self.job = job
        self.sources = sources

    @contextlib.contextmanager
    def batch(self, source: str | None) -> Iterator[None]:
        """Count what happens inside the block (the batch's processing) for `source`."""
        before = self.job.snapshot()
        try:
            yield
        finally:
            counters = self.sources.get(source or "")
            if counters is not None:
                _add(counters, before, self.job.snapshot())


def _add(counters: SourceCounters, before: JobCounts, after: JobCounts) -> None:
    for field in FIELDS:
        delta = getattr(after, field) - getattr(before, field)
        if delta:
            setattr(counters, field, getattr(counters, field) + delta)
