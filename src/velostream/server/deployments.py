"""The deployed applications a server keeps on disk, to deploy them again when it starts.

`<data_dir>/apps/<app>.json` holds what a deploy was given: the SQL text, its source
name, the folder its relative `config_file` paths resolve against, the working
directory its data paths are relative to, and the values of the operator's variables
its `${VAR}` used; and for each of its jobs still deployed, the version and the
operator's intent: `running`, `paused` or `stopped`. A job's runtime state (failed,
completed) is not an intent and is not kept: like a Kafka Connect worker, a restarted
server starts every job whose intent is `running` again, from its checkpoint.

A file is rewritten whole on each change: to a temp file, fsynced, renamed over the
old one and the directory fsynced, so a crash leaves the old or the new record, never
half of one. Files are readable by the server's user only: the variables may hold
credentials.

An application deployed in parts (a later deploy upgrades some of its jobs) keeps one
entry per deploy, each naming the jobs it still holds; a job deployed again leaves the
entry it was in, and an entry holding no job is dropped.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from velostream.errors import ConfigurationError, ResourceExhaustedError
from velostream.fsutil import fsync_directory
from velostream.sql.model import Application, JobSpec

__all__ = [
    "Deployment",
    "DeploymentStore",
    "Intent",
    "JobRecord",
    "UsedVariables",
    "jobs_to_restore",
    "restore_variables",
]

_FORMAT = 1
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


class Intent(StrEnum):
    """What the operator last asked of a job; a restarted server honours it."""

    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


@dataclass(slots=True)
class JobRecord:
    version: str | None
    intent: Intent = Intent.RUNNING


@dataclass(slots=True)
class Deployment:
    """One deploy of an application, as it is deployed again at start."""

    app: str
    sql: str
    source_name: str = "<api>"
    base_dir: str = ""
    """Where its relative paths (`path`, `dlq.path`, `config_file`) resolve (absolute)."""
    working_dir: str = ""
    """The server's working directory at the deploy (kept for the record: the relative
    paths of an application are taken from `base_dir`, wherever the server runs)."""
    variables: dict[str, str] = field(default_factory=dict)
    """The operator's variables the application used, with the values it was deployed with."""
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    deployed_at: float = field(default_factory=time.time)
    paths_from_base: bool = True
    """False for a record kept before relative data paths were taken from `base_dir`:
    they were then taken from `working_dir` (see `restore.DeploymentKeeper`)."""

    def as_doc(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "sql": self.sql,
            "source_name": self.source_name,
            "base_dir": self.base_dir,
            "working_dir": self.working_dir,
            "variables": self.variables,
            "deployed_at": self.deployed_at,
            "paths": "base_dir" if self.paths_from_base else "working_dir",
            "jobs": {
                name: {"version": job.version, "intent": job.intent.value}
                for name, job in self.jobs.items()
            },
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Deployment:
        jobs = {
            str(name): JobRecord(
                None if job.get("version") is None else str(job["version"]),
                Intent(job.get("intent", Intent.RUNNING.value)),
            )
            for name, job in dict(doc["jobs"]).items()
        }
        return cls(
            app=str(doc["app"]),
            sql=str(doc["sql"]),
            source_name=str(doc.get("source_name") or "<api>"),
            base_dir=str(doc.get("base_dir") or ""),
            working_dir=str(doc.get("working_dir") or ""),
            variables={str(k): str(v) for k, v in dict(doc.get("variables") or {}).items()},
            jobs=jobs,
            deployed_at=float(doc.get("deployed_at") or 0.0),
            paths_from_base=doc.get("paths") == "base_dir",
        )


class UsedVariables(Mapping[str, str]):
    """The operator's variables, remembering which of them a validation looked up.

    Only those are persisted with a deployment: the rest of the operator's variables are
    none of its business.
    """

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values
        self.used: dict[str, str] = {}

    def __getitem__(self, key: str) -> str:
        value = self._values[key]
        self.used[key] = value
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _file_name(app: str) -> str:
    """The record's file name: the app's name when it is a safe one, else a digest."""
    if _SAFE_NAME.fullmatch(app):
        return f"{app}.json"
    digest = hashlib.sha256(app.encode("utf-8")).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", app)[:40]
    return f"{readable}-{digest}.json"


class DeploymentStore:
    """The persisted deployments of one server, under `<data_dir>/apps/`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._apps: dict[str, list[Deployment]] | None = None
        self._problems: list[str] = []
        self._lock = threading.RLock()

    # --- reading ------------------------------------------------------------------

    def _loaded(self) -> dict[str, list[Deployment]]:
        if self._apps is None:
            self._apps = {}
            for path in sorted(self.directory.glob("*.json")):
                try:
                    doc = orjson.loads(path.read_bytes())
                    if doc.get("format") != _FORMAT:
                        raise ValueError(f"unknown format {doc.get('format')!r}")
                    entries = [Deployment.from_doc(d) for d in doc["deployments"]]
                except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                    self._problems.append(f"deployment record {path} is unreadable: {exc}")
                    continue
                if entries:
                    self._apps.setdefault(entries[0].app, []).extend(entries)
        return self._apps

    def load(self) -> tuple[list[Deployment], list[str]]:
        """Every persisted deployment, oldest first, and the records that could not be read."""
        with self._lock:
            entries = [d for deployments in self._loaded().values() for d in deployments]
            return sorted(entries, key=lambda d: d.deployed_at), list(self._problems)

    def find(self, job: str) -> Deployment | None:
        with self._lock:
            for deployments in self._loaded().values():
                for deployment in deployments:
                    if job in deployment.jobs:
                        return deployment
            return None

    # --- changing -------------------------------------------------------------------

    def record(self, deployment: Deployment) -> None:
        """Keep `deployment`; its jobs leave whichever entry held them before."""
        with self._lock:
            apps = self._loaded()
            changed = {deployment.app}
            for app, deployments in apps.items():
                for entry in deployments:
                    if entry.jobs.keys() & deployment.jobs.keys():
                        for name in deployment.jobs:
                            entry.jobs.pop(name, None)
                        changed.add(app)
            apps.setdefault(deployment.app, []).append(deployment)
            for app in sorted(changed):
                self._write(app)

    def forget(self, job: str) -> bool:
        """Drop `job` from the persisted set; False when it was not in it."""
        with self._lock:
            deployment = self.find(job)
            if deployment is None:
                return False
            del deployment.jobs[job]
            self._write(deployment.app)
            return True

    def set_intent(self, job: str, intent: Intent) -> None:
        """Remember what the operator asked of `job` (nothing if it is not persisted)."""
        with self._lock:
            deployment = self.find(job)
            if deployment is None or deployment.jobs[job].intent == intent:
                return
            deployment.jobs[job].intent = intent
            self._write(deployment.app)

    def _write(self, app: str) -> None:
        apps = self._loaded()
        entries = [d for d in apps.get(app, []) if d.jobs]
        if entries:
            apps[app] = entries
        else:
            apps.pop(app, None)
        path = self.directory / _file_name(app)
        try:
            if not entries:
                path.unlink(missing_ok=True)
                if self.directory.exists():
                    fsync_directory(self.directory)
                return
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            body = orjson.dumps(
                {"format": _FORMAT, "app": app, "deployments": [d.as_doc() for d in entries]},
                option=orjson.OPT_INDENT_2,
            )
            tmp = path.with_name(f".{path.name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
            fsync_directory(self.directory)  # the rename itself, or a crash may undo it
        except OSError as exc:
            raise ResourceExhaustedError(
                f"cannot record the deployment of application {app!r} in {path}: "
                f"{exc.strerror or exc}"
            ) from exc


def restore_variables(deployment: Deployment, operator: Mapping[str, str]) -> dict[str, str]:
    """What a persisted application's `${VAR}` resolves from when it is deployed again:
    the values it was deployed with, except where the operator now gives another."""
    return {**deployment.variables, **operator}


def jobs_to_restore(
    app: Application, deployment: Deployment, deployed: Container[str]
) -> tuple[JobSpec, ...]:
    """The jobs of `app` (the deployment's SQL validated again) that it still holds and
    that are not deployed yet; ConfigurationError when they no longer fit the record."""
    by_name = {job.name: job for job in app.jobs}
    missing = sorted(name for name in deployment.jobs if name not in by_name)
    if missing:
        raise ConfigurationError(
            f"application {deployment.app!r} no longer defines job(s) {', '.join(missing)}"
        )
    return tuple(by_name[name] for name in deployment.jobs if name not in deployed)
