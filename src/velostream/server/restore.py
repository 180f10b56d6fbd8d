"""The server's side of its kept deployments: record each deploy, follow the operator's
intent for each job, and deploy them all again when the server starts.

What is kept, and where, is `deployments.py`. A failure to keep something is never
silent: a deploy that cannot be recorded is refused (it would not survive a restart),
an intent that cannot be recorded is a `deploy` error, and an application that can no
longer be deployed at start is a `deploy` error naming its jobs and why, while the
server and the other applications go on.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from velostream.errors import ConfigurationError, SqlValidationError, Stage, VelostreamError
from velostream.observability.manager import ObservabilityManager
from velostream.server.deployments import (
    Deployment,
    DeploymentStore,
    Intent,
    JobRecord,
    jobs_to_restore,
    restore_variables,
)
from velostream.server.processors.error_tracking_helper import ErrorTracker
from velostream.sql.model import Application

if TYPE_CHECKING:
    from velostream.server.stream_job_server import StreamJobServer

__all__ = ["DeploymentKeeper"]

_log = logging.getLogger("velostream.server")


class DeploymentKeeper:
    """Keeps a server's deployments in `store`; with None (`velo-sql run`), keeps none."""

    def __init__(
        self, store: DeploymentStore | None, observability: ObservabilityManager, deploy_job: str
    ) -> None:
        self.store = store
        self.observability = observability
        self.deploy_job = deploy_job  # the `job` of errors that concern no deployed job
        self._restored = False

    def record(self, app: Application, sql: str, origin: Deployment | None) -> dict[str, Intent]:
        """Keep `app`'s jobs as deployed from `origin` (default: the API, here and now);
        return how each is to start. Raises ResourceExhaustedError when it cannot be
        written.

        A job is intended to run, unless the same version was kept before as paused or
        stopped: `deploy-app` deploying its file again at start must not undo what the
        operator asked (an API deploy of a kept job is refused before it comes here).
        """
        if self.store is None:
            return {}
        here = str(Path.cwd())
        deployment = origin or Deployment(app.name, sql, "<api>", here, here)
        deployment.jobs = {job.name: self._kept(job.name, job.version) for job in app.jobs}
        self.store.record(deployment)
        return {name: record.intent for name, record in deployment.jobs.items()}

    def _kept(self, job: str, version: str | None) -> JobRecord:
        kept = self.store.find(job) if self.store is not None else None
        record = kept.jobs.get(job) if kept is not None else None
        if record is not None and record.version == version:
            return JobRecord(version, record.intent)
        return JobRecord(version)

    def intend(self, job: str, intent: Intent) -> None:
        """Keep what the operator asked of `job`; a failure to is recorded, and the
        request it follows stands."""
        if self.store is None:
            return
        try:
            self.store.set_intent(job, intent)
        except VelostreamError as exc:
            message = f"job {job!r} is {intent}, but a restarted server would not know: {exc}"
            ErrorTracker.record_error(self.observability, job, message, stage=Stage.DEPLOY, exc=exc)

    def forget(self, job: str) -> bool:
        """Drop `job` from what a restart deploys; False when it was not kept."""
        return self.store is not None and self.store.forget(job)

    def restore(self, server: StreamJobServer) -> list[str]:
        """Deploy again, once, every kept application's jobs not deployed yet; return
        their names. Each resumes from its checkpoint, as the operator left it."""
        if self.store is None or self._restored:
            return []
        self._restored = True
        deployments, problems = self.store.load()
        for problem in problems:
            self._report(problem, ConfigurationError(problem))
        names: list[str] = []
        for deployment in deployments:
            try:
                names.extend(self._restore(server, deployment))
            except Exception as exc:  # a bug here must not keep the server from starting
                self._report(f"application {deployment.app!r} was not deployed again: {exc}", exc)
        if names:
            _log.info("restored %d job(s) of %d deployment(s)", len(names), len(deployments))
        return names

    def _restore(self, server: StreamJobServer, deployment: Deployment) -> list[str]:
        deployed = {job["name"] for job in server.list_jobs()}
        if not set(deployment.jobs) - deployed:
            return []  # deployed already (`deploy-app` deploys its file first)
        label = f"application {deployment.app!r} (job(s) {', '.join(deployment.jobs)})"
        try:
            app = server.validate(
                deployment.sql,
                source_name=deployment.source_name,
                base_dir=Path(deployment.base_dir) if deployment.base_dir else None,
                variables=restore_variables(deployment, server.variables),
            )
            _check_earlier_paths(server, deployment, app)
            jobs = jobs_to_restore(app, deployment, deployed)
        except VelostreamError as exc:
            detail = "; ".join(exc.problems) if isinstance(exc, SqlValidationError) else str(exc)
            self._report(f"{label} cannot be deployed again at start: {detail}", exc)
            return []
        intents = {name: record.intent for name, record in deployment.jobs.items()}
        try:
            names = server.deploy_application(
                dataclasses.replace(app, jobs=jobs), deployment.sql, intents=intents
            )
        except VelostreamError as exc:  # recorded by the deploy, as a refusal
            _log.error("%s cannot be deployed again at start: %s", label, exc)
            return []
        states, failed = _states(server, names)
        _log.log(
            logging.WARNING if failed else logging.INFO,
            "%s deployed again from %s: %s",
            f"application {deployment.app!r}",
            deployment.source_name,
            ", ".join(states),
        )
        return names

    def _report(self, message: str, exc: Exception) -> None:
        hint = " (fix it and restart the server, or undeploy its jobs to forget them)"
        ErrorTracker.record_error(
            self.observability, self.deploy_job, message + hint, stage=Stage.DEPLOY, exc=exc
        )


