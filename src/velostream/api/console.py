"""The web console: `GET /`, its static files, and the error-rate history it charts.

The page (`api/static/`: plain HTML, CSS and JavaScript, no build step, nothing loaded
from another origin) reads the same JSON API as `velo-cli`: `/jobs`, `/errors` with a
cursor so that each poll carries only the groups that changed, `/errors/recent`, and
`/jobs/{job}/dlq` for the dead letters of a selected group. It polls rather than
holding a server-sent-events stream open, so that no open connection can delay the
server's graceful shutdown.

The one thing the API does not keep is history, so this module samples every job's
error and input counters once a second while the app runs (`RateHistory`) and serves
the per-job rates of the last minutes at `GET /console/rates`.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from velostream.observability.manager import ObservabilityManager
from velostream.server.stream_job_server import StreamJobServer

__all__ = ["ErrorRates", "RateHistory", "console_router"]

SAMPLE_INTERVAL = 1.0
HISTORY_SECONDS = 900.0
RECORD_RATE_SECONDS = 10.0

_ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
# Everything from this origin only: no CDN, no inline script, no framing.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

Totals = Mapping[str, int]


class ErrorRates(BaseModel):
    """Errors per second per job, oldest bucket first, and records read per second."""

    end: float = Field(description="Unix time the last bucket ends")
    step: float = Field(description="seconds per bucket")
    points: int = Field(description="buckets per job")
    jobs: dict[str, list[float | None]] = Field(
        description="errors per second in each bucket; null where there is no data yet"
    )
    records_in_per_second: dict[str, float] = Field(description="over the last 10 seconds")


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float
    errors: Totals
    records_in: Totals


class RateHistory:
    """Per-job error and input totals sampled over time, turned into rates on demand.

    `read` returns (errors by job, records read by job), both running totals. A total
    that goes down (a job removed and deployed again) counts as no change, not as a
    negative rate. Thread-safe: the sampler and request handlers share it.
    """

    def __init__(
        self,
        read: Callable[[], tuple[Totals, Totals]],
        *,
        keep_seconds: float = HISTORY_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._read = read
        self._keep = keep_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._samples: list[_Sample] = []
        self._times: list[float] = []

    def __len__(self) -> int:
        return len(self._samples)

    def sample(self, *, min_interval: float = 0.0) -> None:
        """Read the totals now, unless the last sample is younger than `min_interval`."""
        now = self._clock()
        with self._lock:
            if self._times and now - self._times[-1] < min_interval:
                return
        errors, records = self._read()
        with self._lock:
            if self._times and now < self._times[-1]:
                return  # a clock step backwards; keep the series ordered
            self._samples.append(_Sample(now, dict(errors), dict(records)))
            self._times.append(now)
            # Keep one sample older than the window, so its first bucket has a base.
            cut = bisect.bisect_left(self._times, now - self._keep) - 1
            if cut > 0:
                del self._samples[:cut]
                del self._times[:cut]

    def _at(self, t: float) -> _Sample | None:
        """The latest sample taken at or before `t`."""
        i = bisect.bisect_right(self._times, t) - 1
        return self._samples[i] if i >= 0 else None

    def error_rates(self, window: float, step: float) -> dict[str, Any]:
        """Errors per second per job, in `window / step` buckets ending now.

        A bucket that ends before the first sample is `None` (no data); the bucket in
        which sampling began counts from the first sample.
        """
        now = self._clock()
        points = max(1, round(window / step))
        with self._lock:
            bases = [self._at(now - (points - i) * step) for i in range(points + 1)]
            jobs = sorted({job for s in self._samples for job in s.errors})
            first = self._samples[0] if self._samples else None
        for i in range(points):
            if bases[i] is None and bases[i + 1] is not None:
                bases[i] = first
        series: dict[str, list[float | None]] = {job: [] for job in jobs}
        for before, after in itertools.pairwise(bases):
            for job in jobs:
                if before is None or after is None:
                    series[job].append(None)
                    continue
                delta = after.errors.get(job, 0) - before.errors.get(job, 0)
                series[job].append(round(max(delta, 0) / step, 3))
        return {"end": now, "step": step, "points": points, "jobs": series}

    def record_rates(self, seconds: float = RECORD_RATE_SECONDS) -> dict[str, float]:
        """Records read per second per job over the last `seconds` (or what is known)."""
        with self._lock:
            if len(self._samples) < 2:
                return {}
            last = self._samples[-1]
            first = self._at(last.at - seconds) or self._samples[0]
        span = last.at - first.at
        if span <= 0:
            return {}
        return {
            job: round(max(total - first.records_in.get(job, 0), 0) / span, 3)
            for job, total in last.records_in.items()
        }


def _totals_reader(
    observability: ObservabilityManager, server: StreamJobServer | None
) -> Callable[[], tuple[Totals, Totals]]:
    metrics = observability.require_metrics()
    counts = metrics.error_counts

    def read() -> tuple[Totals, Totals]:
        with counts.lock:
            by_key = list(counts.by_job.items())
        errors: dict[str, int] = {}
        for (job, _stage, _kind), n in by_key:
            errors[job] = errors.get(job, 0) + n
        records: dict[str, int] = {}
        if server is not None:
            records = {j["name"]: int(j["records_in"]) for j in server.list_jobs()}
        return errors, records

    return read


def _asset(name: str) -> bytes:
    return resources.files("velostream.api").joinpath("static", name).read_bytes()


def console_router(
    observability: ObservabilityManager,
    server: StreamJobServer | None = None,
    *,
    history: RateHistory | None = None,
) -> APIRouter:
    """The console's routes; while the app runs, a task samples the rates each second."""
    rates = history if history is not None else RateHistory(_totals_reader(observability, server))

    @asynccontextmanager
    async def sampling(_: FastAPI) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(SAMPLE_INTERVAL)
                # In a thread: reading the jobs waits for the job server's lock.
                await asyncio.to_thread(rates.sample, min_interval=SAMPLE_INTERVAL / 2)

        await asyncio.to_thread(rates.sample)  # the baseline: errors from here on count
        task = asyncio.create_task(loop(), name="console-rate-sampler")
        try:
            yield
        finally:
            task.cancel()

    router = APIRouter(lifespan=sampling)

    @router.get("/", include_in_schema=False)
    def index() -> Response:
        headers = {**_HEADERS, "Content-Security-Policy": _CSP}
        return Response(_asset("index.html"), media_type="text/html", headers=headers)

    @router.get("/console/rates", tags=["errors"], response_model=ErrorRates)
    def error_rates(
        window: Annotated[float, Query(gt=0, le=HISTORY_SECONDS)] = 300.0,
        step: Annotated[float, Query(ge=1, le=300)] = 5.0,
    ) -> dict[str, Any]:
        """Errors per second per job over the last `window` seconds, and input rates."""
        # Sample here too, so the chart has data even where the sampler does not run.
        rates.sample(min_interval=SAMPLE_INTERVAL)
        doc = rates.error_rates(window, min(step, window))
        doc["records_in_per_second"] = rates.record_rates()
        return doc

    @router.get("/console/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        media_type = _ASSETS.get(name)
        if media_type is None:  # only the named files: no path ever reaches the disk
            raise HTTPException(404, "Not Found")
        return Response(_asset(name), media_type=media_type, headers=_HEADERS)

    return router
