"""The HTTP app: /metrics, /health, /errors and friends (FastAPI)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from velostream import __version__
from velostream.errors import Stage
from velostream.observability.manager import ObservabilityManager

__all__ = ["create_app"]

_PROBLEM = "application/problem+json"


def _problem(status: int, title: str, detail: str) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type=_PROBLEM,
    )


def create_app(observability: ObservabilityManager) -> FastAPI:
    """Build the app around one server's observability manager."""
    metrics = observability.require_metrics()
    app = FastAPI(title="Velostream", version=__version__)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}"
            for err in exc.errors()
        )
        return _problem(422, "Invalid request", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _problem(exc.status_code, str(exc.detail), str(exc.detail))

    @app.get("/metrics", response_class=Response, tags=["observability"])
    def get_metrics(request: Request) -> Response:
        """Prometheus exposition (OpenMetrics when the scraper asks for it)."""
        body, content_type = metrics.exposition(request.headers.get("accept"))
        return Response(content=body, media_type=content_type)

    @app.get("/health", tags=["observability"])
    def health() -> dict[str, Any]:
        """Liveness, with the error totals."""
        return {
            "status": "ok",
            "version": __version__,
            "node": observability.node_context.as_dict(),
            "errors": {
                "total": metrics.get_total_errors(),
                "unique": metrics.get_unique_error_types(),
                "buffered": metrics.get_buffered_error_count(),
            },
        }

    @app.get("/errors", tags=["errors"], response_model=None)
    def errors(
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

    @app.get("/errors/recent", tags=["errors"])
    def errors_recent(job: str | None = None) -> dict[str, Any]:
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

    @app.get("/errors/report", response_class=PlainTextResponse, tags=["errors"])
    def errors_report(job: str | None = None) -> str:
        """The seed's text report."""
        buffer = metrics.buffer if job is None else metrics.job_buffer(job)
        return buffer.format_for_report() if buffer is not None else "No errors recorded"

    return app
