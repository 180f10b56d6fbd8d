"""`StreamJobServer`: deploy, stop, pause, resume, restart and list jobs.

It is the one job runtime: `velo-sql server`, `velo-sql deploy-app` and `velo-sql run`
(in-process, without checkpoints) all run their jobs here.

Deploying an application is all-or-nothing: every statement is parsed, planned and
its connectors created before any job starts. A job whose name exists is refused
unless the version differs, which upgrades it in place from the old job's committed
source position. Every state change is logged, metered (`velo_job_status`),
timestamped and kept in the job's history (an upgrade or a restart continues the
same history); a job that crashes goes to Failed with its reason recorded as a
`job`-stage error and never takes the server down.

Each job's state is checked and moved under its state machine's lock, so a request
(pause, stop) and the job's own thread (completed, failed) never race to a state the
machine refuses.

A server with checkpoints also keeps each deployed application in its data dir
(`deployments.py`) with the operator's intent for each job, and `restore` deploys them
again when it starts: each job resumes from its checkpoint, paused or stopped if the
operator had left it so. A deploy whose sinks another job writes is refused
(`sink_claims.py`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from velostream.datasource.validation import check_application
from velostream.dlq import DeadLetter, letters_to_replay
from velostream.errors import (
    BatchFailedError,
    JobConflictError,
    JobStateError,
    ResourceExhaustedError,
    SinkConflictError,
    Stage,
    VelostreamError,
)
from velostream.fsutil import PathRoots, client_folder
from velostream.observability.logging import bind_job, job_logger
from velostream.observability.manager import ObservabilityManager
from velostream.server.checkpoint import CheckpointStore
from velostream.server.connectors import Pipes, job_connectors
from velostream.server.deployments import Deployment, DeploymentStore, Intent, UsedVariables
from velostream.server.handle import JobHandle
from velostream.server.jobs import JobState, StateMachine
from velostream.server.processors.error_tracking_helper import ErrorTracker
from velostream.server.processors.limits import JobLimits
from velostream.server.processors.processor import JobProcessor
from velostream.server.restore import DeploymentKeeper
from velostream.server.sink_claims import check_sink_claims
from velostream.sql.model import Application, JobSpec

__all__ = ["DEFAULT_MAX_JOBS", "DEPLOY_JOB", "JobHandle", "StreamJobServer"]

DEFAULT_MAX_JOBS = 100
#: The `job` a refused deployment's error is filed under when no deployed job is
#: concerned (broken SQL, max_jobs, a new job's connector): one bounded series.
DEPLOY_JOB = "(deploy)"
_log = logging.getLogger("velostream.server")
# How long `wait_idle` waits on one job before it looks at them all again.
_IDLE_POLL_SECONDS = 0.25


class StreamJobServer:
    """Hosts many jobs in one process, each in its own thread."""

    def __init__(
        self,
        observability: ObservabilityManager,
        data_dir: Path,
        *,
        max_jobs: int = DEFAULT_MAX_JOBS,
        processing_slots: int | None = None,
        checkpoints: bool = True,
        variables: Mapping[str, str] | None = None,
        roots: PathRoots | None = None,
        limits: JobLimits | None = None,
    ) -> None:
        """`processing_slots`: how many jobs process a batch at the same time (default:
        the CPU count); the others wait with their batch read. Python runs one thread at
        a time, so more would only make every job, and the API, wait longer.

        `checkpoints=False` keeps no job state between runs: every job starts from its
        source's beginning (`velo-sql run`, a foreground run of a file), and no
        deployment is kept for `restore`.

        `variables` are all that `${VAR}` in deployed SQL resolves from (`--var`,
        `VELO_VAR_*`): never the server's own environment, which holds its secrets.
        `roots` confine every file a deployed job names (`--allow-path`; None: any).
        `limits` are the defaults of each job's `job.memory.limit`/`job.batch.timeout`
        (None: unbounded, as for `velo-sql run`)."""
        self.observability = observability
        self.metrics = observability.require_metrics()
        self.data_dir = data_dir
        self.max_jobs = max_jobs
        self.variables: dict[str, str] = dict(variables or {})
        self.roots = roots
        self.limits = limits or JobLimits()
        self.checkpoints = CheckpointStore(data_dir / "checkpoints") if checkpoints else None
        store = DeploymentStore(data_dir / "apps") if checkpoints else None
        self.deployments = DeploymentKeeper(store, observability, DEPLOY_JOB)
        self.processing_slots = max(1, processing_slots or os.cpu_count() or 2)
        self._slots = threading.BoundedSemaphore(self.processing_slots)
        self._pipes = Pipes()  # a statement reading an earlier one's file output
        self._jobs: dict[str, JobHandle] = {}
        self._lock = threading.RLock()
        self._accepting = True

    # --- deploy ---------------------------------------------------------------

    def validate(
        self,
        sql: str,
        *,
        source_name: str = "<api>",
        base_dir: Path | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> Application:
        """Parse and plan an application; raise SqlValidationError with every problem.

        `base_dir` is where relative paths are taken from (`path`, `dlq.path`,
        `config_file`; default: the server's working directory; `deploy-app` passes the
        application file's folder, the API the one its client sends). `variables`:
        what `${VAR}` resolves from (default: the operator's).
        """
        return check_application(
            sql,
            base_dir=Path.cwd() if base_dir is None else base_dir,
            source_name=source_name,
            env=self.variables if variables is None else variables,
            roots=self.roots,
        )

    def _refuse(self, job: str | None, exc: VelostreamError) -> VelostreamError:
        """Record a refused deployment as a `deploy` error; return `exc` to raise.

        The error is filed under `job` when that job is deployed (an upgrade), else
        under DEPLOY_JOB, so that requests cannot grow the `job` label without bound.
        """
        if exc.job is None and job is not None:
            exc.job = job  # which job the refusal concerns, for whoever reports it
        if job is not None and job in self._jobs:
            owner, message = job, f"deploy rejected: {exc}"
        else:
            owner = DEPLOY_JOB
            message = f"deploy of job {job!r} rejected: {exc}" if job else f"deploy rejected: {exc}"
        ErrorTracker.record_error(self.observability, owner, message, stage=Stage.DEPLOY, exc=exc)
        return exc

    def client_folder(self, folder: str) -> Path:
        """The folder a client sent for its application's relative paths, checked
        (`fsutil.client_folder`: absolute, under the roots); a refusal is recorded."""
        try:
            return client_folder(folder, self.roots)
        except VelostreamError as exc:
            raise self._refuse(None, exc) from None

    def deploy(
        self, sql: str, *, source_name: str = "<api>", base_dir: Path | None = None
    ) -> list[str]:
        """Deploy every job of an application, or none; return the job names."""
        if not self._accepting:
            raise ResourceExhaustedError("the server is shutting down; not accepting jobs")
        base = Path.cwd() if base_dir is None else base_dir
        used = UsedVariables(self.variables)
        try:
            app = self.validate(sql, source_name=source_name, base_dir=base, variables=used)
        except VelostreamError as exc:
            raise self._refuse(None, exc) from None
        origin = Deployment(
            app.name, sql, source_name, str(base.resolve()), str(Path.cwd()), used.used
        )
        return self.deploy_application(app, sql, origin=origin)

    def deploy_application(
        self,
        app: Application,
        sql: str = "",
        *,
        origin: Deployment | None = None,
        intents: Mapping[str, Intent] | None = None,
    ) -> list[str]:
        """Deploy an application already validated (`validate`), all or nothing.

        `sql` is its text, kept for `GET /jobs` and restarts. A server with checkpoints
        keeps the deployment (`origin`: where it came from) for `restore`, before any job
        starts; `intents` (a restore, which keeps nothing) say which jobs come back
        paused or stopped.
        """
        if not self._accepting:
            raise ResourceExhaustedError("the server is shutting down; not accepting jobs")
        with self._lock:
            upgrades: dict[str, JobHandle] = {}
            for job in app.jobs:
                existing = self._jobs.get(job.name)
                if existing is None:
                    continue
                if existing.spec.version == job.version:
                    conflict = JobConflictError(
                        f"job {job.name!r} version {job.version!r} is already deployed; "
                        "change @version to upgrade it, or undeploy it first",
                        job=job.name,
                    )
                    raise self._refuse(job.name, conflict)
                upgrades[job.name] = existing
            new_count = len(app.jobs) - len(upgrades)
            if len(self._jobs) + new_count > self.max_jobs:
                limit = ResourceExhaustedError(
                    f"deploying {new_count} job(s) would exceed max_jobs={self.max_jobs} "
                    f"({len(self._jobs)} deployed)"
                )
                raise self._refuse(None, limit)
            self._check_sinks(app)
            handles = [self._prepare(job, app, sql) for job in app.jobs]
            if intents is None:  # not a restore: keep it, or refuse it
                try:
                    intents = self.deployments.record(app, sql, origin)
                except ResourceExhaustedError as exc:
                    raise self._refuse(None, exc) from None
            for handle in handles:
                old = upgrades.get(handle.name)
                if old is not None:
                    self._upgrade(old, handle)
                self._jobs[handle.name] = handle
                self._launch(handle, (intents or {}).get(handle.name, Intent.RUNNING))
        return [h.name for h in handles]

    def _check_sinks(self, app: Application) -> None:
        """Refuse `app` if it writes a file or topic another job writes (an upgraded job
        replaces its own old version), or two of its statements write one."""
        try:
            deployed = [(h.app.name, h.spec) for h in self._jobs.values()]
            check_sink_claims(app, deployed, self.data_dir)
        except SinkConflictError as exc:
            raise self._refuse(exc.job, exc) from None

    def _launch(self, handle: JobHandle, intent: Intent) -> None:
        """Start the job, or (a restore) leave it as the operator had: paused or stopped."""
        if intent == Intent.STOPPED:
            self._set_context(handle.spec)
            self._transition(handle, JobState.STOPPED, "stopped before the server restarted")
            return
        if intent == Intent.PAUSED and handle.processor is not None:
            handle.processor.pause(timeout=0)  # parks before its first read
            handle.start_paused = "paused before the server restarted"
        self._start(handle)

    def _upgrade(self, old: JobHandle, new: JobHandle) -> None:
        """Stop `old` (its last commit is where `new` resumes) and continue its history."""
        change = f"version {old.spec.version} -> {new.spec.version}"
        job_logger(_log, old.name).info("upgrading job %r: %s", old.name, change)
        self._halt(old, JobState.STOPPED, f"upgrading: {change}")  # unless it had ended
        new.machine = old.machine
        with new.machine.lock:
            new.machine.move(JobState.STARTING, f"upgraded: {change}")

    def _prepare(self, job: JobSpec, app: Application, sql: str) -> JobHandle:
        """Create the job's connectors and processor (no I/O beyond opening)."""
        try:
            source, sinks, dlq = job_connectors(job, self.data_dir)
        except VelostreamError as exc:
            raise self._refuse(job.name, exc) from None
        processor = JobProcessor(
            job,
            source,
            sinks,
            self.observability,
            app_name=app.name,
            checkpoints=self.checkpoints,
            dlq=dlq,
            slots=self._slots,
            limits=self.limits,
        )
        self._pipes.wire(app, job, source, processor)
        return JobHandle(
            spec=job, app=app, sql=sql, machine=StateMachine(job.name), processor=processor
        )

    def _transition(self, handle: JobHandle, state: JobState, reason: str | None = None) -> None:
        with handle.machine.lock:
            handle.machine.move(state, reason)
            self.metrics.set_job_status(handle.name, state.value)
        level = logging.WARNING if state == JobState.FAILED else logging.INFO
        job_logger(_log, handle.name).log(
            level, "job %r -> %s%s", handle.name, state.value, f" ({reason})" if reason else ""
        )

    def _set_context(self, job: JobSpec) -> None:
        node = self.observability.node_context
        self.observability.set_deployment_context_for_job(
            job.name, dataclasses.replace(node, version=job.version or node.version)
        )

    def _start(self, handle: JobHandle) -> None:
        """Announce the handle's Starting state and run its processor in a thread."""
        job = handle.spec
        self._set_context(job)
        self.metrics.set_job_status(job.name, JobState.STARTING.value)
        reason = handle.machine.reason
        job_logger(_log, job.name).info(
            "job %r -> starting%s", job.name, f" ({reason})" if reason else ""
        )
        processor = handle.processor
        assert processor is not None

        def run() -> None:
            with bind_job(job.name):
                run_bound()

        def run_bound() -> None:
            try:
                with handle.machine.lock:
                    if handle.state.value != JobState.STARTING.value:
                        return  # stopped before it ran
                    self._transition(handle, JobState.RUNNING)
                    if handle.start_paused:
                        self._transition(handle, JobState.PAUSED, handle.start_paused)
                processor.run()
                with handle.machine.lock:
                    if handle.state.active and processor.stopped:
                        self._transition(handle, JobState.STOPPED, processor.stop_reason)
                    elif handle.state.active:
                        if handle.state == JobState.PAUSED:  # its source ended as it paused
                            self._transition(handle, JobState.RUNNING, "ended while pausing")
                        self._transition(handle, JobState.COMPLETED)
            except Exception as exc:
                self._crashed(handle, exc)

        handle.thread = threading.Thread(target=run, name=f"job-{job.name}", daemon=True)
        handle.thread.start()

    def _crashed(self, handle: JobHandle, exc: Exception) -> None:
        """A job's thread raised: record a `job` error and go to Failed with the reason."""
        reason = str(exc) or type(exc).__name__
        kind = exc.failed_kind if isinstance(exc, BatchFailedError) else None
        ErrorTracker.record_error(
            self.observability,
            handle.name,
            f"job failed: {reason}",
            stage=Stage.JOB,
            kind=kind,
            exc=exc,
        )
        with handle.machine.lock:
            if handle.machine.can(JobState.FAILED):
                self._transition(handle, JobState.FAILED, reason)

    # --- lifecycle ------------------------------------------------------------------

    def _get(self, name: str) -> JobHandle:
        handle = self._jobs.get(name)
        if handle is None:
            raise KeyError(name)
        return handle

    def _halt(self, handle: JobHandle, state: JobState, reason: str, timeout: float = 30.0) -> None:
        """Stop the job's loop after its batch in flight, wait for it, then move to `state`."""
        if handle.processor is not None:
            handle.processor.stop(reason)
        # Not under the machine's lock: the job's thread needs it to finish.
        if handle.thread is not None and handle.thread is not threading.current_thread():
            handle.thread.join(timeout)
            if handle.thread.is_alive():
                job_logger(_log, handle.name).warning(
                    "job %r did not stop within %.0fs", handle.name, timeout
                )
        with handle.machine.lock:
            if handle.state != state and handle.machine.can(state):
                self._transition(handle, state, reason)

    def stop(self, name: str, reason: str = "stopped by request") -> None:
        handle = self._get(name)
        if not handle.state.active:
            raise JobStateError(f"job {name!r} is {handle.state}, not running", job=name)
        self._halt(handle, JobState.STOPPED, reason)
        self.deployments.intend(name, Intent.STOPPED)

    def undeploy(self, name: str) -> None:
        """Stop the job if it runs and forget it (its checkpoint and DLQ stay on disk),
        here and in the deployments `restore` brings back (first: a crash meanwhile
        does not bring it back). A job kept there that `restore` could not deploy
        is forgotten there."""
        with self._lock:
            handle = self._jobs.get(name)
            forgotten = self.deployments.forget(name)
            if handle is None and not forgotten:
                raise KeyError(name)
            if handle is not None:
                if handle.state.active:
                    self._halt(handle, JobState.STOPPED, "undeployed")
                del self._jobs[name]
        if handle is not None:
            self.observability.remove_job(name)
        job_logger(_log, name).info("job %r undeployed", name)

    def pause(self, name: str) -> None:
        """Pause a running job: once this returns it reads nothing more until resumed.

        The job keeps its source position and its state (aggregates, windows).
        """
        handle = self._get(name)
        processor = handle.processor
        assert processor is not None
        with handle.machine.lock:
            if handle.state != JobState.RUNNING:
                raise JobStateError(
                    f"job {name!r} is {handle.state}; only a running job pauses", job=name
                )
            processor.pause()
            if processor.finished:
                processor.resume()
                raise JobStateError(f"job {name!r} ended before it could pause", job=name)
            self._transition(handle, JobState.PAUSED, "paused by request")
        self.deployments.intend(name, Intent.PAUSED)

    def resume(self, name: str) -> None:
        handle = self._get(name)
        processor = handle.processor
        assert processor is not None
        with handle.machine.lock:
            if handle.state != JobState.PAUSED:
                raise JobStateError(
                    f"job {name!r} is {handle.state}; only a paused job resumes", job=name
                )
            processor.resume()
            self._transition(handle, JobState.RUNNING, "resumed by request")
        self.deployments.intend(name, Intent.RUNNING)

    def restart(self, name: str) -> None:
        """Stop the job if it runs, then start it again from its committed position."""
        with self._lock:
            handle = self._get(name)
            if handle.state.active:
                self._halt(handle, JobState.STOPPED, "restarting")
            fresh = self._prepare(handle.spec, handle.app, handle.sql)
            fresh.machine = handle.machine
            fresh.deployed_at = handle.deployed_at
            with fresh.machine.lock:
                fresh.machine.move(JobState.STARTING, "restarted by request")
            self._jobs[name] = fresh
            self._start(fresh)
        self.deployments.intend(name, Intent.RUNNING)

    def list_jobs(self) -> list[dict[str, Any]]:
        with self._lock:
            handles = list(self._jobs.values())
        return [h.describe() for h in handles]

    def get_job_status(self, name: str) -> dict[str, Any]:
        return self._get(name).describe()

    def job(self, name: str) -> JobHandle:
        return self._get(name)

    def restore(self) -> list[str]:
        """Deploy again, once, the applications kept in the data dir; return the jobs.

        Each job resumes from its checkpoint, paused or stopped if the operator had left
        it so. An application that no longer deploys (its SQL no longer validates, a
        file root is gone, a sink is taken) is recorded as a `deploy` error and logged;
        the others, and the server, go on.
        """
        return self.deployments.restore(self)

    # --- dead letters ---------------------------------------------------------------

    def dead_letters(
        self, name: str, offset: int = 0, limit: int = 100
    ) -> tuple[list[DeadLetter], int | None]:
        """A page of the job's dead letters (each with `replayed`) and the next offset."""
        processor = self._get(name).processor
        if processor is None or processor.dlq is None:
            return [], None
        return processor.dlq.read(offset, limit)

    def replay_dead_letters(self, name: str, ids: list[str] | None = None) -> dict[str, Any]:
        """Send the job's dead letters not yet replayed (or those of `ids`) through it again.

        A running or paused job replays between two batches; a job that has ended
        replays through a fresh processor resumed from its checkpoint, so the rows land
        after its committed output. Replayed letters are marked and never replayed again.
        """
        with self._lock:  # no restart or upgrade while the sinks are being written
            handle = self._get(name)
            processor = handle.processor
            if processor is None or processor.dlq is None:
                raise JobStateError(f"job {name!r} has no dead-letter queue", job=name)
            letters = letters_to_replay(processor.dlq, ids)
            if not letters:
                return {"job": name, "replayed": 0, "rows_out": 0}
            if handle.state == JobState.STARTING:
                raise JobStateError(f"job {name!r} is starting; replay when it runs", job=name)
            rows: int | None = None
            if handle.state.active:
                try:
                    rows = processor.replay(letters)
                except JobStateError:
                    if not processor.closed:
                        raise  # not running yet
                    rows = None  # it ended meanwhile: replay as for an ended job
            if rows is None:
                fresh = self._prepare(handle.spec, handle.app, handle.sql)
                assert fresh.processor is not None
                rows = fresh.processor.replay_offline(letters)
            job_logger(_log, name).info(
                "job %r: replayed %d dead letters (%d rows out)", name, len(letters), rows
            )
            return {"job": name, "replayed": len(letters), "rows_out": rows}

    # --- server -----------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        return self._accepting

    def summary(self) -> dict[str, int]:
        """Jobs per state. Without the server lock (a deploy may hold it for long):
        copying the values of a dict is one step under the GIL."""
        counts: dict[str, int] = {s.value: 0 for s in JobState}
        for handle in tuple(self._jobs.values()):
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
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            # A job's thread moves it to its final state as its last act: joining it
            # returns the moment the job ends (a paused job's thread lives on: wait a bit).
            wait = _IDLE_POLL_SECONDS if left is None else min(left, _IDLE_POLL_SECONDS)
            thread = active[0].thread
            if thread is not None and thread.is_alive():
                thread.join(wait)
            else:
                time.sleep(min(wait, 0.005))

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
            if handle.name in forced:
                continue
            with handle.machine.lock:
                if handle.state.active:
                    self._transition(handle, JobState.STOPPED, "server shutdown")
        if forced:
            _log.error("shutdown deadline passed; abandoned jobs: %s", ", ".join(forced))
        return forced

    def _join(self, handle: JobHandle, ends_at: float, forced: list[str]) -> None:
        if handle.thread is not None:
            handle.thread.join(max(ends_at - time.monotonic(), 0))
            if handle.thread.is_alive():
                forced.append(handle.name)
