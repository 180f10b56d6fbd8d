"""Job routes: deploy, list, inspect, control, dead letters; and bearer-token auth."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from velostream.errors import (
    ConfigurationError,
    JobStateError,
    ResourceExhaustedError,
    SqlValidationError,
    VelostreamError,
)
from velostream.server.processors.dlq import DeadLetter
from velostream.server.stream_job_server import StreamJobServer

__all__ = ["AuthError", "DeployRequest", "jobs_router", "problem"]

PROBLEM = "application/problem+json"


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem document."""
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra},
        status_code=status,
        media_type=PROBLEM,
    )


class DeployRequest(BaseModel):
    sql: str = Field(..., description="the SQL application text", min_length=1)


class ReplayRequest(BaseModel):
    ids: list[str] | None = Field(None, description="dead letters to replay; all if omitted")


class AuthError(Exception):
    pass


def require_token(token: str | None) -> Any:
    """A dependency: with a token configured, a mutating call needs `Bearer <token>`."""

    def check(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), token):
            raise AuthError()

    return check


def _error(exc: Exception, name: str | None = None) -> JSONResponse:
    if isinstance(exc, KeyError):
        return problem(404, "Job not found", f"no job named {name!r}")
    if isinstance(exc, SqlValidationError):
        return problem(400, "Invalid application", str(exc), problems=exc.problems)
    if isinstance(exc, JobStateError):
        return problem(409, "Illegal state transition", str(exc))
    if isinstance(exc, ResourceExhaustedError):
        return problem(409, "Limit reached", str(exc))
    if isinstance(exc, ConfigurationError):
        return problem(400, "Invalid configuration", str(exc))
    if isinstance(exc, VelostreamError):
        return problem(400, type(exc).__name__, str(exc))
    raise exc


def jobs_router(server: StreamJobServer, token: str | None) -> APIRouter:
    router = APIRouter(tags=["jobs"])
    mutate = [Depends(require_token(token))]

    @router.get("/jobs")
    def list_jobs() -> dict[str, Any]:
        """Every deployed job with its state and counts."""
        return {"jobs": server.list_jobs(), "max_jobs": server.max_jobs}

    @router.post("/jobs", status_code=201, dependencies=mutate, response_model=None)
    def deploy(body: DeployRequest) -> dict[str, Any] | JSONResponse:
        """Deploy an application (all of its jobs or none)."""
        try:
            names = server.deploy(body.sql)
        except Exception as exc:
            return _error(exc)
        return {"jobs": names}

    @router.get("/jobs/{name}", response_model=None)
    def get_job(name: str) -> dict[str, Any] | JSONResponse:
        try:
            return server.get_job_status(name)
        except Exception as exc:
            return _error(exc, name)

    @router.delete("/jobs/{name}", dependencies=mutate, response_model=None)
    def undeploy(name: str) -> dict[str, Any] | JSONResponse:
        """Stop the job and remove it."""
        try:
            server.undeploy(name)
        except Exception as exc:
            return _error(exc, name)
        return {"job": name, "undeployed": True}

    def control(action: str) -> Any:
        def handler(name: str) -> dict[str, Any] | JSONResponse:
            try:
                getattr(server, action)(name)
                return server.get_job_status(name)
            except Exception as exc:
                return _error(exc, name)

        handler.__name__ = f"{action}_job"
        handler.__doc__ = f"{action.capitalize()} a job."
        return handler

    for action in ("pause", "resume", "restart"):
        router.add_api_route(
            f"/jobs/{{name}}/{action}",
            control(action),
            methods=["POST"],
            dependencies=mutate,
            response_model=None,
        )

    @router.get("/jobs/{name}/dlq", response_model=None)
    def dead_letters(
        name: str,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        fingerprint: str | None = None,
    ) -> dict[str, Any] | JSONResponse:
        """A page of the job's dead letters, oldest first."""
        try:
            processor = server.job(name).processor
        except Exception as exc:
            return _error(exc, name)
        if processor is None or processor.dlq is None:
            return {"job": name, "letters": [], "next_offset": None}
        letters, nxt = processor.dlq.read(offset, limit)
        docs = [
            d.doc for d in letters if fingerprint is None or d.doc.get("fingerprint") == fingerprint
        ]
        return {"job": name, "letters": docs, "next_offset": nxt}

    @router.post("/jobs/{name}/dlq/replay", dependencies=mutate, response_model=None)
    def replay(name: str, body: ReplayRequest | None = None) -> dict[str, Any] | JSONResponse:
        """Send dead letters (not yet replayed) through the job again."""
        try:
            handle = server.job(name)
        except Exception as exc:
            return _error(exc, name)
        processor = handle.processor
        if processor is None or processor.dlq is None:
            return problem(409, "No dead letters", f"job {name!r} has no dead-letter queue")
        wanted = set(body.ids) if body is not None and body.ids else None
        letters: list[DeadLetter] = []
        offset = 0
        while True:
            page, nxt = processor.dlq.read(offset, 1000)
            letters.extend(
                d for d in page if not d.doc.get("replayed") and (wanted is None or d.id in wanted)
            )
            if nxt is None:
                break
            offset = nxt
        try:
            produced = processor.replay(letters)
        except Exception as exc:
            return _error(exc, name)
        return {"job": name, "replayed": len(letters), "rows_out": produced}

    return router
