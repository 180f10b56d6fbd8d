"""`ErrorTracker.record_error`, at the seed's path: a thin facade over the one error path.

The work is `ObservabilityManager.record_error` (`observability/recorder.py`): counters,
buffers, catalog and the throttled log line in one synchronous call that never raises
for a well-formed call. This facade keeps the seed's call form,
`ErrorTracker.record_error(manager, job, message)`, and its `None` manager.
"""

from __future__ import annotations

import logging

from velostream.errors import ErrorKind, Severity, Stage, classify
from velostream.observability.logging import ERROR_LOGGER
from velostream.observability.manager import ObservabilityManager
from velostream.observability.recorder import as_kind, as_stage

__all__ = ["ErrorTracker"]

_fallback_log = logging.getLogger(ERROR_LOGGER)


class ErrorTracker:
    """Records errors with their job, stage and kind."""

    @staticmethod
    def record_error(
        observability: ObservabilityManager | None,
        job_name: str,
        error_message: str,
        *,
        stage: Stage | str = Stage.JOB,
        kind: ErrorKind | str | None = None,
        exc: BaseException | None = None,
        record_ref: str | None = None,
        severity: Severity | str | None = None,
        count: int = 1,
    ) -> str | None:
        """Record one error (or `count` alike); return its fingerprint.

        Without a stage it is a job-stage error, as the seed's errors are. `stage` and
        `kind` may be given by name ("sink", "IOError"); an unknown name raises
        ValueError before anything is recorded. With no manager (the seed's `None`)
        the error is only logged, and None is returned.
        """
        if observability is None:
            stage = as_stage(stage)
            if kind is None:
                kind = classify(exc) if exc is not None else ErrorKind.INTERNAL
            _fallback_log.error(
                "[%s] %s",
                job_name,
                error_message,
                extra={
                    "job": job_name,
                    "stage": stage.value,
                    "kind": as_kind(kind).value,
                },
            )
            return None
        return observability.errors.record(
            job_name, stage, error_message, kind=kind, exc=exc, record_ref=record_ref,
            severity=severity, count=count,
        )  # fmt: skip
