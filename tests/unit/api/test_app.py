"""The HTTP app: /metrics, /health, /errors, /errors/recent, /errors/report."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.helpers import ManagerFactory
from velostream import __version__
from velostream.api import create_app
from velostream.errors import ErrorKind, Stage
from velostream.observability.error_tracker import DeploymentContext
from velostream.observability.manager import ObservabilityManager
from velostream.server.processors.error_tracking_helper import ErrorTracker

if TYPE_CHECKING:  # imported for real, warnings handled, by conftest.make_client
    from fastapi.testclient import TestClient

ClientFactory = Callable[..., "TestClient"]

PROBLEM = "application/problem+json"


@pytest.fixture
def client(make_client: ClientFactory, manager: ObservabilityManager) -> TestClient:
    return make_client(manager)


def record(
    manager: ObservabilityManager,
    job: str,
    message: str,
    stage: Stage = Stage.PROCESS,
    kind: ErrorKind = ErrorKind.EXECUTION,
) -> str:
    fp = ErrorTracker.record_error(manager, job, message, stage=stage, kind=kind)
    assert fp is not None
    return fp


def test_create_app_returns_a_fastapi_app(manager: ObservabilityManager) -> None:
    assert isinstance(create_app(manager), FastAPI)


def test_create_app_initialises_the_manager(make_manager: ManagerFactory) -> None:
    manager = make_manager(initialize=False)
    create_app(manager)
    assert manager.metrics() is not None


# --- /metrics --------------------------------------------------------------------------------


def test_metrics_in_the_text_format(client: TestClient, manager: ObservabilityManager) -> None:
    record(manager, "orders", "disk full", Stage.SINK, ErrorKind.IO)
    record(manager, "orders", "disk full", Stage.SINK, ErrorKind.IO)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=1.0.0; charset=utf-8"
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parse_text(response.text)
        for s in family.samples
    }
    assert samples[("velo_error_messages_total", ())] == 2
    assert samples[("velo_buffered_error_messages", ())] == 1  # synced by the scrape
    assert samples[("velo_unique_error_types", ())] == 1
    key = (("job", "orders"), ("kind", "IOError"), ("stage", "sink"))
    assert samples[("velo_job_errors_total", key)] == 2
    assert samples[("velo_error_message", (("message", "[orders] disk full"),))] == 2


def test_metrics_in_openmetrics_when_asked(
    client: TestClient, manager: ObservabilityManager
) -> None:
    record(manager, "orders", "disk full")
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    response = client.get("/metrics", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(response.text)}  # type: ignore[no-untyped-call]
    assert families["velo_error_messages"].type == "counter"
    assert families["velo_error_messages"].samples[0].value == 1


def test_metrics_without_accept_header_is_text(client: TestClient) -> None:
    response = client.get("/metrics", headers={"Accept": ""})
    assert response.headers["content-type"].startswith("text/plain")


# --- /health ----------------------------------------------------------------------------------


def test_health(client: TestClient, manager: ObservabilityManager) -> None:
    for message in ["a", "a", "b"]:
        record(manager, "j", message)
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "jobs": {},
        "version": __version__,
        "node": {
            "node_id": "node-1",
            "node_name": "Test Node",
            "region": "eu-west-1",
            "version": "9.9.9",
        },
        "errors": {"total": 3, "unique": 2, "buffered": 2},
    }


# --- /errors ----------------------------------------------------------------------------------


@pytest.fixture
def catalogued(manager: ObservabilityManager) -> ObservabilityManager:
    record(manager, "orders", "bad row 1", Stage.DESERIALIZE, ErrorKind.PARSE)
    record(manager, "orders", "disk full", Stage.SINK, ErrorKind.IO)
    record(manager, "trades", "bad row 2", Stage.DESERIALIZE, ErrorKind.PARSE)
    record(manager, "trades", "slow", Stage.SOURCE, ErrorKind.TIMEOUT)
    record(manager, "orders", "bad row 3", Stage.DESERIALIZE, ErrorKind.PARSE)
    return manager


def group_keys(body: dict[str, object]) -> list[tuple[str, str, int]]:
    groups = body["groups"]
    assert isinstance(groups, list)
    return [(g["job"], g["stage"], g["count"]) for g in groups]


def test_errors_lists_groups_most_recent_first(
    client: TestClient, catalogued: ObservabilityManager
) -> None:
    response = client.get("/errors")
    assert response.status_code == 200
    body = response.json()
    assert group_keys(body) == [
        ("orders", "deserialize", 2),
        ("trades", "source", 1),
        ("trades", "deserialize", 1),
        ("orders", "sink", 1),
    ]
    assert body["total_groups"] == 4
    assert body["evicted_groups"] == 0
    first = body["groups"][0]
    assert first["message"] == "bad row 3"
    assert first["normalized"] == "bad row <num>"
    assert first["kind"] == "ParseError"
    assert first["severity"] == "user"
    assert first["node_id"] == "node-1"
    assert len(first["fingerprint"]) == 16


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("job=orders", [("orders", "deserialize", 2), ("orders", "sink", 1)]),
        ("stage=deserialize", [("orders", "deserialize", 2), ("trades", "deserialize", 1)]),
        ("job=trades&stage=source", [("trades", "source", 1)]),
        ("limit=2", [("orders", "deserialize", 2), ("trades", "source", 1)]),
        ("job=orders&limit=1", [("orders", "deserialize", 2)]),
        ("job=nobody", []),
    ],
)
def test_errors_filters(
    client: TestClient,
    catalogued: ObservabilityManager,
    query: str,
    expected: list[tuple[str, str, int]],
) -> None:
    response = client.get(f"/errors?{query}")
    assert response.status_code == 200
    assert group_keys(response.json()) == expected


def test_errors_since_and_cursor(client: TestClient, catalogued: ObservabilityManager) -> None:
    body = client.get("/errors").json()
    cursor = body["cursor"]
    assert cursor == max(g["seq"] for g in body["groups"])
    assert client.get(f"/errors?cursor={cursor}").json()["groups"] == []
    record(catalogued, "trades", "slow", Stage.SOURCE, ErrorKind.TIMEOUT)
    changed = client.get(f"/errors?cursor={cursor}").json()
    assert group_keys(changed) == [("trades", "source", 2)]
    assert changed["cursor"] > cursor
    latest = changed["groups"][0]["last_seen"]
    assert group_keys(client.get(f"/errors?since={latest}").json()) == [("trades", "source", 2)]


def test_errors_with_a_bad_stage_is_a_problem(
    client: TestClient, catalogued: ObservabilityManager
) -> None:
    response = client.get("/errors?stage=parse")
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == 400
    assert problem["title"] == "Unknown stage"
    assert problem["type"] == "about:blank"
    assert "'parse'" in problem["detail"]
    for stage in Stage:
        assert stage.value in problem["detail"]


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "cursor=-1"])
def test_errors_with_a_bad_parameter_is_a_problem(client: TestClient, query: str) -> None:
    response = client.get(f"/errors?{query}")
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"] == PROBLEM


def test_errors_reports_evictions(make_manager: ManagerFactory, make_client: ClientFactory) -> None:
    manager = make_manager(catalog_size=2)
    for word in ["alpha", "beta", "gamma"]:
        record(manager, "j", f"no column {word}")
    body = make_client(manager).get("/errors").json()
    assert body["total_groups"] == 2
    assert body["evicted_groups"] == 1


# --- /errors/recent and /errors/report ----------------------------------------------------------


def test_recent_errors_newest_first(client: TestClient, manager: ObservabilityManager) -> None:
    for message in ["first", "second", "first"]:
        record(manager, "orders", message)
    body = client.get("/errors/recent").json()
    assert body["job"] is None
    assert body["total_errors"] == 3
    assert body["capacity"] == 10
    assert [(e["message"], e["count"]) for e in body["entries"]] == [
        ("[orders] second", 1),
        ("[orders] first", 2),
    ]
    assert body["entries"][0]["deployment_context"]["node_id"] == "node-1"


def test_recent_errors_of_one_job(client: TestClient, manager: ObservabilityManager) -> None:
    manager.set_deployment_context_for_job("orders", DeploymentContext(version="2.0"))
    record(manager, "orders", "bad")
    record(manager, "trades", "other")
    body = client.get("/errors/recent?job=orders").json()
    assert body["job"] == "orders"
    assert body["total_errors"] == 1
    assert [e["message"] for e in body["entries"]] == ["bad"]
    assert body["entries"][0]["deployment_context"]["version"] == "2.0"


def test_recent_errors_of_an_unknown_job_is_empty(client: TestClient) -> None:
    body = client.get("/errors/recent?job=nobody").json()
    assert body["entries"] == []
    assert body["total_errors"] == 0


def test_report_is_the_seed_text(client: TestClient, manager: ObservabilityManager) -> None:
    record(manager, "orders", "Connection timeout")
    record(manager, "orders", "Connection timeout")
    response = client.get("/errors/report")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    ctx = "node_id=node-1, node_name=Test Node, region=eu-west-1, version=9.9.9"
    assert response.text == (
        f"=== Error Report [{ctx}] ===\n"
        "Total Errors: 2\n"
        "Unique Errors: 1\n"
        "Buffered Messages: 1\n"
        "\n"
        "Recent Errors (most recent first):\n"
        "================================\n"
        f"1. [{ctx}] [orders] Connection timeout (count: 2)\n"
    )


def test_report_of_one_job(client: TestClient, manager: ObservabilityManager) -> None:
    manager.set_deployment_context_for_job("orders", DeploymentContext(node_id="n7", version="2"))
    record(manager, "orders", "bad")
    text = client.get("/errors/report?job=orders").text
    assert text.startswith("=== Error Report [node_id=n7, version=2] ===\n")
    assert text.endswith("1. [node_id=n7, version=2] bad (count: 1)\n")


def test_report_when_nothing_happened(client: TestClient) -> None:
    assert client.get("/errors/report").text == "No errors recorded"
    assert client.get("/errors/report?job=nobody").text == "No errors recorded"


@pytest.mark.parametrize("path", ["/metrics", "/errors", "/errors/recent", "/errors/report"])
def test_undecodable_text_in_a_message_does_not_break_the_api(
    make_manager: ManagerFactory, make_client: ClientFactory, path: str
) -> None:
    manager = make_manager(registry=CollectorRegistry())
    # What a file source gets for a line that is not UTF-8, decoded with surrogateescape;
    # on the second line, so that fingerprinting (first line only) is not what fails.
    line = b"1,caf\xe9,3.50".decode("utf-8", "surrogateescape")
    record(manager, "files", f"cannot parse line 7:\n{line}", Stage.DESERIALIZE, ErrorKind.PARSE)
    client = make_client(manager, raise_server_exceptions=False)
    assert client.get(path).status_code == 200


NAME = os.fsdecode(b"/data/tr\xffades.csv")  # a file whose name is not UTF-8
SHOWN = "/data/tr\\xffades.csv"


@pytest.mark.parametrize("path", ["/errors", "/errors/recent", "/errors/report", "/metrics"])
def test_a_file_name_that_is_not_utf8_is_shown_escaped(
    make_manager: ManagerFactory, make_client: ClientFactory, path: str
) -> None:
    manager = make_manager(registry=CollectorRegistry())
    fp = ErrorTracker.record_error(
        manager,
        "odd",
        f"cannot read {NAME}",
        stage=Stage.DESERIALIZE,
        kind=ErrorKind.IO,
        record_ref=f"{NAME}:7",
    )
    response = make_client(manager).get(path)
    assert response.status_code == 200
    # JSON and the exposition format write the escape's backslash doubled.
    assert f"cannot read {SHOWN}" in response.text.replace("\\\\", "\\")
    if path == "/errors":
        (group,) = response.json()["groups"]
        assert (group["fingerprint"], group["last_record_ref"]) == (fp, f"{SHOWN}:7")


def test_any_json_answer_escapes_what_it_cannot_encode(
    manager: ObservabilityManager, make_client: ClientFactory
) -> None:
    # Filed straight into the catalog, past the recorder's escaping: the response's
    # encoder is the last line, and a whole /errors must not fail for one name.
    metrics = manager.require_metrics()
    metrics.catalog.record("odd", Stage.SOURCE, ErrorKind.IO, f"gone: {NAME}", record_ref=NAME)
    response = make_client(manager).get("/errors")
    assert response.status_code == 200
    (group,) = response.json()["groups"]
    assert (group["message"], group["last_record_ref"]) == (f"gone: {SHOWN}", SHOWN)
