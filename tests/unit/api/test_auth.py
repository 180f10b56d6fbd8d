"""Bearer-token auth: with VELO_API_TOKEN, every mutating call needs it (401
problem+json otherwise); reads stay open but leave out raw data (job SQL, dead-letter
payloads) unless it is given; without a token nothing is asked."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.jobserver import TOKEN, Harness, app_sql, poison_lines, write_jsonl

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
]
READS = [
    "/jobs",
    "/jobs/out",
    "/jobs/out/dlq",
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
def test_a_mutating_call_without_the_right_token_is_refused(
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


def test_the_openapi_declares_the_bearer_scheme_on_mutating_calls(secured: Harness) -> None:
    doc = secured.client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            secured_op = bool(operation.get("security"))
            assert secured_op == (method in ("post", "delete")), (method, path)
            if secured_op:
                assert "401" in operation["responses"]


def test_without_a_token_nothing_is_asked(harness: Harness) -> None:
    h = harness
    response = h.client.post("/jobs", json={"sql": SQL})
    assert response.status_code == 201, response.text
    assert h.client.post("/jobs/out/stop").status_code == 200
    doc = h.client.get("/openapi.json").json()
    assert "securitySchemes" not in doc.get("components", {})


def test_raw_data_is_left_out_of_reads_without_the_token(harness: Harness, tmp_path: Path) -> None:
    h = harness
    h.token = TOKEN
    source = write_jsonl(tmp_path / "in.jsonl", poison_lines())
    sql = app_sql(
        "dl",
        select="SELECT id, CAST(v AS INTEGER) AS v FROM src",
        source={"type": "file_source", "path": str(source), "format": "json"},
        job={"failure_strategy": "SendToDLQ"},
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert h.client.post("/jobs", json={"sql": sql}, headers=auth).status_code == 201
    h.wait_state("dl", "completed")
    for headers, raw_shown in (
        ({}, False),
        ({"Authorization": "Bearer wrong"}, False),
        (auth, True),
    ):
        (listed,) = h.client.get("/jobs", headers=headers).json()["jobs"]
        one = h.client.get("/jobs/dl", headers=headers).json()
        letters = h.client.get("/jobs/dl/dlq", headers=headers).json()["letters"]
        assert len(letters) == 4
        if raw_shown:
            assert listed["sql"] == one["sql"]
            assert "CAST(v AS INTEGER)" in listed["sql"]
            assert all(d["payload"] and not d["redacted"] for d in letters)
        else:
            assert listed["sql"] is None and one["sql"] is None
            assert all("payload" not in d or d["payload"] is None for d in letters)
            assert all(d["redacted"] for d in letters)
            text = h.client.get("/jobs/dl/dlq", headers=headers).text
            assert '\\"v\\"' not in text and '{\\"id\\": 5' not in text  # no payload
        # the rest is there either way
        assert listed["state"] == "completed" and {d["stage"] for d in letters}
