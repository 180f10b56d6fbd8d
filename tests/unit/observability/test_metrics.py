"""MetricsProvider: the seed's API (spec 9.2), the error families and the job families."""

from __future__ import annotations

import os
import time

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.helpers import duplicate_series, message_series, series_of_job
from velostream.errors import ErrorKind, Severity, Stage
from velostream.observability.error_tracker import DeploymentContext, ErrorStats
from velostream.observability.logging import LogThrottle
from velostream.observability.metrics import (
    JOB_STATUSES,
    MAX_MESSAGE_LABEL_CHARS,
    MetricsProvider,
)

CTX = DeploymentContext.with_all("node-1", "Node One", "eu-west-1", "1.0")


@pytest.fixture
def provider(registry: CollectorRegistry) -> MetricsProvider:
    return MetricsProvider(registry, buffer_capacity=3, process_metrics=False)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


# --- the seed's methods ------------------------------------------------------------------


def test_fresh_provider_has_no_errors(provider: MetricsProvider) -> None:
    assert provider.get_total_errors() == 0
    assert provider.get_unique_error_types() == 0
    assert provider.get_buffered_error_count() == 0
    assert provider.get_error_messages() == []
    assert provider.get_top_errors(5) == []
    assert provider.get_error_stats() == ErrorStats(0, 0, 0, {})


def test_record_error_message_feeds_the_buffer_and_the_counter(
    provider: MetricsProvider, registry: CollectorRegistry
) -> None:
    for message in ["Connection timeout", "Invalid query", "Connection timeout"]:
        provider.record_error_message(message)
    assert provider.get_total_errors() == 3
    assert provider.get_buffered_error_count() == 2
    assert [(e.message, e.count) for e in provider.get_error_messages()] == [
        ("Connection timeout", 2),
        ("Invalid query", 1),
    ]
    assert provider.get_top_errors(1) == [("Connection timeout", 2)]
    stats = provider.get_error_stats()
    assert stats is not None
    assert (stats.total_errors, stats.unique_errors, stats.buffered_messages) == (3, 2, 2)
    assert value(registry, "velo_error_messages_total") == 3
    # An unattributed message has no job: no job series, no job buffer, no prefix.
    assert series_of_job(registry, "") == []
    assert provider.job_buffer("") is None


def test_unique_error_types_counts_catalog_groups_beyond_the_buffer(
    provider: MetricsProvider,
) -> None:
    for word in ["alpha", "beta", "gamma", "delta", "epsilon"]:
        provider.record_error_message(f"unknown column {word}")
    assert provider.get_buffered_error_count() == 3
    assert provider.get_unique_error_types() == 5


def test_sync_error_metrics_updates_the_gauges(
    provider: MetricsProvider, registry: CollectorRegistry
) -> None:
    for word in ["alpha", "beta", "gamma", "delta", "alpha"]:
        provider.record_error_message(f"unknown column {word}")
    assert value(registry, "velo_unique_error_types") == 0
    assert value(registry, "velo_buffered_error_messages") == 0
    provider.sync_error_metrics()
    assert value(registry, "velo_unique_error_types") == 4
    assert value(registry, "velo_buffered_error_messages") == 3
    assert value(registry, "velo_error_messages_total") == 5
    assert value(registry, "velo_error_groups_created_total") == 4


def test_error_messages_total_is_a_counter(registry: CollectorRegistry) -> None:
    MetricsProvider(registry, process_metrics=False)
    (family,) = [f for f in registry.collect() if f.name == "velo_error_messages"]
    assert family.type == "counter"


