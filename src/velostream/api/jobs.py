"""Job routes: deploy, list, inspect, control, dead letters; and bearer-token auth.

Every error is an RFC 9457 problem document (`application/problem+json`), raised as
`ApiProblem` and rendered by the app; each route documents the problems it answers
with, so the served OpenAPI describes every response.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from velostream.errors import (
    ApiProblem,
    AuthError,
    ConfigurationError,
    JobConflictError,
    JobStateError,
    ReplayError,
    ResourceExhaustedError,
    SinkConflictError,
    SqlValidationError,
    VelostreamError,
)
from velostream.server.stream_job_server import StreamJobServer

__all__ = [
    "PROBLEM",
    "DeployRequest",
    "Problem",
    "jobs_router",
    "problem",
    "problem_responses",
]

PROBLEM = "application/problem+json"


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    problems: list[str] | None = Field(None, description="every problem found (deploy)")


_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    422: "Invalid request",
    503: "Unavailable",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for problem documents with these statuses."""
    schema = Problem.model_json_schema()
    return {
        status: {
            "description": _TITLES.get(status, "Problem"),
            "content": {PROBLEM: {"schema": schema}},
        }
        for status in statuses
    }


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem document as a response."""
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra},
        status_code=status,
        media_type=PROBLEM,
    )


# --- request and response bodies -------------------------------------------------------


class DeployRequest(BaseModel):
    sql: str = Field(..., description="the SQL application text", min_length=1)
    base_dir: str | None = Field(
        None,
        description="the absolute folder the application's relative paths are taken from "
        "(its file's folder); it must lie under the server's roots (--allow-path). "
        "Default: the server's working directory",
        min_length=1,
    )


class ReplayRequest(BaseModel):
    ids: list[str] | None = Field(None, description="dead letters to replay; all if omitted")


class StateChangeModel(BaseModel):
    state: str
    at: float = Field(description="Unix time of the transition")
    reason: str | None


class PartitionedStateModel(BaseModel):
    """Where a job whose state is partitioned keeps it, on the node that answers."""

    node: str | None = Field(description="this server's NODE_ID")
    topic: str = Field(description="the input topic whose partitions the state follows")
    partitions: list[int] = Field(description="the input partitions whose state this node holds")
    restoring: list[int] = Field(description="partitions whose state is being restored now")
    changelog: str = Field(description="the changelog topic backing the state")


class JobInfo(BaseModel):
    name: str
    app: str
    version: str | None
    state: str = Field(description="starting, running, paused, completed, stopped or failed")
    reason: str | None = Field(description="why the job is in its state (e.g. why it failed)")
    state_since: float
    mode: str
    failure_strategy: str
    deployed_at: float
    source: str | None = Field(description="the first source (see `sources`)")
    sources: list[str] = Field(
        default_factory=list, description="every source the job reads (several: UNION ALL)"
    )
    per_source: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="a multi-source job's counts per source: records_in, records_out, "
        "records_failed, late_records, dead_letters (each source's in = out or filtered + "
        "failed + late)",
    )
    sinks: list[str]
    records_in: int
    records_out: int
    records_failed: int
    dead_letters: int
    late_records: int = Field(
        description="records after their window closed (dropped or dead-lettered); "
        "records_in = out or filtered + records_failed + late_records"
    )
    batches: int
    partitioned_state: PartitionedStateModel | None = Field(
        None, description="set when the job's state is partitioned ('state.partitioned')"
    )
    history: list[StateChangeModel]
    sql: str | None = Field(
        description="the application text; null when the server has a token and none was given"
    )


class JobList(BaseModel):
    jobs: list[JobInfo]
    max_jobs: int


class Deployed(BaseModel):
    jobs: list[str] = Field(description="the names of the jobs deployed")


class Undeployed(BaseModel):
    job: str
    undeployed: bool


class DeadLetterModel(BaseModel):
    """A dead letter: the original record and where and why it failed."""

    model_config = ConfigDict(extra="allow")

    id: str
    job: str
    app: str | None = None
    version: str | None = None
    stage: str
    kind: str
    message: str
    fingerprint: str | None = None
    source: str | None = None
    position: str | None = None
    timestamp: float
    node_id: str | None = None
    node_name: str | None = None
    region: str | None = None
    payload: str | None = Field(None, description="the original record, as text")
    payload_base64: str | None = Field(None, description="the original record, when not text")
    replayed: bool = False
    redacted: bool = Field(
        False, description="the payload is left out: the server has a token and none was given"
    )


class DeadLetterPage(BaseModel):
    job: str
    letters: list[DeadLetterModel]
    next_offset: int | None


class Replayed(BaseModel):
    job: str
    replayed: int = Field(description="dead letters sent through the job again")
    rows_out: int = Field(description="rows they produced")


# --- auth and errors -------------------------------------------------------------------------


# Module level: FastAPI resolves the (postponed) annotations below from module globals.
_BEARER = HTTPBearer(
    auto_error=False, scheme_name="bearer", description="the server's VELO_API_TOKEN"
)


def token_given(token: str | None) -> Any:
    """A dependency: True when the call may see raw data (no token set, or the right one).

    Without it, job SQL and dead-letter payloads are left out of what a read returns.
    The header is read directly, so these reads do not declare the bearer scheme in the
    OpenAPI: they answer without it, with less.
    """
    if token is None:

        def open_read() -> bool:
            return True

        return open_read

    def given(request: Request) -> bool:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and _matches(credentials, token)

    return given


def _matches(credentials: str, token: str) -> bool:
    """Whether bearer `credentials` are `token`, in constant time."""
    # Bytes: compare_digest raises TypeError on str with non-ASCII characters.
    offered = credentials.strip().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(offered, token.encode("utf-8"))


def _redact_letter(doc: dict[str, Any]) -> dict[str, Any]:
    redacted = {k: v for k, v in doc.items() if k not in ("payload", "payload_base64")}
    redacted["redacted"] = True
    return redacted


def require_token(token: str | None) -> Any:
    """A dependency: with a token configured, the call needs `Bearer <token>`.

    Mutating calls and reads of raw data (SQL text, dead-letter payloads) depend on it.
    The token is declared as an HTTP bearer security scheme in the OpenAPI, on those
    operations only; without a token, nothing is declared or checked.
    """
    if token is None:

        def open_call() -> None:
            return None

        return open_call

    def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> None:
        if credentials is None or not _matches(credentials.credentials, token):
            raise AuthError()

    return check


def _problem_of(exc: Exception, name: str | None = None) -> ApiProblem:
    """The problem document for an exception of the job server."""
    if isinstance(exc, KeyError):
        return ApiProblem(404, "Job not found", f"no job named {name!r}")
    if isinstance(exc, SqlValidationError):
        return ApiProblem(400, "Invalid application", str(exc), problems=exc.problems)
    if isinstance(exc, SinkConflictError):
        return ApiProblem(
            409, "Sink already written", str(exc), conflicts_with=exc.other_job, target=exc.target
        )
    if isinstance(exc, JobConflictError):
        return ApiProblem(409, "Job already deployed", str(exc))
    if isinstance(exc, JobStateError):
        return ApiProblem(409, "Illegal state transition", str(exc))
    if isinstance(exc, ResourceExhaustedError):
        return ApiProblem(409, "Limit reached", str(exc))
    if isinstance(exc, ConfigurationError):
        return ApiProblem(400, "Invalid configuration", str(exc))
    if isinstance(exc, ReplayError):
        return ApiProblem(
            422,
            "Dead letters still fail",
            str(exc),
            failures=[
                {"ref": f.ref, "message": f.message, "kind": str(f.kind)} for f in exc.failures
            ],
        )
    if isinstance(exc, VelostreamError):
        return ApiProblem(400, type(exc).__name__, str(exc))
    raise exc


def jobs_router(server: StreamJobServer, token: str | None) -> APIRouter:
    router = APIRouter(tags=["jobs"])
    mutate = [Depends(require_token(token))]
    # Raw data (the jobs' SQL, dead-letter payloads) needs the token like a mutation;
    # a read without it gets everything else.
    # A default, not an Annotated alias: a local alias is not visible to FastAPI's
    # resolution of the (postponed) annotations.
    raw_ok_dependency = Depends(token_given(token))
    auth = (401,) if token is not None else ()

    @router.get("/jobs", response_model=JobList)
    def list_jobs(raw_ok: bool = raw_ok_dependency) -> dict[str, Any]:
        """Every deployed job with its state, history and counts (`sql`: see JobInfo)."""
        jobs = server.list_jobs()
        if not raw_ok:
            jobs = [{**job, "sql": None} for job in jobs]
        return {"jobs": jobs, "max_jobs": server.max_jobs}

    @router.post(
        "/jobs",
        status_code=201,
        dependencies=mutate,
        response_model=Deployed,
        responses=problem_responses(400, 409, 422, 503, *auth),
    )
    def deploy(body: DeployRequest) -> dict[str, Any]:
        """Deploy an application (all of its jobs or none).

        A job that exists is upgraded in place when its `@version` differs (it resumes
        from its committed position), and refused (409) when it is the same. A job that
        would write a file or Kafka topic another deployed job writes (or another
        statement of the application) is refused (409, naming `conflicts_with` and
        `target`). The application is kept in the data dir: a restarted server deploys
        it again.

        Relative paths in the application (`path`, `dlq.path`, `config_file`) are taken
        from `base_dir` when it is sent, else from the server's working directory; a
        `base_dir` that is not an absolute folder under the server's roots is refused (400).
        """
        if not server.accepting:
            raise ApiProblem(503, "Shutting down", "the server is not accepting jobs")
        try:
            base = None if body.base_dir is None else server.client_folder(body.base_dir)
            names = server.deploy(body.sql, base_dir=base)
        except Exception as exc:
            raise _problem_of(exc) from exc
        return {"jobs": names}

    @router.get("/jobs/{name}", response_model=JobInfo, responses=problem_responses(404, 422))
    def get_job(name: str, raw_ok: bool = raw_ok_dependency) -> dict[str, Any]:
        """One job: its state, the history of its transitions, and its counts."""
        try:
            job = server.get_job_status(name)
        except Exception as exc:
            raise _problem_of(exc, name) from exc
        return job if raw_ok else {**job, "sql": None}

    @router.delete(
        "/jobs/{name}",
        dependencies=mutate,
        response_model=Undeployed,
        responses=problem_responses(404, 422, *auth),
    )
    def undeploy(name: str) -> dict[str, Any]:
        """Stop the job and remove it, also from what a restarted server deploys again
        (its checkpoint and dead letters stay on disk)."""
        try:
            server.undeploy(name)
        except Exception as exc:
            raise _problem_of(exc, name) from exc
        return {"job": name, "undeployed": True}

    def control(action: str) -> Any:
        def handler(name: str) -> dict[str, Any]:
            try:
                getattr(server, action)(name)
                return server.get_job_status(name)
            except Exception as exc:
                raise _problem_of(exc, name) from exc

        handler.__name__ = f"{action}_job"
        handler.__doc__ = f"{action.capitalize()} a job; answers with its new status."
        return handler

    for action in ("pause", "resume", "restart", "stop"):
        router.add_api_route(
            f"/jobs/{{name}}/{action}",
            control(action),
            methods=["POST"],
            dependencies=mutate,
            response_model=JobInfo,
            responses=problem_responses(404, 409, 422, *auth),
        )

    @router.get(
        "/jobs/{name}/dlq", response_model=DeadLetterPage, responses=problem_responses(404, 422)
    )
    def dead_letters(
        name: str,
        raw_ok: bool = raw_ok_dependency,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        fingerprint: str | None = None,
    ) -> dict[str, Any]:
        """A page of the job's dead letters, oldest first, each marked `replayed` or not."""
        try:
            letters, nxt = server.dead_letters(name, offset, limit)
        except Exception as exc:
            raise _problem_of(exc, name) from exc
        docs = [
            d.doc for d in letters if fingerprint is None or d.doc.get("fingerprint") == fingerprint
        ]
        if not raw_ok:
            docs = [_redact_letter(doc) for doc in docs]
        return {"job": name, "letters": docs, "next_offset": nxt}

    @router.post(
        "/jobs/{name}/dlq/replay",
        dependencies=mutate,
        response_model=Replayed,
        responses=problem_responses(400, 404, 409, 422, *auth),
    )
    def replay(name: str, body: ReplayRequest | None = None) -> dict[str, Any]:
        """Send dead letters not yet replayed (all, or `ids`) through the job again.

        Their rows land in the job's sinks and they are marked replayed, so a second
        replay sends nothing twice. If any still fails, none is replayed (422).
        """
        try:
            return server.replay_dead_letters(name, body.ids if body is not None else None)
        except Exception as exc:
            raise _problem_of(exc, name) from exc

    return router
