"""Bearer-token auth: with VELO_API_TOKEN, every mutating call and every read of raw
data (job SQL, dead-letter payloads) needs it (401 problem+json otherwise); the other
reads stay open; without a token nothing is asked."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.jobserver import TOKEN, Harness, app_sql

PROBLEM = "application/problem+json"
ROWS = json.dumps([{"id": i} for i in range(3)])
SQL = app_sql("out", source={"type": "memory_source", "rows": ROWS, "bounded": "false"})

MUTATING = [
    ("POST", "/jobs", {"sql": SQL}),
    ("DELETE", "/jobs/out", None),
    ("POST", "/jobs/out/pause", None),
    ("POST", "/jobs/out/resume", None),
    ("POST", "/jobs/out/restart", None),
    ("POST", "/jobs/out/stop", None),
    ("POST", "/jobs/out/dlq/replay", None),
    ("DELETE", "/jobs/no-such-job", None),  # auth is checked before the job is looked up
    # reads of raw data: the jobs' SQL text, dead-letter payloads
    ("GET", "/jobs", None),
    ("GET", "/jobs/out", None),
    ("GET", "/jobs/out/dlq", None),
    ("GET", "/jobs/no-such-job/dlq", None),
]
READS = [
    "/errors",
    "/errors/recent",
    "/errors/report",
    "/health",
    "/ready",
    "/metrics",
    "/openapi.json",
]


@pytest.fixture
def secured(harness: Harness) -> Harness:
    harness.token = TOKEN
    harness.deploy(SQL)
    harness.wait_state("out", "running")
    return harness


def call(
    h: Harness, method: str, path: str, body: object, headers: dict[str, str] | None = None
) -> httpx.Response:
    # Latin-1 bytes: what a client may put on the wire, non-ASCII included.
    raw = {k: v.encode("latin-1") for k, v in (headers or {}).items()}
    return h.client.request(method, path, json=body, headers=raw)


@pytest.mark.parametrize(("method", "path", "body"), MUTATING)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer", "Bearer ÿé"],
    ids=["missing", "wrong", "not-bearer", "longer", "empty", "non-ascii"],
)
def test_a_guarded_call_without_the_right_token_is_refused(
    secured: Harness, method: str, path: str, body: object, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = call(secured, method, path, body, headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"] == "Bearer"
    doc = response.json()
    assert doc["status"] == 401 and doc["title"] == "Unauthorized"
    # Nothing happened.
    assert [j["name"] for j in secured.server.list_jobs()] == ["out"]
    assert secured.state("out") == "running"


@pytest.mark.parametrize("path", READS)
def test_reads_stay_open(secured: Harness, path: str) -> None:
    response = secured.client.get(path)
    assert response.status_code in (200, 503), response.text


def test_the_right_token_is_accepted(secured: Harness) -> None:
    h = secured
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert h.client.post("/jobs/out/pause", headers=auth).json()["state"] == "paused"
    assert h.client.post("/jobs/out/resume", headers=auth).json()["state"] == "running"
    lower = {"Authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive
    assert h.client.post("/jobs/out/stop", headers=lower).json()["state"] == "stopped"
    other = app_sql("other", source={"type": "memory_source", "rows": ROWS})
    assert h.client.post("/jobs", json={"sql": other}, headers=auth).status_code == 201
    assert h.client.delete("/jobs/out", headers=auth).status_code == 200


def test_the_openapi_declares_the_bearer_scheme_on_guarded_calls(secured: Harness) -> None:
    doc = secured.client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    raw_reads = {"/jobs", "/jobs/{name}", "/jobs/{name}/dlq"}
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            secured_op = bool(operation.get("security"))
            guarded = method in ("post", "delete") or (method == "get" and path in raw_reads)
            assert secured_op == guarded, (method, path)
            if secured_op:
                assert "401" in operation["responses"]


def test_without_a_token_nothing_is_asked(harness: Harness) -> None:
    h = harness
    response = h.client.post("/jobs", json={"sql": SQL})
    assert response.status_code == 201, response.text
    assert h.client.post("/jobs/out/stop").status_code == 200
    doc = h.client.get("/openapi.json").json()
    assert "securitySchemes" not in doc.get("components", {})