def test_reset_clears_buffers_and_catalog_but_counters_keep_counting(
    provider: MetricsProvider, registry: CollectorRegistry
) -> None:
    provider.record_error_message("a")
    provider.record_job_error("j", Stage.SINK, ErrorKind.IO, "b")
    provider.reset_error_tracking()
    assert provider.get_total_errors() == 0
    assert provider.get_unique_error_types() == 0
    assert provider.get_buffered_error_count() == 0
    assert provider.get_error_messages() == []
    job_buffer = provider.job_buffer("j")
    assert job_buffer is not None
    assert job_buffer.buffer_size() == 0
    assert message_series(registry) == []
    assert value(registry, "velo_unique_error_types") == 0
    assert value(registry, "velo_buffered_error_messages") == 0
    assert value(registry, "velo_error_messages_total") == 2
    assert value(registry, "velo_job_errors_total", job="j", stage="sink", kind="IOError") == 1
    provider.record_error_message("a")
    assert provider.get_total_errors() == 1
    assert value(registry, "velo_error_messages_total") == 3


def test_get_metrics_text(provider: MetricsProvider) -> None:
    provider.record_error_message("boom")
    text = provider.get_metrics_text()
    assert "velo_error_messages_total 1.0" in text
    assert 'velo_error_message{message="boom"} 1.0' in text
    assert "velo_buffered_error_messages 1.0" in text  # synced before rendering
    assert not text.rstrip().endswith("# EOF")
    openmetrics = provider.get_metrics_text(openmetrics=True)
    assert openmetrics.endswith("# EOF\n")
    assert "velo_error_messages_total 1.0" in openmetrics


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, "text/plain; version=1.0.0; charset=utf-8"),
        ("text/plain", "text/plain; version=1.0.0; charset=utf-8"),
        ("*/*", "text/plain; version=1.0.0; charset=utf-8"),
        (
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    ],
)
def test_exposition_negotiates_the_format(
    provider: MetricsProvider, accept: str | None, content_type: str
) -> None:
    body, got = provider.exposition(accept)
    assert got == content_type
    assert body.endswith(b"# EOF\n") == content_type.startswith("application/openmetrics")


# --- velo_error_message: only the buffered entries ------------------------------------------


def test_message_series_are_the_buffered_entries(
    provider: MetricsProvider, registry: CollectorRegistry
) -> None:
    provider.record_error_message("a")
    provider.record_error_message("a")
    provider.record_error_message("b")
    assert sorted(message_series(registry)) == [("a", 2.0), ("b", 1.0)]


def test_an_evicted_message_loses_its_series(
    provider: MetricsProvider, registry: CollectorRegistry
) -> None:
    for message in ["a", "a", "b", "c", "d"]:
        provider.record_error_message(message)
    assert sorted(message_series(registry)) == [("b", 1.0), ("c", 1.0), ("d", 1.0)]
    provider.record_error_message("a")  # comes back, restarting at 1
    assert sorted(message_series(registry)) == [("a", 1.0), ("c", 1.0), ("d", 1.0)]


def test_reset_removes_every_message_series(
    provider: MetricsProvider, registry: CollectorRegistry
) -> None:
    provider.record_error_message("a")
    provider.reset_error_tracking()
    assert message_series(registry) == []
    assert "velo_error_message{" not in provider.get_metrics_text()


def test_many_messages_never_exceed_the_buffer_capacity(
    provider: MetricsProvider, registry: CollectorRegistry
) -> None:
    for i in range(500):
        provider.record_error_message(f"error number {i}")
        assert len(message_series(registry)) <= 3
    assert [m for m, _ in message_series(registry)] == [
        f"error number {i}" for i in (497, 498, 499)
    ]


def test_a_long_message_label_is_cut(
    provider: MetricsProvider, registry: CollectorRegistry
) -> None:
    provider.record_error_message("m" * 1000)
    assert message_series(registry) == [("m" * MAX_MESSAGE_LABEL_CHARS, 1.0)]
    assert provider.get_error_messages()[0].message == "m" * 1000


