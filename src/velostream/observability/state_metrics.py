"""The families of jobs whose state is partitioned (server/processors/partitions.py).

- `velo_state_restores_total{job,origin}`: partitions whose state was rebuilt when they
  came, by where from (`changelog`, `cache`: the local checkpoint, `empty`: nothing
  committed yet);
- `velo_state_restore_records_total{job}` and `velo_state_restore_seconds_total{job}`:
  changelog messages read and time spent restoring;
- `velo_state_restoring_partitions{job}`: partitions being restored now (progress);
- `velo_state_partitions{job}`: partitions held now;
- `velo_source_partition_lag{job,partition}`: messages of a held partition not read
  yet (the broker's high watermark, as of the last fetch, minus the next offset).

Labels stay bounded: jobs are deployed ones and partitions those of their topic.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from velostream.observability.text import safe_text

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["StateFamilies", "StateGauges"]

ORIGINS = ("changelog", "cache", "empty")


@dataclass(slots=True)
class StateGauges:
    """One job's partitioned-state figures (written by the job's thread)."""

    restores: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ORIGINS, 0))
    records: int = 0
    seconds: float = 0.0
    restoring: int = 0
    partitions: int = 0
    lag: dict[int, int] = field(default_factory=dict)


class StateFamilies:
    """Every partitioned job's figures, collected at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, StateGauges] = {}

    def for_job(self, job: str) -> StateGauges:
        with self._lock:
            return self._jobs.setdefault(job, StateGauges())

    def restored(self, job: str, origin: str, records: int, seconds: float) -> None:
        gauges = self.for_job(job)
        with self._lock:
            gauges.restores[origin] = gauges.restores.get(origin, 0) + 1
            gauges.records += records
            gauges.seconds += seconds

    def remove(self, job: str) -> None:
        with self._lock:
            self._jobs.pop(job, None)

    def describe(self) -> Iterable[Metric]:
        return self._families({})

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            snapshot = {
                job: StateGauges(
                    dict(g.restores), g.records, g.seconds, g.restoring, g.partitions, dict(g.lag)
                )
                for job, g in self._jobs.items()
            }
        return self._families(snapshot)

    @staticmethod
    def _families(snapshot: dict[str, StateGauges]) -> Iterator[Metric]:
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

        restores = CounterMetricFamily(
            "velo_state_restores",
            "Partitions whose state was rebuilt when they came, by origin",
            labels=["job", "origin"],
        )
        records = CounterMetricFamily(
            "velo_state_restore_records", "Changelog messages read to restore state", labels=["job"]
        )
        seconds = CounterMetricFamily(
            "velo_state_restore_seconds", "Time spent restoring state", labels=["job"]
        )
        restoring = GaugeMetricFamily(
            "velo_state_restoring_partitions", "Partitions being restored now", labels=["job"]
        )
        held = GaugeMetricFamily(
            "velo_state_partitions", "Input partitions whose state a job holds", labels=["job"]
        )
        lag = GaugeMetricFamily(
            "velo_source_partition_lag",
            "Messages of a held partition not read yet",
            labels=["job", "partition"],
        )
        for job, g in snapshot.items():
            name = safe_text(job)
            for origin, count in g.restores.items():
                restores.add_metric([name, origin], count)
            records.add_metric([name], g.records)
            seconds.add_metric([name], g.seconds)
            restoring.add_metric([name], g.restoring)
            held.add_metric([name], g.partitions)
            for partition, behind in sorted(g.lag.items()):
                lag.add_metric([name, str(partition)], behind)
        yield from (restores, records, seconds, restoring, held, lag)
