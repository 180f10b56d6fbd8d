"""The PromQL metric-name reader the dashboard and rule checks rely on."""

from __future__ import annotations

import pytest

from tests.unit.monitoring.assets import (
    Exported,
    metric_names,
    rated_metrics,
    variable_query_expr,
)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("velo_active_jobs", {"velo_active_jobs"}),
        (
            'sum by (job, stage) (rate(velo_job_errors_total{job=~"$job", stage!="dlq"}'
            "[$__rate_interval]))",
            {"velo_job_errors_total"},
        ),
        (
            "histogram_quantile(0.95, sum by (job, le) "
            "(rate(velo_job_batch_duration_seconds_bucket[5m])))",
            {"velo_job_batch_duration_seconds_bucket"},
        ),
        (
            '(velo_job_status{status="failed"} == 1) * on(instance) '
            "group_left(node_id, node_name, region, version) velo_build_info",
            {"velo_job_status", "velo_build_info"},
        ),
        (
            "(x_total unless x_total offset 5m) or on(instance) up == bool 0",
            {"x_total", "up"},
        ),
        (
            "topk by (instance) (1, last_over_time(velo_build_info[1h])) > 1e3",
            {"velo_build_info"},
        ),
        ('time() - last{job="a}b"} or vector(0)', {"last"}),
        ("job:velo_job_error_ratio:rate5m > 0.05", {"job:velo_job_error_ratio:rate5m"}),
        ("sum(rate(a_total[5m:1m])) without (kind) / ignoring(kind) b", {"a_total", "b"}),
    ],
)
def test_metric_names_keeps_only_selected_metrics(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_a_misspelt_metric_is_not_exported(exported: Exported) -> None:
    """The check that guards every dashboard and rule catches a one-letter typo."""
    expr = 'sum(rate(velo_error_mesages_total{instance=~"$node"}[$__rate_interval]))'
    assert metric_names(expr) - exported.names == {"velo_error_mesages_total"}


def test_exported_names_include_every_family_and_histogram_suffixes(exported: Exported) -> None:
    expected = {
        "velo_error_messages_total",
        "velo_unique_error_types",
        "velo_buffered_error_messages",
        "velo_error_message",
        "velo_error_groups_created_total",
        "velo_error_catalog_evictions_total",
        "velo_error_recording_failures_total",
        "velo_error_log_suppressed_total",
        "velo_job_errors_total",
        "velo_job_last_error_timestamp_seconds",
        "velo_job_records_in_total",
        "velo_job_records_out_total",
        "velo_job_records_failed_total",
        "velo_dlq_records_total",
        "velo_dlq_write_failures_total",
        "velo_job_status",
        "velo_job_batch_duration_seconds_bucket",
        "velo_job_batch_duration_seconds_sum",
        "velo_job_batch_duration_seconds_count",
        "velo_active_jobs",
        "velo_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    }
    assert expected <= exported.names
    assert "velo_unique_error_types" not in exported.rateable
    assert {"velo_error_messages_total", "velo_job_batch_duration_seconds_bucket"} <= (
        exported.rateable
    )


def test_rated_metrics_finds_the_argument_of_rate_and_increase() -> None:
    expr = 'increase(a_total[1m]) > 0 and rate( b_bucket{le="1"}[5m]) and max_over_time(c[5m])'
    assert rated_metrics(expr) == {"a_total", "b_bucket"}


def test_variable_queries_name_their_selector() -> None:
    assert variable_query_expr('label_values(velo_job_status{instance=~"$node"}, job)') == (
        'velo_job_status{instance=~"$node"}'
    )
    assert variable_query_expr("label_values(instance)") is None
    with pytest.raises(ValueError, match="unsupported"):
        variable_query_expr("query_result(up)")