def test_messages_sharing_a_long_prefix_do_not_duplicate_a_series(
    provider: MetricsProvider, registry: CollectorRegistry
) -> None:
    prefix = "Query failed: " + "SELECT * FROM orders WHERE " * 20
    provider.record_error_message(prefix + "price < 0")
    provider.record_error_message(prefix + "qty < 0")
    provider.record_error_message(prefix + "qty < 0")
    assert duplicate_series(provider.get_metrics_text()) == []
    labels = [m for m, _ in message_series(registry)]
    assert len(labels) == len(set(labels))


def test_undecodable_text_in_a_message_does_not_break_the_exposition(
    provider: MetricsProvider,
) -> None:
    raw_line = b"id,name\n1,caf\xe9\n".decode("utf-8", "surrogateescape")
    provider.record_job_error("files", Stage.DESERIALIZE, ErrorKind.PARSE, f"bad {raw_line}")
    assert "velo_error_messages_total 1.0" in provider.get_metrics_text()
    assert [m for m, _ in message_series(provider.registry)] == [
        "[files] bad id,name\n1,caf\\xe9\n"
    ]


NAME = os.fsdecode(b"tr\xffades")


@pytest.mark.parametrize("openmetrics", [False, True])
def test_names_that_are_not_utf8_are_escaped_in_every_label(openmetrics: bool) -> None:
    registry = CollectorRegistry()
    ctx = DeploymentContext(node_id=NAME, node_name="n", region="r")
    provider = MetricsProvider(
        registry, deployment_context=ctx, process_metrics=False, build_version="1"
    )
    provider.record_job_error(NAME, Stage.SOURCE, ErrorKind.IO, f"cannot read {NAME}.csv")
    provider.add_records_in(NAME, 3)
    provider.set_job_status(NAME, "running")
    provider.observe_batch(NAME, 0.01)
    text = provider.get_metrics_text(openmetrics=openmetrics)
    parse = parse_openmetrics if openmetrics else parse_text
    labels = {(s.name, k, v) for f in parse(text) for s in f.samples for k, v in s.labels.items()}
    shown = "tr\\xffades"
    for name in (
        "velo_job_records_in_total",
        "velo_job_status",
        "velo_job_batch_duration_seconds_bucket",
        "velo_job_errors_total",
        "velo_job_last_error_timestamp_seconds",
    ):
        assert (name, "job", shown) in labels, name
    assert ("velo_build_info", "node_id", shown) in labels
    assert ("velo_error_message", "message", f"[{shown}] cannot read {shown}.csv") in labels
    # The job is still one job: its series go when it is undeployed.
    provider.remove_job(NAME)
    assert shown not in provider.get_metrics_text().replace(f'node_id="{shown}"', "")


# --- attributed errors -------------------------------------------------------------------------


def test_record_job_error_feeds_every_family(
    provider: MetricsProvider, registry: CollectorRegistry
) -> None:
    before = time.time()
    fingerprint = provider.record_job_error(
        "orders", Stage.DESERIALIZE, ErrorKind.PARSE, "bad row 7", context=CTX, record_ref="f:8"
    )
    provider.record_job_error("orders", Stage.DESERIALIZE, ErrorKind.PARSE, "bad row 9")
    provider.record_job_error("orders", Stage.SINK, ErrorKind.IO, "disk full")
    assert fingerprint in {g.fingerprint for g in provider.catalog.groups()}
    assert value(registry, "velo_error_groups_created_total") == 2
    assert value(registry, "velo_error_messages_total") == 3
    assert (
        value(
            registry, "velo_job_errors_total", job="orders", stage="deserialize", kind="ParseError"
        )
        == 2
    )
    assert value(registry, "velo_job_errors_total", job="orders", stage="sink", kind="IOError") == 1
    last_error = value(registry, "velo_job_last_error_timestamp_seconds", job="orders")
    assert last_error is not None
    assert before <= last_error <= time.time()
    assert value(registry, "velo_error_groups_created_total") == 2
    # The server buffer prefixes the job, as the seed does; the job's buffer does not.
    assert [e.message for e in provider.get_error_messages()] == [
        "[orders] bad row 7",
        "[orders] bad row 9",
        "[orders] disk full",
    ]
    job_buffer = provider.job_buffer("orders")
    assert job_buffer is not None
    assert [(e.message, e.count) for e in job_buffer.get_messages()] == [
        ("bad row 7", 1),
        ("bad row 9", 1),
        ("disk full", 1),
    ]
    assert job_buffer.get_deployment_context() == CTX
    groups = provider.catalog.groups(job="orders")
    assert [(g.stage, g.count) for g in groups] == [(Stage.SINK, 1), (Stage.DESERIALIZE, 2)]


