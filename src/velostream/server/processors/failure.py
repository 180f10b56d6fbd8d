"""Failure strategies, honoured exactly.

- `LogAndContinue`: record each bad record's error, skip it, commit the rest.
- `SendToDLQ`: bad records go to the dead-letter queue, made durable before the commit;
  a dead-letter write that fails fails the job (a record is never silently lost).
- `FailBatch`: a batch with a bad record is not committed at all; the job fails with
  the reason.
- `RetryWithBackoff`: a batch that fails (a bad record, or a source, process or sink
  error) is reprocessed from its source position after an exponential backoff
  (`retry_backoff_ms`, doubling, capped at 30 s), up to `max_retries` times; then the
  job fails. Nothing of a failed batch is committed, so nothing is lost.
"""

from __future__ import annotations

from dataclasses import dataclass

from velostream.errors import ErrorKind, classify
from velostream.sql.model import FailureStrategy, JobSpec

__all__ = ["MAX_BACKOFF_SECONDS", "FailurePolicy", "transient"]

MAX_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True, kw_only=True, slots=True)
class FailurePolicy:
    """A job's failure strategy and its retry settings."""

    strategy: FailureStrategy = FailureStrategy.LOG_AND_CONTINUE
    max_retries: int = 10
    retry_backoff_ms: int = 500

    @classmethod
    def for_job(cls, job: JobSpec) -> FailurePolicy:
        return cls(
            strategy=job.failure_strategy,
            max_retries=job.max_retries,
            retry_backoff_ms=job.retry_backoff_ms,
        )

    @property
    def dead_letters(self) -> bool:
        return self.strategy == FailureStrategy.SEND_TO_DLQ

    @property
    def skips_bad_records(self) -> bool:
        """Whether a batch with bad records still commits its good rows."""
        return self.strategy in (FailureStrategy.LOG_AND_CONTINUE, FailureStrategy.SEND_TO_DLQ)

    @property
    def retries(self) -> bool:
        return self.strategy == FailureStrategy.RETRY_WITH_BACKOFF

    def backoff_seconds(self, attempt: int) -> float:
        """Delay before retry number `attempt` (1-based): initial, doubling, capped."""
        return float(min(self.retry_backoff_ms / 1000.0 * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS))


def transient(exc: BaseException) -> bool:
    """A connection or timeout error: worth retrying whatever the strategy."""
    return classify(exc) in (ErrorKind.CONNECTION, ErrorKind.TIMEOUT)
