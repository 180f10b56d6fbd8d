"""User-defined metrics from @metric annotations: counters, gauges, histograms, bounds."""

from __future__ import annotations

import pyarrow as pa
from prometheus_client import CollectorRegistry

from velostream.engine import sandboxed_connection
from velostream.observability.user_metrics import UserMetrics
from velostream.sql.model import MetricSpec

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