def test_record_job_error_returns_the_fingerprint(registry: CollectorRegistry) -> None:
    provider = MetricsProvider(registry, process_metrics=False)
    first = provider.record_job_error("j", Stage.SINK, ErrorKind.IO, "disk 1 full")
    second = provider.record_job_error("j", Stage.SINK, ErrorKind.IO, "disk 2 full")
    assert (
        first
        == second
        == provider.catalog.fingerprint_of(ErrorKind.IO, Stage.SINK, "disk 9 full")[0]
    )
    assert registry.get_sample_value("velo_error_groups_created_total") == 1


def test_a_registered_collector_is_scraped_with_the_rest(registry: CollectorRegistry) -> None:
    provider = MetricsProvider(registry, process_metrics=False)
    throttle = LogThrottle(interval=3600.0)
    provider.register_collector(throttle)
    for _ in range(3):
        throttle.check("k")
    assert registry.get_sample_value("velo_error_log_suppressed_total") == 2
    assert b"velo_error_log_suppressed_total 2.0" in provider.exposition(None)[0]


def test_total_recorded_survives_a_reset(provider: MetricsProvider) -> None:
    provider.record_error_message("a")
    provider.record_job_error("j", Stage.SINK, ErrorKind.IO, "b")
    provider.reset_error_tracking()
    assert provider.total_recorded() == 2
    assert provider.get_total_errors() == 0


def test_recording_failures_are_counted(
    provider: MetricsProvider, registry: CollectorRegistry
) -> None:
    assert value(registry, "velo_error_recording_failures_total") == 0
    provider.count_recording_failure()
    assert value(registry, "velo_error_recording_failures_total") == 1


def test_record_job_error_attributes_the_context_and_severity(provider: MetricsProvider) -> None:
    provider.record_job_error(
        "j", Stage.SOURCE, ErrorKind.CONNECTION, "down", severity=Severity.USER, context=CTX
    )
    (entry,) = provider.get_error_messages()
    assert entry.deployment_context == CTX
    (group,) = provider.catalog.groups()
    assert group.severity is Severity.USER
    assert group.deployment_context == CTX


def test_catalog_evictions_are_counted(registry: CollectorRegistry) -> None:
    provider = MetricsProvider(registry, catalog_capacity=2, process_metrics=False)
    for word in ["alpha", "beta", "gamma", "delta"]:
        provider.record_job_error("j", Stage.PROCESS, ErrorKind.EXECUTION, f"no column {word}")
    assert value(registry, "velo_error_catalog_evictions_total") == 2
    assert value(registry, "velo_error_groups_created_total") == 4
    assert provider.get_unique_error_types() == 2


# --- job families ------------------------------------------------------------------------------


def test_record_counters(provider: MetricsProvider, registry: CollectorRegistry) -> None:
    provider.add_records_in("j", 100)
    provider.add_records_in("j")
    provider.add_records_out("j", 90)
    provider.add_records_failed("j", 11)
    provider.add_dlq_records("j", 10)
    provider.add_dlq_write_failure("j")
    provider.add_dlq_write_failure("j")
    assert value(registry, "velo_job_records_in_total", job="j") == 101
    assert value(registry, "velo_job_records_out_total", job="j") == 90
    assert value(registry, "velo_job_records_failed_total", job="j") == 11
    assert value(registry, "velo_dlq_records_total", job="j") == 10
    assert value(registry, "velo_dlq_write_failures_total", job="j") == 2


