"""/metrics as the real `promtool check metrics` sees it, with hostile error messages."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import NODE_CONTEXT
from velostream.errors import ErrorKind, Stage
from velostream.observability.error_tracker import DeploymentContext
from velostream.observability.manager import ObservabilityManager, StreamingConfig
from velostream.server.processors.error_tracking_helper import ErrorTracker

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration

HOSTILE_MESSAGES = [
    'column "price" is not a number',
    "path C:\\data\\orders.csv not found \\",
    "first line\nsecond line\n\nfourth",
    "carriage\rreturn and\ttab",
    "ünïcødé: 価格 は 数値 ではありません 🚀",
    'all at once: "q" \\ \n é \\n literally',
    "x" * 299 + "\\ cut right after a backslash",
    "",
]


def promtool() -> str:
    path = shutil.which("promtool") or (
        "/usr/bin/promtool" if shutil.which("/usr/bin/promtool") else None
    )
    if path is None:
        pytest.fail(
            "promtool is not installed: it comes with Debian's `prometheus` package "
            "(`apt-get install prometheus`, which `make test` does via `make system-deps`)"
        )
    return path


def check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def busy_manager() -> ObservabilityManager:
    """A server that has seen hostile messages, on every family, with process metrics."""
    config = StreamingConfig(node_context=NODE_CONTEXT, error_buffer_size=len(HOSTILE_MESSAGES))
    manager = ObservabilityManager(config, CollectorRegistry())
    manager.set_deployment_context_for_job("orders", DeploymentContext(node_id='n"1', version="2"))
    for i, message in enumerate(HOSTILE_MESSAGES):
        ErrorTracker.record_error(
            manager, "orders", message, stage=list(Stage)[i % len(Stage)], kind=ErrorKind.PARSE
        )
    provider = manager.require_metrics()
    provider.record_error_message('unattributed "seed-style" message')
    provider.add_records_in("orders", 10)
    provider.add_records_out("orders", 7)
    provider.add_records_failed("orders", 3)
    provider.add_dlq_records("orders", 3)
    provider.add_dlq_write_failure("orders")
    provider.observe_batch("orders", 0.042)
    provider.set_job_status("orders", "running")
    return manager


def test_promtool_accepts_the_metrics_endpoint(
    busy_manager: ObservabilityManager, make_client: Callable[..., TestClient]
) -> None:
    response = make_client(busy_manager).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    result = check_metrics(response.text)
    assert result.returncode == 0, f"promtool said:\n{result.stdout}{result.stderr}"
    assert result.stdout == result.stderr == ""


def test_hostile_messages_survive_the_exposition_round_trip(
    busy_manager: ObservabilityManager, make_client: Callable[..., TestClient]
) -> None:
    text = make_client(busy_manager).get("/metrics").text
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "velo_error_message"]
    labels = {s.labels["message"] for s in family.samples}
    # The buffer is as big as the hostile list: the unattributed message evicted the first.
    expected = {f"[orders] {m}"[:300] for m in HOSTILE_MESSAGES[1:]}
    assert labels == expected | {'unattributed "seed-style" message'}


def test_promtool_rejects_a_broken_exposition() -> None:
    # The check is real: promtool does fail on bad input.
    result = check_metrics('velo_error_message{message="unterminated} 1\n')
    assert result.returncode != 0
