"""The one error path: a single call records an error in every place it must reach.

`ErrorRecorder.record` files the error in the server and job buffers, the catalog and
the counters (`MetricsProvider.record_job_error`), decides whether its log line is due
(the `LogThrottle`, which only this class holds) and writes that line with the job,
stage, kind, fingerprint and deployment context as structured fields. It is
synchronous and thread-safe, and it never raises for a well-formed call: a failure
inside recording is itself counted and logged. A malformed call (a stage or kind name
that is not one of ours) is refused with ValueError before anything is recorded, so an
error is recorded fully or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum
from typing import Any, TypeVar

from velostream.errors import ErrorKind, Severity, Stage, classify
from velostream.observability.error_tracker import DeploymentContext
from velostream.observability.logging import ERROR_LOGGER, LogThrottle
from velostream.observability.metrics import MetricsProvider

__all__ = ["ErrorRecorder", "JobErrors", "as_kind", "as_stage"]

_fallback_log = logging.getLogger(ERROR_LOGGER)
_E = TypeVar("_E", bound=StrEnum)


def _member(enum: type[_E], value: _E | str, what: str) -> _E:
    if type(value) is enum:
        return value
    try:
        return enum(value)
    except ValueError:
        valid = ", ".join(m.value for m in enum)
        raise ValueError(f"unknown error {what} {value!r} (one of: {valid})") from None


def as_stage(stage: Stage | str) -> Stage:
    """`stage` as a Stage; a name that is not one raises ValueError listing the valid ones."""
    return _member(Stage, stage, "stage")


def as_kind(kind: ErrorKind | str) -> ErrorKind:
    """`kind` as an ErrorKind (its value, e.g. "ParseError"); else ValueError."""
    return _member(ErrorKind, kind, "kind")


class ErrorRecorder:
    """Records errors with their job, stage and kind: counters, buffers, catalog, log."""

    def __init__(
        self,
        metrics: MetricsProvider,
        context_of: Callable[[str], DeploymentContext],
        *,
        throttle_seconds: float = 5.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.metrics = metrics
        self._context_of = context_of
        self.throttle = LogThrottle(throttle_seconds)
        metrics.register_collector(self.throttle)
        self.logger = logger or logging.getLogger(ERROR_LOGGER)

    def record(
        self,
        job: str,
        stage: Stage | str,
        message: str,
        *,
        kind: ErrorKind | str | None = None,
        exc: BaseException | None = None,
        record_ref: str | None = None,
        severity: Severity | str | None = None,
        count: int = 1,
        context: DeploymentContext | None = None,
    ) -> str | None:
        """Record `count` identical occurrences of one error; return its fingerprint.

        `kind` defaults to what `exc` classifies as, else InternalError; `context` to
        the job's deployment context (pass it when the caller has it already). The
        server buffer holds the message as `[job] message`, as the seed does. Of
        `count` occurrences at once the log writes at most one line, the others
        counted as suppressed. Returns None if recording itself failed (counted).
        """
        # Refused up front, before any place is touched: never half recorded.
        if type(stage) is not Stage:
            stage = as_stage(stage)
        if kind is None:
            kind = classify(exc) if exc is not None else ErrorKind.INTERNAL
        elif type(kind) is not ErrorKind:
            kind = as_kind(kind)
        if severity is not None and type(severity) is not Severity:
            severity = Severity(severity)
        if type(message) is not str:
            message = str(message)
        try:
            if context is None:
                context = self._context_of(job)
            fingerprint = self.metrics.record_job_error(
                job, stage, kind, message, severity=severity, context=context,
                record_ref=record_ref, count=count,
            )  # fmt: skip
            log, suppressed = self.throttle.check((job, fingerprint), None, count)
            if log:
                self._log(job, stage, kind, message, fingerprint, context, record_ref, suppressed)
            return fingerprint
        except Exception:  # recording must never take its caller down
            try:
                self.metrics.count_recording_failure(count)
                _fallback_log.exception("failed to record an error of job %r", job)
            except Exception:
                pass
            return None

    def for_job(self, job: str) -> JobErrors:
        """A recorder bound to `job`: what a job's own code records through."""
        return JobErrors(self, job)

    def flush(self) -> None:
        """Write one line for every fingerprint whose repeats are still unreported."""
        for key, suppressed in self.throttle.pending().items():
            job, fp = key if isinstance(key, tuple) else (None, key)
            self.logger.warning(
                "%d more occurrences of error %s were not logged",
                suppressed,
                fp,
                extra={"job": job, "fingerprint": fp, "suppressed": suppressed},
            )

    def _log(
        self,
        job: str,
        stage: Stage,
        kind: ErrorKind,
        message: str,
        fingerprint: str,
        context: DeploymentContext,
        record_ref: str | None,
        suppressed: int,
    ) -> None:
        """One structured error line; skips the logging module's caller-frame search."""
        logger = self.logger
        if not logger.isEnabledFor(logging.ERROR):
            return
        tail = f" ({suppressed} similar not logged)" if suppressed else ""
        where = f" at {record_ref}" if record_ref else ""
        extra = {
            "job": job,
            "stage": stage.value,
            "kind": kind.value,
            "fingerprint": fingerprint,
            "node_id": context.node_id,
            "region": context.region,
            "version": context.version,
            "record_ref": record_ref,
            "suppressed": suppressed or None,
        }
        record = logger.makeRecord(
            logger.name,
            logging.ERROR,
            __file__,
            0,
            "[%s] %s error (%s)%s: %s%s",
            (job, stage.value, kind.value, where, message, tail),
            None,
            extra=extra,
        )
        logger.handle(record)


class JobErrors:
    """`ErrorRecorder.record` with the job filled in; `context` is the job's context."""

    __slots__ = ("job", "recorder")

    def __init__(self, recorder: ErrorRecorder, job: str) -> None:
        self.recorder = recorder
        self.job = job

    @property
    def context(self) -> DeploymentContext:
        """The job's deployment context, looked up now (once per batch by callers)."""
        return self.recorder._context_of(self.job)

    def record(self, stage: Stage | str, message: str, **details: Any) -> str | None:
        return self.recorder.record(self.job, stage, message, **details)
