"""A job's resource limits and the one watchdog thread that enforces them mid-query.

- `job.memory.limit` is given to the job's DuckDB as its `memory_limit` (exact for what
  DuckDB's buffer manager holds: hash tables, sorts, aggregate states; nothing spills).
  Memory DuckDB allocates outside its buffer manager (the lists of `range(...)`, long
  strings) is not counted there, so the watchdog also compares the process's resident
  memory with what it was when the batch began: growth beyond the limit interrupts the
  batch. That check is coarse: the jobs of a server share one process, so growth from
  two jobs' batches at once is seen by both.
- `job.batch.timeout` bounds the time one batch spends in the query.
- A stop lets the batch in flight finish if it does within `STOP_GRACE_SECONDS`;
  after that the watchdog asks DuckDB to interrupt it, again every tick until the batch
  has ended, so that the stop takes effect between two chunks of a query.

DuckDB checks for an interrupt between chunks of work; constant expressions that it
folds while planning (`range(0, 100000000)` with literal bounds) are not interruptible,
which is why validation refuses large literal generators (sql/sandbox.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from velostream.errors import JobLimitError
from velostream.sql.model import JobSpec
from velostream.sql.size import format_size

__all__ = [
    "BatchWatch",
    "JobLimits",
    "Watchdog",
    "interrupted",
    "memory_error",
    "resident_bytes",
]

#: How often the watchdog looks at the batches in flight.
_log = logging.getLogger("velostream.limits")
TICK_SECONDS = 0.1
#: How long a stopped batch may go on before it is interrupted (most batches finish,
#: and are committed, well within it).
STOP_GRACE_SECONDS = 0.3
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int | None:
    """The process's resident memory now (Linux); None where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True, slots=True)
class JobLimits:
    """How much memory and time one batch of a job may take (None: unbounded)."""

    memory_bytes: int | None = None
    batch_timeout_ms: int | None = None

    def for_job(self, job: JobSpec) -> JobLimits:
        """The job's own `job.memory.limit`/`job.batch.timeout`, else these defaults."""
        return JobLimits(
            memory_bytes=job.memory_limit_bytes or self.memory_bytes,
            batch_timeout_ms=job.batch_timeout_ms or self.batch_timeout_ms,
        )

    def memory_text(self) -> str:
        return "none" if self.memory_bytes is None else format_size(self.memory_bytes)

    def timeout_text(self) -> str:
        return "none" if self.batch_timeout_ms is None else f"{self.batch_timeout_ms / 1000:g}s"

    def memory_exceeded(self, detail: str) -> JobLimitError:
        return JobLimitError(f"job.memory.limit ({self.memory_text()}) exceeded: {detail}")

    def timeout_exceeded(self, seconds: float) -> JobLimitError:
        return JobLimitError(
            f"job.batch.timeout ({self.timeout_text()}) exceeded: the batch ran {seconds:.1f}s "
            "and was interrupted"
        )


class BatchWatch:
    """One batch in flight: its deadline, its memory baseline and how to interrupt it."""

    __slots__ = ("baseline", "deadline", "interrupt", "limits", "started", "stopped_at", "tripped")

    def __init__(self, limits: JobLimits, interrupt: Callable[[], None]) -> None:
        self.limits = limits
        self.interrupt = interrupt
        self.started = time.monotonic()
        timeout = limits.batch_timeout_ms
        self.deadline = None if timeout is None else self.started + timeout / 1000
        self.baseline = resident_bytes() if limits.memory_bytes is not None else None
        #: The limit this batch went over (set by the watchdog), or None.
        self.tripped: JobLimitError | None = None
        #: When a stop was asked for (monotonic): interrupt after the grace period.
        self.stopped_at: float | None = None

    @property
    def stopping(self) -> bool:
        return self.stopped_at is not None

    def stop(self) -> None:
        """A stop was asked for: interrupt the batch unless it ends within the grace."""
        if self.stopped_at is None:
            self.stopped_at = time.monotonic()

    def check(self, now: float, resident: int | None) -> None:
        """Trip on a limit (once) and interrupt; keep interrupting a stopping batch."""
        if self.tripped is None:
            if self.deadline is not None and now >= self.deadline:
                self.tripped = self.limits.timeout_exceeded(now - self.started)
            elif (
                self.baseline is not None
                and resident is not None
                and self.limits.memory_bytes is not None
                and resident - self.baseline > self.limits.memory_bytes
            ):
                self.tripped = self.limits.memory_exceeded(
                    f"the server grew by {format_size(resident - self.baseline)} during the "
                    "batch, and the batch was interrupted"
                )
        overdue = self.stopped_at is not None and now - self.stopped_at >= STOP_GRACE_SECONDS
        if self.tripped is not None or overdue:
            self.interrupt()


class Watchdog:
    """One daemon thread that checks every watched batch each tick."""

    _shared: Watchdog | None = None
    _shared_lock = threading.Lock()

    def __init__(self, tick: float = TICK_SECONDS) -> None:
        self.tick = tick
        self._watches: set[BatchWatch] = set()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    @classmethod
    def shared(cls) -> Watchdog:
        """The process's watchdog (started on first use)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = Watchdog()
            return cls._shared

    def begin(self, limits: JobLimits, interrupt: Callable[[], None]) -> BatchWatch:
        """Watch a batch from now until `end`."""
        watch = BatchWatch(limits, interrupt)
        with self._wake:
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="velostream-watchdog", daemon=True
                )
                self._thread.start()
            self._wake.notify()
        return watch

    def end(self, watch: BatchWatch) -> None:
        """Stop watching; once this returns, the batch's interrupt is never called again
        (a late one would stop the next batch's query on the same connection)."""
        with self._wake:
            self._watches.discard(watch)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._watches:
                    self._wake.wait()
                baselines = any(w.baseline is not None for w in self._watches)
            resident = resident_bytes() if baselines else None
            now = time.monotonic()
            with self._wake:  # `end` waits for a check in progress
                for watch in list(self._watches):
                    try:
                        watch.check(now, resident)
                    except Exception:  # one job's closed connection must not end the watchdog
                        _log.exception("watchdog: checking a batch failed")
            time.sleep(self.tick)


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def interrupted(exc: BaseException) -> bool:
    """Whether DuckDB ended the query because it was interrupted."""
    return any(type(e).__name__ == "InterruptException" for e in _causes(exc))


def memory_error(limits: JobLimits, exc: BaseException) -> JobLimitError | None:
    """DuckDB's out-of-memory error as the job's limit error (when a limit is set)."""
    if limits.memory_bytes is None:
        return None
    for cause in _causes(exc):
        if type(cause).__name__ == "OutOfMemoryException":
            first = str(cause).split("\n", 1)[0]
            return limits.memory_exceeded(f"DuckDB: {first}")
    return None