def test_adding_zero_creates_no_series(
    provider: MetricsProvider, registry: CollectorRegistry
) -> None:
    provider.add_records_in("idle", 0)
    provider.add_records_out("idle", 0)
    provider.add_records_failed("idle", 0)
    provider.add_dlq_records("idle", 0)
    assert series_of_job(registry, "idle") == []


def test_batch_duration_histogram(provider: MetricsProvider, registry: CollectorRegistry) -> None:
    for seconds in [0.002, 0.02, 0.3, 20.0]:
        provider.observe_batch("j", seconds)
    assert value(registry, "velo_job_batch_duration_seconds_count", job="j") == 4
    assert value(registry, "velo_job_batch_duration_seconds_sum", job="j") == pytest.approx(20.322)
    assert value(registry, "velo_job_batch_duration_seconds_bucket", job="j", le="0.005") == 1
    assert value(registry, "velo_job_batch_duration_seconds_bucket", job="j", le="0.5") == 3
    assert value(registry, "velo_job_batch_duration_seconds_bucket", job="j", le="10.0") == 3
    assert value(registry, "velo_job_batch_duration_seconds_bucket", job="j", le="+Inf") == 4


def status_values(registry: CollectorRegistry, job: str) -> dict[str, float | None]:
    return {s: value(registry, "velo_job_status", job=job, status=s) for s in JOB_STATUSES}


def test_job_status_is_a_state_set(provider: MetricsProvider, registry: CollectorRegistry) -> None:
    provider.set_job_status("j", "starting")
    assert status_values(registry, "j") == {
        "starting": 1,
        "running": 0,
        "paused": 0,
        "completed": 0,
        "stopped": 0,
        "failed": 0,
    }
    provider.set_job_status("j", "running")
    provider.set_job_status("j", "failed")
    values = status_values(registry, "j")
    assert values["failed"] == 1
    assert sum(v or 0 for v in values.values()) == 1
    assert list(provider.job_statuses()) == [("j", "failed")]


def test_unknown_job_status_is_refused(provider: MetricsProvider) -> None:
    with pytest.raises(ValueError, match="unknown job status 'Running'"):
        provider.set_job_status("j", "Running")


def test_active_jobs_counts_starting_running_and_paused(
    provider: MetricsProvider, registry: CollectorRegistry
) -> None:
    assert value(registry, "velo_active_jobs") == 0
    for job, status in [("a", "starting"), ("b", "running"), ("c", "paused"), ("d", "completed")]:
        provider.set_job_status(job, status)
    provider.set_job_status("e", "stopped")
    provider.set_job_status("f", "failed")
    assert value(registry, "velo_active_jobs") == 3
    provider.set_job_status("b", "completed")
    assert value(registry, "velo_active_jobs") == 2
    provider.remove_job("a")
    assert value(registry, "velo_active_jobs") == 1
    assert dict(provider.job_statuses()) == {
        "b": "completed",
        "c": "paused",
        "d": "completed",
        "e": "stopped",
        "f": "failed",
    }


def fill_job(provider: MetricsProvider, job: str) -> None:
    provider.record_job_error(job, Stage.PROCESS, ErrorKind.EXECUTION, "bad 1")
    provider.record_job_error(job, Stage.SINK, ErrorKind.IO, "disk full")
    provider.add_records_in(job, 5)
    provider.add_records_out(job, 4)
    provider.add_records_failed(job, 1)
    provider.add_dlq_records(job, 1)
    provider.add_dlq_write_failure(job)
    provider.observe_batch(job, 0.1)
    provider.set_job_status(job, "running")


