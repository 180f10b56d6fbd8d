"""`ErrorTracker.record_error`: the one call every error site makes.

Synchronous and thread-safe (the seed's fire-and-forget task could reorder or drop
errors); it never raises. One call feeds the log (throttled per fingerprint), the
server and job buffers, the catalog and the counters.
"""

from __future__ import annotations

import logging

from velostream.errors import ErrorKind, Severity, Stage, classify
from velostream.observability.manager import ObservabilityManager

__all__ = ["ErrorTracker"]

_fallback_log = logging.getLogger("velostream.errors")


class ErrorTracker:
    """Records errors with their job, stage and kind."""

    @staticmethod
    def record_error(
        observability: ObservabilityManager | None,
        job_name: str,
        error_message: str,
        *,
        stage: Stage,
        kind: ErrorKind | None = None,
        exc: BaseException | None = None,
        record_ref: str | None = None,
        severity: Severity | None = None,
        count: int = 1,
    ) -> str | None:
        """Record one error; return its fingerprint (None if recording itself failed).

        `kind` defaults to what `exc` classifies as, else InternalError. The buffer
        holds the message as `[job_name] message`, as the seed does. `count` records
        that many identical occurrences at once (the bad records of a batch that fail
        alike; `record_ref` is one of them): every place counts them all, and the log
        writes at most one line, the others counted as suppressed.
        """
        try:
            if kind is None:
                kind = classify(exc) if exc is not None else ErrorKind.INTERNAL
            message = error_message if type(error_message) is str else str(error_message)
            if observability is None:
                _fallback_log.error(
                    "[%s] %s",
                    job_name,
                    message,
                    extra={"job": job_name, "stage": stage.value, "kind": kind.value},
                )
                return None
            metrics = observability.metrics() or observability.require_metrics()
            context = observability.deployment_context_for_job(job_name)
            outcome = metrics.record_job_error(
                job_name,
                stage,
                kind,
                message,
                severity=severity,
                context=context,
                record_ref=record_ref,
                count=count,
            )
            if outcome.log:
                _log_error(
                    observability.error_logger,
                    job_name,
                    stage,
                    kind,
                    message,
                    outcome.fingerprint,
                    context.node_id,
                    record_ref,
                    outcome.suppressed,
                )
            return outcome.fingerprint
        except Exception:  # recording must never take its caller down
            try:
                if observability is not None and observability.metrics() is not None:
                    observability.require_metrics().count_recording_failure(count)
                _fallback_log.exception("failed to record an error of job %r", job_name)
            except Exception:
                pass
            return None


def _log_error(
    logger: logging.Logger,
    job: str,
    stage: Stage,
    kind: ErrorKind,
    message: str,
    fingerprint: str,
    node_id: str | None,
    record_ref: str | None,
    suppressed: int,
) -> None:
    """One structured error line; skips the logging module's caller-frame search."""
    if not logger.isEnabledFor(logging.ERROR):
        return
    tail = f" ({suppressed} similar not logged)" if suppressed else ""
    where = f" at {record_ref}" if record_ref else ""
    extra = {
        "job": job,
        "stage": stage.value,
        "kind": kind.value,
        "fingerprint": fingerprint,
        "node_id": node_id,
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
