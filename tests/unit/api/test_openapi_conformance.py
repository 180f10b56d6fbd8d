"""schemathesis against the served OpenAPI, in process over ASGI: for every operation,
with valid and with invalid inputs, no 5xx and every response conforms to the schema
(status code, content type, headers and body).

The operations are driven by their Hypothesis strategies inside one test, rather than
by `schemathesis.pytest.from_fixture`, whose pytest integration reads a private pytest
attribute (`Function._nodeid`) that pytest 9 no longer has.
"""

from __future__ import annotations

import json
import time
import warnings
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis import checks as st

from tests.jobserver import TOKEN, Harness, app_sql

CHECKS = [
    st.not_a_server_error,
    st.status_code_conformance,
    st.content_type_conformance,
    st.response_headers_conformance,
    st.response_schema_conformance,
    st.negative_data_rejection,
]
MAX_EXAMPLES = 15
# Every route the API serves; a new one must be added here (and so to the test).
EXPECTED = {
    "GET /metrics",
    "GET /health",
    "GET /ready",
    "GET /errors",
    "GET /errors/recent",
    "GET /errors/report",
    "GET /jobs",
    "POST /jobs",
    "GET /jobs/{name}",
    "DELETE /jobs/{name}",
    "POST /jobs/{name}/pause",
    "POST /jobs/{name}/resume",
    "POST /jobs/{name}/restart",
    "POST /jobs/{name}/stop",
    "GET /jobs/{name}/dlq",
    "POST /jobs/{name}/dlq/replay",
}


def _exercise(
    operation: Any,
    mode: GenerationMode,
    *,
    headers: dict[str, str] | None = None,
    checks: list[Any] = CHECKS,
    **fixed: Any,
) -> None:
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=checks)

    try:
        run()
    except Unsatisfiable:
        # No invalid input exists for an operation without parameters or body.
        if mode != GenerationMode.NEGATIVE:
            raise


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_every_operation_conforms_to_the_served_schema(harness: Harness) -> None:
    h = harness
    rows = json.dumps([{"id": i, "v": "x" if i % 2 else str(i)} for i in range(6)])
    job = {"failure_strategy": "SendToDLQ"}
    source = {"type": "memory_source", "rows": rows, "bounded": "false"}
    h.deploy(
        app_sql(
            "demo", select="SELECT id, CAST(v AS INTEGER) AS n FROM src", source=source, job=job
        )
    )
    h.wait_for(lambda: h.status("demo")["dead_letters"] == 3, what="dead letters")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        schema = schemathesis.openapi.from_asgi("/openapi.json", h.client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {f"{op.method.upper()} {op.path}" for op in operations}
    console = {label for label in labels if label not in EXPECTED}
    assert labels >= EXPECTED, EXPECTED - labels

    started = time.monotonic()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _exercise(operation, mode)
        if "{name}" in operation.path:  # once more on a job that exists
            _exercise(operation, GenerationMode.POSITIVE, path_parameters={"name": "demo"})
    assert time.monotonic() - started < 60, "keep schemathesis under a minute"
    assert console == set() or all(
        label.split()[1].startswith(("/", "/console")) for label in console
    )


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_with_a_token_every_operation_conforms_and_mutations_need_it(harness: Harness) -> None:
    h = harness
    h.token = TOKEN
    h.deploy(app_sql("demo", source={"type": "memory_source", "rows": '[{"id": 1}]'}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        schema = schemathesis.openapi.from_asgi("/openapi.json", h.client.app)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        # ignored_auth: the call is sent again without and with a wrong token, and must
        # then be refused on every operation that declares the bearer scheme.
        checks = [*CHECKS, st.ignored_auth]
        _exercise(operation, GenerationMode.POSITIVE, headers=auth, checks=checks)
        if "{name}" in operation.path:  # a job that exists: the calls succeed, then probe
            fixed = {"name": "demo"}
            _exercise(
                operation,
                GenerationMode.POSITIVE,
                headers=auth,
                checks=checks,
                path_parameters=fixed,
            )
    assert h.job_errors("demo", "job") == 0
    assert time.monotonic() - started < 30