def test_remove_job_drops_every_series_of_that_job(
    provider: MetricsProvider, registry: CollectorRegistry
) -> None:
    fill_job(provider, "gone")
    fill_job(provider, "kept")
    before_kept = sorted(series_of_job(registry, "kept"))
    names = {name.removesuffix("_created") for name in series_of_job(registry, "gone")}
    assert {
        "velo_job_errors_total",
        "velo_job_records_in_total",
        "velo_job_records_out_total",
        "velo_job_records_failed_total",
        "velo_dlq_records_total",
        "velo_dlq_write_failures_total",
        "velo_job_status",
        "velo_job_batch_duration_seconds_bucket",
        "velo_job_last_error_timestamp_seconds",
    } <= names
    provider.remove_job("gone")
    assert series_of_job(registry, "gone") == []
    assert sorted(series_of_job(registry, "kept")) == before_kept
    assert provider.job_buffer("gone") is None
    assert provider.catalog.groups(job="gone") == []
    assert len(provider.catalog.groups(job="kept")) == 2
    assert value(registry, "velo_active_jobs") == 1
    assert 'job="gone"' not in provider.get_metrics_text()


def test_a_removed_job_starts_afresh(
    provider: MetricsProvider, registry: CollectorRegistry
) -> None:
    fill_job(provider, "j")
    provider.remove_job("j")
    provider.record_job_error("j", Stage.PROCESS, ErrorKind.EXECUTION, "bad 1")
    provider.add_records_in("j", 2)
    assert (
        value(registry, "velo_job_errors_total", job="j", stage="process", kind="ExecutionError")
        == 1
    )
    assert value(registry, "velo_job_records_in_total", job="j") == 2
    assert value(registry, "velo_job_status", job="j", status="running") is None


def test_removing_an_unknown_job_is_harmless(provider: MetricsProvider) -> None:
    provider.remove_job("never-deployed")


# --- identity and registries -------------------------------------------------------------------


def test_build_info(registry: CollectorRegistry) -> None:
    MetricsProvider(registry, deployment_context=CTX, build_version="1.2.3", process_metrics=False)
    labels = {
        "version": "1.2.3",
        "node_id": "node-1",
        "node_name": "Node One",
        "region": "eu-west-1",
    }
    assert value(registry, "velo_build_info", **labels) == 1


def test_build_info_without_context(provider: MetricsProvider, registry: CollectorRegistry) -> None:
    labels = {"version": "0.0.0", "node_id": "", "node_name": "", "region": ""}
    assert value(registry, "velo_build_info", **labels) == 1


def test_the_buffer_takes_the_node_context(registry: CollectorRegistry) -> None:
    provider = MetricsProvider(registry, deployment_context=CTX, process_metrics=False)
    assert provider.buffer.get_deployment_context() == CTX
    provider.record_error_message("e")
    assert provider.buffer.format_for_report().startswith(
        "=== Error Report [node_id=node-1, node_name=Node One, region=eu-west-1, version=1.0] ==="
    )


def test_process_collectors_are_optional() -> None:
    with_process = CollectorRegistry()
    MetricsProvider(with_process)
    names = {f.name for f in with_process.collect()}
    assert {"python_info", "process_cpu_seconds", "python_gc_objects_collected"} <= names
    without = CollectorRegistry()
    MetricsProvider(without, process_metrics=False)
    assert not [f for f in without.collect() if f.name.startswith(("python_", "process_"))]


def test_nothing_lands_on_the_global_registry() -> None:
    MetricsProvider(CollectorRegistry(), process_metrics=False)
    MetricsProvider(process_metrics=False)
    assert not [f.name for f in prometheus_client.REGISTRY.collect() if f.name.startswith("velo_")]


def test_providers_on_separate_registries_do_not_interfere() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    a = MetricsProvider(first, process_metrics=False)
    MetricsProvider(second, process_metrics=False)
    a.record_error_message("only in a")
    assert first.get_sample_value("velo_error_messages_total") == 1
    assert second.get_sample_value("velo_error_messages_total") == 0
