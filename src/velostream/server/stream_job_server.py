"""`StreamJobServer`: deploy, stop, pause, resume, restart and list jobs.

Deploying an application is all-or-nothing: every statement is parsed, planned and
its connectors created before any job starts. A job whose name exists is refused
unless the version differs, which upgrades it in place from the old job's committed
source position. Every state change is logged, metered (`velo_job_status`),
timestamped and kept in the job's history; a job that crashes goes to Failed with its
reason recorded as a `job`-stage error and never takes the server down.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from velostream.datasource.registry import create_sink, create_source
from velostream.errors import (
    ConfigurationError,
    JobStateError,
    ResourceExhaustedError,
    SqlValidationError,
    Stage,
    VelostreamError,
)
from velostream.observability.error_tracker import DeploymentContext
from velostream.observability.manager import ObservabilityManager
from velostream.server.checkpoint import CheckpointStore
from velostream.server.jobs import JobState, StateMachine
from velostream.server.processors.dlq import FileDeadLetterQueue
from velostream.server.processors.error_tracking_helper import ErrorTracker
from velostream.server.processors.processor import JobProcessor
from velostream.sql.model import Application, JobSpec
from velostream.sql.parser import parse_application
from velostream.sql.planner import PlanError, plan_job

__all__ = ["DEFAULT_MAX_JOBS", "JobHandle", "StreamJobServer"]

DEFAULT_MAX_JOBS = 100
_log = logging.getLogger("velostream.server")


@dataclass(slots=True)
class JobHandle:
    """A deployed job: its spec, state machine, processor and thread."""

    spec: JobSpec
    app: Application
    sql: str
    machine: StateMachine
    processor: JobProcessor | None = None
    thread: threading.Thread | None = None
    deployed_at: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def state(self) -> JobState:
        return self.machine.state

    def describe(self) -> dict[str, Any]:
        stats = self.processor.stats if self.processor is not None else None
        return {
            "name": self.name,
            "app": self.app.name,
            "version": self.spec.version,
            "state": self.state.value,
            "reason": self.machine.reason,
            "mode": self.spec.job_mode.value,
            "failure_strategy": self.spec.failure_strategy.value,
            "deployed_at": self.deployed_at,
            "source": self.spec.sources[0].name if self.spec.sources else None,
            "sinks": [s.name for s in self.spec.sinks],
            "records_in": stats.records_in if stats else 0,
            "records_out": stats.records_out if stats else 0,
            "records_failed": stats.records_failed if stats else 0,
            "dead_letters": stats.dead_letters if stats else 0,
            "batches": stats.batches if stats else 0,
            "history": [
                {"state": c.state.value, "at": c.at, "reason": c.reason}
                for c in self.machine.history
            ],
            "sql": self.spec.text,
        }


class StreamJobServer:
    """Hosts many jobs in one process, each in its own thread."""

    def __init__(
        self,
        observability: ObservabilityManager,
        data_dir: Path,
        *,
        max_jobs: int = DEFAULT_MAX_JOBS,
    ) -> None:
        self.observability = observability
        self.metrics = observability.require_metrics()
        self.data_dir = data_dir
        self.max_jobs = max_jobs
        self.checkpoints = CheckpointStore(data_dir / "checkpoints")
        self._jobs: dict[str, JobHandle] = {}
        self._lock = threading.RLock()
        self._accepting = True

    # --- deploy ---------------------------------------------------------------

    def validate(self, sql: str, *, source_name: str = "<api>") -> Application:
        """Parse and plan an application; raise SqlValidationError with every problem."""
        app = parse_application(sql, base_dir=Path.cwd(), source_name=source_name)
        problems = []
        for index, job in enumerate(app.jobs, start=1):
            try:
                plan_job(job)
            except PlanError as exc:
                problems.append(f"statement {index} ({job.name}) at {job.select_position}: {exc}")
        if problems:
            raise SqlValidationError(
                f"{source_name}: {len(problems)} problem(s) found", problems=problems
            )
        return app

    def deploy(self, sql: str, *, source_name: str = "<api>") -> list[str]:
        """Deploy every job of an application, or none; return the job names."""
        if not self._accepting:
            raise ResourceExhaustedError("the server is shutting down; not accepting jobs")
        try:
            app = self.validate(sql, source_name=source_name)
        except VelostreamError as exc:
            ErrorTracker.record_error(
                self.observability, "", f"deploy rejected: {exc}", stage=Stage.DEPLOY, exc=exc
            )
            raise
        with self._lock:
            upgrades: list[JobHandle] = []
            for job in app.jobs:
                existing = self._jobs.get(job.name)
                if existing is None:
                    continue
                if existing.spec.version == job.version:
                    raise ConfigurationError(
                        f"job {job.name!r} version {job.version!r} is already deployed; "
                        "change @version to upgrade it, or undeploy it first",
                        job=job.name,
                    )
                upgrades.append(existing)
            new_count = len([j for j in app.jobs if j.name not in self._jobs])
            if len(self._jobs) + new_count > self.max_jobs:
                raise ResourceExhaustedError(
                    f"deploying {new_count} job(s) would exceed max_jobs={self.max_jobs} "
                    f"({len(self._jobs)} deployed)"
                )
            handles = [self._prepare(job, app, sql) for job in app.jobs]
            for old in upgrades:
                _log.info("upgrading job %r from version %s", old.name, old.spec.version)
                self._halt(old, JobState.STOPPED, "upgraded")
            for handle in handles:
                self._jobs[handle.name] = handle
                self._start(handle)
        return [h.name for h in handles]

    def _prepare(self, job: JobSpec, app: Application, sql: str) -> JobHandle:
        """Create the job's connectors and processor (no I/O beyond opening)."""
        try:
            src = job.sources[0]
            source = create_source(src.name, src.type, src.properties)
            sinks = [create_sink(s.name, s.type, s.properties) for s in job.sinks]
        except VelostreamError as exc:
            ErrorTracker.record_error(
                self.observability, job.name, f"deploy failed: {exc}", stage=Stage.DEPLOY, exc=exc
            )
            raise
        dlq_path = Path(
            job.properties.get("dlq.path") or self.data_dir / "dlq" / f"{job.name}.jsonl"
        )
        processor = JobProcessor(
            job,
            source,
            sinks,
            self.observability,
            app_name=app.name,
            checkpoints=self.checkpoints,
            dlq=FileDeadLetterQueue(dlq_path),
        )
        return JobHandle(
            spec=job, app=app, sql=sql, machine=StateMachine(job.name), processor=processor
        )

    def _transition(self, handle: JobHandle, state: JobState, reason: str | None = None) -> None:
        handle.machine.move(state, reason)
        self.metrics.set_job_status(handle.name, state.value)
        log = _log.warning if state == JobState.FAILED else _log.info
        log("job %r -> %s%s", handle.name, state.value, f" ({reason})" if reason else "")

    def _start(self, handle: JobHandle) -> None:
        job = handle.spec
        self.observability.set_deployment_context_for_job(
            job.name, DeploymentContext.from_env(version=job.version)
        )
        self.metrics.set_job_status(job.name, JobState.STARTING.value)
        processor = handle.processor
        assert processor is not None

        def run() -> None:
            try:
                self._transition(handle, JobState.RUNNING)
                processor.run()
                if handle.state in (JobState.RUNNING, JobState.PAUSED):
                    if processor.stopped:
                        self._transition(handle, JobState.STOPPED, processor.stop_reason)
                    else:
                        self._transition(handle, JobState.COMPLETED)
            except Exception as exc:
                reason = str(exc) or type(exc).__name__
                ErrorTracker.record_error(
                    self.observability, job.name, f"job failed: {reason}", stage=Stage.JOB, exc=exc
                )
                if handle.machine.can(JobState.FAILED):
                    self._transition(handle, JobState.FAILED, reason)

        handle.thread = threading.Thread(target=run, name=f"job-{job.name}", daemon=True)
        handle.thread.start()

    # --- lifecycle ------------------------------------------------------------------

    def _get(self, name: str) -> JobHandle:
        handle = self._jobs.get(name)
        if handle is None:
            raise KeyError(name)
        return handle

    def _halt(self, handle: JobHandle, state: JobState, reason: str, timeout: float = 30.0) -> None:
        if handle.processor is not None:
            handle.processor.stop(reason)
        if handle.thread is not None and handle.thread is not threading.current_thread():
            handle.thread.join(timeout)
            if handle.thread.is_alive():
                _log.warning("job %r did not stop within %.0fs", handle.name, timeout)
        if handle.machine.can(state) and handle.state != state:
            self._transition(handle, state, reason)

    def stop(self, name: str, reason: str = "stopped by request") -> None:
        handle = self._get(name)
        if not handle.state.active:
            raise JobStateError(f"job {name!r} is {handle.state}, not running", job=name)
        self._halt(handle, JobState.STOPPED, reason)

    def undeploy(self, name: str) -> None:
        """Stop the job if it runs and forget it (its checkpoint and DLQ stay on disk)."""
        with self._lock:
            handle = self._get(name)
            if handle.state.active:
                self._halt(handle, JobState.STOPPED, "undeployed")
            del self._jobs[name]
        self.observability.remove_job(name)

    def pause(self, name: str) -> None:
        handle = self._get(name)
        if handle.state != JobState.RUNNING:
            raise JobStateError(f"job {name!r} is {handle.state}; only a running job pauses")
        assert handle.processor is not None
        handle.processor.pause()
        self._transition(handle, JobState.PAUSED)

    def resume(self, name: str) -> None:
        handle = self._get(name)
        if handle.state != JobState.PAUSED:
            raise JobStateError(f"job {name!r} is {handle.state}; only a paused job resumes")
        assert handle.processor is not None
        handle.processor.resume()
        self._transition(handle, JobState.RUNNING)

    def restart(self, name: str) -> None:
        """Stop the job if it runs, then start it again from its committed position."""
        with self._lock:
            handle = self._get(name)
            if handle.state.active:
                self._halt(handle, JobState.STOPPED, "restarting")
            fresh = self._prepare(handle.spec, handle.app, handle.sql)
            fresh.machine = handle.machine
            self._transition(fresh, JobState.STARTING, "restart")
            self._jobs[name] = fresh
            self._start(fresh)

    def list_jobs(self) -> list[dict[str, Any]]:
        with self._lock:
            handles = list(self._jobs.values())
        return [h.describe() for h in handles]

    def get_job_status(self, name: str) -> dict[str, Any]:
        return self._get(name).describe()

    def job(self, name: str) -> JobHandle:
        return self._get(name)

    @property
    def accepting(self) -> bool:
        return self._accepting

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {s.value: 0 for s in JobState}
        with self._lock:
            for handle in self._jobs.values():
                counts[handle.state.value] += 1
        return counts

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no job is active (bounded jobs done); True if all finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                active = [h for h in self._jobs.values() if h.state.active]
            if not active:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def shutdown(self, deadline: float = 30.0) -> list[str]:
        """Stop taking work, stop every job in parallel under one deadline.

        Each job finishes its batch with its final flush and commit. Returns the
        names of jobs that had to be abandoned at the deadline.
        """
        self._accepting = False
        with self._lock:
            active = [h for h in self._jobs.values() if h.state.active]
        if not active:
            return []
        ends_at = time.monotonic() + deadline
        for handle in active:
            if handle.processor is not None:
                handle.processor.stop("server shutdown")
        forced: list[str] = []
        with ThreadPoolExecutor(max_workers=min(len(active), 16)) as pool:
            for handle in active:
                pool.submit(self._join, handle, ends_at, forced)
        for handle in active:
            if handle.name not in forced and handle.state.active:
                self._transition(handle, JobState.STOPPED, "server shutdown")
        if forced:
            _log.error("shutdown deadline passed; abandoned jobs: %s", ", ".join(forced))
        return forced

    def _join(self, handle: JobHandle, ends_at: float, forced: list[str]) -> None:
        if handle.thread is not None:
            handle.thread.join(max(ends_at - time.monotonic(), 0))
            if handle.thread.is_alive():
                forced.append(handle.name)
