"""User-defined metrics from @metric annotations: counters, gauges, histograms, bounds."""

from __future__ import annotations

import logging

import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry

from velostream.datasource.registry import connector_catalog
from velostream.engine import sandboxed_connection
from velostream.errors import SqlValidationError
from velostream.observability.user_metrics import UserMetrics
from velostream.sql.model import MetricSpec
from velostream.sql.parser import parse_application

TRADES = pa.table(
    {
        "symbol": ["AAPL", "AAPL", "MSFT", "TSLA"],
        "price": [150.0, 450.0, 380.0, 250.0],
        "quantity": [100, 200, 50, 75],
    }
)


def _registry(metrics: UserMetrics) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(metrics)
    return registry


def test_counter_counts_matching_rows_per_label() -> None:
    metrics = UserMetrics()
    registry = _registry(metrics)
    spec = MetricSpec(name="big_trades", labels=("symbol",), condition="price > 200")
    con = sandboxed_connection()
    metrics.observe("j", (spec,), TRADES, con)
    metrics.observe("j", (spec,), TRADES, con)
    value = registry.get_sample_value
    assert value("big_trades_total", {"job": "j", "symbol": "AAPL"}) == 2
    assert value("big_trades_total", {"job": "j", "symbol": "MSFT"}) == 2
    assert value("big_trades_total", {"job": "j", "symbol": "TSLA"}) == 2


def test_gauge_keeps_the_last_value_and_histogram_counts_buckets() -> None:
    metrics = UserMetrics()
    registry = _registry(metrics)
    gauge = MetricSpec(name="last_price", type="gauge", labels=("symbol",), field="price")
    hist = MetricSpec(name="qty", type="histogram", field="quantity", buckets=(60.0, 150.0))
    metrics.observe("j", (gauge, hist), TRADES, sandboxed_connection())
    value = registry.get_sample_value
    assert value("last_price", {"job": "j", "symbol": "AAPL"}) == 450.0
    assert value("qty_bucket", {"job": "j", "le": "60.0"}) == 1
    assert value("qty_bucket", {"job": "j", "le": "150.0"}) == 3
    assert value("qty_bucket", {"job": "j", "le": "+Inf"}) == 4
    assert value("qty_count", {"job": "j"}) == 4
    assert value("qty_sum", {"job": "j"}) == 425


def test_label_sets_are_bounded_and_the_overflow_is_counted() -> None:
    metrics = UserMetrics(max_label_sets=2)
    registry = _registry(metrics)
    spec = MetricSpec(name="per_symbol", labels=("symbol",))
    metrics.observe("j", (spec,), TRADES, sandboxed_connection())
    samples = [s for f in registry.collect() if f.name == "per_symbol" for s in f.samples]
    assert len(samples) == 2
    assert (
        registry.get_sample_value(
            "velo_user_metric_overflow_total", {"job": "j", "metric": "per_symbol"}
        )
        == 1
    )
    metrics.remove_job("j")
    assert not [s for f in registry.collect() if f.name == "per_symbol" for s in f.samples]


def test_the_bound_is_per_job_across_its_metrics_and_the_overflow_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = UserMetrics(max_label_sets=4)
    registry = _registry(metrics)
    specs = tuple(MetricSpec(name=f"m{i}", labels=("symbol",)) for i in range(3))
    con = sandboxed_connection()
    with caplog.at_level(logging.WARNING, logger="velostream.metrics"):
        for _ in range(2):
            metrics.observe("j", specs, TRADES, con)
        metrics.observe("other", specs[:1], TRADES, con)  # another job has its own bound

    def series(job: str) -> int:
        return sum(
            1
            for f in registry.collect()
            if f.name.startswith("m")
            for s in f.samples
            if s.labels["job"] == job
        )

    def overflow(job: str, metric: str) -> float | None:
        return registry.get_sample_value(
            "velo_user_metric_overflow_total", {"job": job, "metric": metric}
        )

    assert series("j") == 4 and series("other") == 3
    # m0 took 3 label sets, m1 the 4th; the rest of m1 and all of m2 overflowed, twice.
    assert (overflow("j", "m0"), overflow("j", "m1"), overflow("j", "m2")) == (None, 4, 6)
    logged = [r for r in caplog.records if "reached the job's bound" in r.getMessage()]
    assert [r.__dict__["job"] for r in logged] == ["j", "j"]  # once per job and metric
    metrics.remove_job("j")
    assert series("j") == 0 and overflow("j", "m1") is None
    metrics.remove_job("other")
    assert not [f for f in registry.collect() if f.name.startswith("m")]  # families gone


@pytest.mark.parametrize(
    "name", ["velo_error_messages", "VELO_x", "process_cpu_seconds", "python_info"]
)
def test_a_user_metric_may_not_take_a_reserved_name(name: str) -> None:
    sql = f"""-- @app: m
-- @metric: {name}
CREATE STREAM out AS SELECT id FROM src EMIT CHANGES
WITH ('src.type' = 'memory_source', 'out.type' = 'memory_sink');
"""
    with pytest.raises(SqlValidationError) as caught:
        parse_application(sql, connectors=connector_catalog(), env={})
    (problem,) = caught.value.problems
    assert f"metric name '{name}' is reserved" in problem and "2:" in problem