def _states(server: StreamJobServer, names: list[str]) -> tuple[list[str], bool]:
    """Each job's state as it stands now ("job 'a' running", a failure with its reason),
    and whether one failed: a job may fail at once, and "deployed again" must not hide it."""
    states, failed = [], False
    for name in names:
        try:
            doc = server.get_job_status(name)
        except KeyError:  # undeployed meanwhile
            continue
        if doc["state"] == "failed":
            failed = True
            states.append(f"job {name!r} failed ({doc['reason']})")
        else:
            states.append(f"job {name!r} {doc['state']}")
    return states, failed


def _check_earlier_paths(server: StreamJobServer, deployment: Deployment, app: Application) -> None:
    """ConfigurationError when a deployment kept by an earlier version, which took
    relative data paths from the server's working directory at the deploy rather than
    from the application's folder, would now name other files: restoring it would read
    and write elsewhere than it did."""
    earlier = deployment.working_dir
    if deployment.paths_from_base or not earlier or earlier == deployment.base_dir:
        return
    try:
        before = server.validate(
            deployment.sql,
            source_name=deployment.source_name,
            base_dir=Path(earlier),
            variables=restore_variables(deployment, server.variables),
        )
        moved = sorted(k for k, v in _file_paths(app).items() if _file_paths(before).get(k) != v)
    except VelostreamError:
        moved = ["(its paths cannot be read as before)"]
    if moved:
        raise ConfigurationError(
            f"application {deployment.app!r} was kept by an earlier version, which took its "
            f"relative paths from the server's working directory ({earlier}), not from its "
            f"folder ({deployment.base_dir}): {', '.join(moved)} would now name other files; "
            "deploy it again (relative paths are now the application's folder's), or use "
            "absolute paths"
        )


def _file_paths(app: Application) -> dict[str, str]:
    """Every `path` and `dlq.path` of `app`'s jobs, by where it is set."""
    found: dict[str, str] = {}
    for job in (*app.jobs, *app.tables):
        for connector in (*job.sources, *job.sinks):
            if "path" in connector.properties:
                found[f"{job.name}: {connector.name}.path"] = connector.properties["path"]
        if "dlq.path" in job.properties:
            found[f"{job.name}: dlq.path"] = job.properties["dlq.path"]
    return found
