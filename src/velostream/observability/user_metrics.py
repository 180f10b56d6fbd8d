"""User-defined metrics from `@metric` annotations, emitted per output record.

Each output batch is aggregated once per metric by DuckDB (rows matching
`@metric_condition`, grouped by the `@metric_labels` columns): a counter counts the
rows (or adds `@metric_field`), a gauge keeps the last value of `@metric_field`, a
histogram counts values per bucket. Series carry a `job` label. A job's label
combinations are bounded across all its metrics (default 1,000): the overflow is
counted in `velo_user_metric_overflow_total{job,metric}` and logged (once per job and
metric), never exported as new series. An undeployed job's series go, and a family
left with none goes too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from velostream.observability.text import safe_text
from velostream.sql.model import MetricSpec

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["DEFAULT_BUCKETS", "MAX_LABEL_SETS", "UserMetrics"]

MAX_LABEL_SETS = 1000
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_TABLE = "__out"
_log = logging.getLogger("velostream.metrics")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(slots=True)
class _Series:
    spec: MetricSpec
    values: dict[tuple[str, ...], list[float]] = field(default_factory=dict)
    overflow: dict[str, int] = field(default_factory=dict)


class UserMetrics:
    """Every job's user-defined metrics, exported at scrape time."""

    def __init__(self, max_label_sets: int = MAX_LABEL_SETS) -> None:
        """`max_label_sets`: the series one job may have, across all its metrics."""
        self._lock = threading.Lock()
        self._series: dict[str, _Series] = {}
        self._max = max_label_sets
        self._per_job: dict[str, int] = {}

    def observe(
        self,
        job: str,
        specs: tuple[MetricSpec, ...],
        table: pa.Table,
        con: duckdb.DuckDBPyConnection,
    ) -> None:
        """Update every metric of `job` from one output batch."""
        if not specs or table.num_rows == 0:
            return
        con.register(_TABLE, table)
        try:
            for spec in specs:
                rows = con.sql(self._query(spec)).fetchall()
                self._update(job, spec, rows)
        finally:
            con.unregister(_TABLE)

    def _query(self, spec: MetricSpec) -> str:
        labels = [f"CAST({_quote(label)} AS VARCHAR)" for label in spec.labels]
        where = f" WHERE {spec.condition}" if spec.condition else ""
        value = f"CAST({_quote(spec.field)} AS DOUBLE)" if spec.field else None
        if spec.type == "counter":
            measures = [f"SUM({value})" if value else "COUNT(*)"]
        elif spec.type == "gauge":
            measures = [f"LAST({value})"]
        else:
            buckets = spec.buckets or DEFAULT_BUCKETS
            measures = [f"COUNT(*) FILTER (WHERE {value} <= {b})" for b in buckets]
            measures += [f"COUNT({value})", f"SUM({value})"]
        group = f" GROUP BY {', '.join(labels)}" if labels else ""
        return f"SELECT {', '.join([*labels, *measures])} FROM {_TABLE}{where}{group}"

    def _update(self, job: str, spec: MetricSpec, rows: list[tuple[Any, ...]]) -> None:
        n = len(spec.labels)
        with self._lock:
            series = self._series.setdefault(spec.name, _Series(spec))
            for row in rows:
                key = (job, *("" if v is None else str(v) for v in row[:n]))
                measures = [float(m) if m is not None else 0.0 for m in row[n:]]
                current = series.values.get(key)
                if current is None:
                    if self._per_job.get(job, 0) >= self._max:
                        if job not in series.overflow:
                            _log.warning(
                                "job %r: metric %s reached the job's bound of %d series; "
                                "new label sets are counted in velo_user_metric_overflow_total",
                                job,
                                spec.name,
                                self._max,
                                extra={"job": job},
                            )
                        series.overflow[job] = series.overflow.get(job, 0) + 1
                        continue
                    self._per_job[job] = self._per_job.get(job, 0) + 1
                    series.values[key] = measures
                elif spec.type == "gauge":
                    series.values[key] = measures
                else:
                    series.values[key] = [a + b for a, b in zip(current, measures, strict=True)]

    def remove_job(self, job: str) -> None:
        with self._lock:
            for name, series in list(self._series.items()):
                for key in [k for k in series.values if k[0] == job]:
                    del series.values[key]
                series.overflow.pop(job, None)
                if not series.values and not series.overflow:
                    del self._series[name]  # its family goes with its last series
            self._per_job.pop(job, None)

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.metrics_core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        with self._lock:
            snapshot = [(s.spec, dict(s.values), dict(s.overflow)) for s in self._series.values()]
        overflow = CounterMetricFamily(
            "velo_user_metric_overflow",
            "User-metric label sets dropped because a metric reached its bound",
            labels=["job", "metric"],
        )
        for spec, values, dropped in snapshot:
            labels = ["job", *spec.labels]
            help_text = spec.help or f"user metric {spec.name}"
            family: Metric
            if spec.type == "counter":
                family = CounterMetricFamily(spec.name, help_text, labels=labels)
                for key, measures in values.items():
                    family.add_metric(_label_values(key), measures[0])
            elif spec.type == "gauge":
                family = GaugeMetricFamily(spec.name, help_text, labels=labels)
                for key, measures in values.items():
                    family.add_metric(_label_values(key), measures[0])
            else:
                family = HistogramMetricFamily(spec.name, help_text, labels=labels)
                bounds = spec.buckets or DEFAULT_BUCKETS
                for key, measures in values.items():
                    count, total = measures[-2], measures[-1]
                    buckets = [(str(b), measures[i]) for i, b in enumerate(bounds)]
                    buckets.append(("+Inf", count))
                    family.add_metric(_label_values(key), buckets, total)
            yield family
            for job, n in dropped.items():
                overflow.add_metric([safe_text(job), spec.name], n)
        yield overflow


def _label_values(key: tuple[str, ...]) -> list[str]:
    """A series key as label values a scrape can encode."""
    return [safe_text(value) for value in key]
