"""The HTTP app: /metrics, /health, /errors and friends (FastAPI).

Every JSON answer is rendered by `_SafeJSONResponse`: a name that is not UTF-8 (a
surrogate-escaped file name in an error's record reference, a job's failure reason)
is escaped by `observability.text.safe_text` instead of failing the whole response.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from velostream import __version__
from velostream.api.console import console_router
from velostream.api.guard import DEFAULT_MAX_BODY, RequestGuard
from velostream.api.jobs import jobs_router, problem, problem_responses
from velostream.errors import ApiProblem, AuthError, Stage
from velostream.observability.manager import ObservabilityManager
from velostream.observability.text import safe_json, safe_text
from velostream.server.stream_job_server import StreamJobServer

__all__ = ["create_app"]

_PROBLEM = "application/problem+json"
_CRITICAL = {"description": "A job has failed (the health document, status critical)"}
_NOT_READY = {"description": "Shutting down: not taking work"}


class _SafeJSONResponse(JSONResponse):
    """JSONResponse that escapes text it cannot encode (lone surrogates) instead of
    failing: Starlette's encoder raises UnicodeEncodeError on them, a 500 for the lot."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return super().render(safe_json(content))


def _problem(
    status: int, title: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return _SafeJSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type=_PROBLEM,
        headers=dict(headers) if headers else None,
    )


def create_app(
    observability: ObservabilityManager,
    server: StreamJobServer | None = None,
    *,
    token: str | None = None,
    on_shutdown: Callable[[], None] | None = None,
    hosts: frozenset[str] | None = None,
    max_body: int = DEFAULT_MAX_BODY,
) -> FastAPI:
    """Build the app around one server's observability manager (and its jobs).

    When the HTTP server starts, before it answers, `server` deploys again the
    applications kept in its data dir (`StreamJobServer.restore`). `on_shutdown` runs
    when the HTTP server stops (SIGTERM/SIGINT), before it exits.
    `hosts` are the Host names it answers to (`guard.allowed_hosts`; None: any, for an
    app embedded in a test); `max_body` bounds request bodies (413 beyond).
    """
    metrics = observability.require_metrics()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if server is not None:
            await asyncio.to_thread(server.restore)
        yield
        if on_shutdown is not None:
            await asyncio.to_thread(on_shutdown)

    app = FastAPI(
        title="Velostream",
        version=__version__,
        lifespan=lifespan,
        default_response_class=_SafeJSONResponse,
    )
    app.add_middleware(
        RequestGuard, hosts=hosts if hosts is not None else frozenset({"*"}), max_body=max_body
    )

    @app.exception_handler(ApiProblem)
    async def api_problem(request: Request, exc: ApiProblem) -> JSONResponse:
        return problem(exc.status, exc.title, safe_text(exc.detail), **safe_json(exc.extra))

    @app.exception_handler(AuthError)
    async def unauthorized(request: Request, exc: AuthError) -> JSONResponse:
        response = _problem(exc.status, exc.title, exc.detail)
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}"
            for err in exc.errors()
        )
        return _problem(422, "Invalid request", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Keep the exception's headers (e.g. `Allow` on a 405).
        return _problem(exc.status_code, str(exc.detail), str(exc.detail), exc.headers)

    # The observability endpoints are `async`: they run on the event loop, with no hand-off
    # to a worker thread, which under busy jobs means a wait for the GIL each way. They
    # only take short in-memory locks.
    @app.get("/metrics", response_class=Response, tags=["observability"])
    async def get_metrics(request: Request) -> Response:
        """Prometheus exposition (OpenMetrics when the scraper asks for it)."""
        body, content_type = metrics.exposition(request.headers.get("accept"))
        return Response(content=body, media_type=content_type)

    @app.get("/health", tags=["observability"], response_model=None, responses={503: _CRITICAL})
    async def health() -> dict[str, Any] | JSONResponse:
        """Liveness with the job summary; 503 when a job has failed (critical)."""
        jobs = server.summary() if server is not None else {}
        critical = jobs.get("failed", 0) > 0
        doc = {
            "status": "critical" if critical else "ok",
            "jobs": jobs,
            "version": __version__,
            "node": observability.node_context.as_dict(),
            "errors": {
                "total": metrics.get_total_errors(),
                "unique": metrics.get_unique_error_types(),
                "buffered": metrics.get_buffered_error_count(),
            },
        }
        return _SafeJSONResponse(doc, status_code=503) if critical else doc

    @app.get("/ready", tags=["observability"], response_model=None, responses={503: _NOT_READY})
    async def ready() -> dict[str, Any] | JSONResponse:
        """Ready to take work (503 while shutting down)."""
        if server is not None and not server.accepting:
            return _SafeJSONResponse({"ready": False}, status_code=503)
        return {"ready": True}

    @app.get("/errors", tags=["errors"], response_model=None, responses=problem_responses(400, 422))
    async def errors(
        job: str | None = None,
        stage: str | None = None,
        since: Annotated[float | None, Query(description="Unix time; groups seen since")] = None,
        cursor: Annotated[int | None, Query(ge=0, description="Only groups changed after")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> dict[str, Any] | JSONResponse:
        """Error groups, most recently seen first."""
        if stage is not None and stage not in {s.value for s in Stage}:
            valid = ", ".join(s.value for s in Stage)
            return _problem(400, "Unknown stage", f"stage {stage!r} is not one of: {valid}")
        groups = metrics.catalog.groups(
            job=job, stage=stage, since=since, after_seq=cursor, limit=limit
        )
        return {
            "groups": [g.as_dict() for g in groups],
            "total_groups": len(metrics.catalog),
            "evicted_groups": metrics.catalog.evictions,
            "cursor": max((g.seq for g in groups), default=cursor or 0),
        }

    @app.get("/errors/recent", tags=["errors"], responses=problem_responses(422))
    async def errors_recent(job: str | None = None) -> dict[str, Any]:
        """The rolling buffer, newest first (the server's, or one job's)."""
        buffer = metrics.buffer if job is None else metrics.job_buffer(job)
        if buffer is None:
            return {"job": job, "total_errors": 0, "entries": []}
        entries = buffer.get_messages()
        return {
            "job": job,
            "total_errors": buffer.total_errors,
            "capacity": buffer.capacity,
            "entries": [e.as_dict() for e in reversed(entries)],
        }

    @app.get(
        "/errors/report",
        response_class=PlainTextResponse,
        tags=["errors"],
        responses=problem_responses(422),
    )
    async def errors_report(job: str | None = None) -> str:
        """The seed's text report."""
        buffer = metrics.buffer if job is None else metrics.job_buffer(job)
        return safe_text(buffer.format_for_report()) if buffer is not None else "No errors recorded"

    app.include_router(console_router(observability, server))
    if server is not None:
        app.include_router(jobs_router(server, token))
    _document_problems(app)
    return app


def _document_problems(app: FastAPI) -> None:
    """Make the served OpenAPI say what `invalid_request` answers: every operation's 422
    is a problem document, whichever router the operation comes from."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()  # caches itself in app.openapi_schema
            invalid = problem_responses(422)[422]
            for path_item in schema.get("paths", {}).values():
                for operation in path_item.values():
                    responses = (
                        operation.get("responses", {}) if isinstance(operation, dict) else {}
                    )
                    if "422" in responses:
                        responses["422"] = invalid
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]
