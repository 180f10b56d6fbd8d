"""A MetricsProvider made without a registry imports prometheus_client only when a
registry or a scrape needs it, and then exports exactly what an eager one does."""

from __future__ import annotations

import subprocess
import sys

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families as parse_text

from velostream.errors import ErrorKind, Stage
from velostream.observability.error_tracker import DeploymentContext
from velostream.observability.logging import LogThrottle
from velostream.observability.metrics import MetricsProvider

CTX = DeploymentContext.with_all("node-1", "Node One", "eu-west-1", "1.0")


def _feed(provider: MetricsProvider) -> LogThrottle:
    """The same history for each provider: errors, statuses, counts, a collector."""
    provider.record_error_message("boom")
    provider.record_job_error("orders", Stage.SINK, ErrorKind.IO, "disk 1 full", context=CTX)
    provider.set_job_status("orders", "running")
    provider.add_records_in("orders", 5)
    provider.observe_batch("orders", 0.02)
    throttle = LogThrottle(interval=3600.0)
    provider.register_collector(throttle)
    for _ in range(3):
        throttle.check("k")
    return throttle


def _samples(text: str) -> list[tuple[str, list[tuple[str, dict[str, str], float | None]]]]:
    """Each family of a scrape, in order, with its samples (the process's own families
    by name only, and times without their value: those move)."""
    families = []
    for family in parse_text(text):
        if family.name.startswith(("process_", "python_")):
            families.append((family.name, []))
            continue
        samples = [
            (s.name, s.labels, None if "timestamp" in s.name else s.value) for s in family.samples
        ]
        families.append((family.name, samples))
    return families


def test_a_lazy_provider_exports_what_an_eager_one_does() -> None:
    eager = MetricsProvider(CollectorRegistry(), deployment_context=CTX, build_version="9.9")
    lazy = MetricsProvider(deployment_context=CTX, build_version="9.9")
    for provider in (eager, lazy):
        _feed(provider)
    assert _samples(lazy.get_metrics_text()) == _samples(eager.get_metrics_text())
    names = [f.name for f in eager.registry.collect()]
    assert [f.name for f in lazy.registry.collect()] == names
    assert "velo_error_log_suppressed" in names and "process_cpu_seconds" in names
    assert lazy.registry.get_sample_value("velo_active_jobs") == 1
    assert lazy.registry.get_sample_value("velo_error_log_suppressed_total") == 2


def test_a_collector_registered_after_the_first_scrape_is_scraped_too() -> None:
    provider = MetricsProvider(process_metrics=False)
    assert b"velo_error_log_suppressed" not in provider.exposition(None)[0]
    throttle = LogThrottle(interval=3600.0)
    provider.register_collector(throttle)
    throttle.check("k")
    throttle.check("k")
    assert b"velo_error_log_suppressed_total 1.0" in provider.exposition(None)[0]
    assert provider.registry.get_sample_value("velo_error_log_suppressed_total") == 1


_PROBE = """
import sys
from velostream.errors import ErrorKind, Stage
from velostream.observability.manager import ObservabilityManager, StreamingConfig
manager = ObservabilityManager.from_streaming_config(StreamingConfig.default())
manager.initialize()
metrics = manager.require_metrics()
manager.record_error("orders", Stage.SINK, "disk 1 full", kind=ErrorKind.IO)
metrics.set_job_status("orders", "running")
metrics.add_records_in("orders", 5)
assert "prometheus_client" not in sys.modules, "imported before a scrape"
text = metrics.get_metrics_text()
assert 'velo_job_errors_total{job="orders",kind="IOError",stage="sink"} 1.0' in text, text
assert "velo_active_jobs 1.0" in text
assert "prometheus_client" in sys.modules
"""


def test_recording_imports_no_prometheus_client_until_a_scrape() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
