"""Logging set-up: console, rotating file, JSON lines, syslog; and error-log throttling.

`configure_logging` installs handlers on the `velostream` logger. Settings come from
its arguments, else `VELO_LOG_LEVEL`, `VELO_LOG_FORMAT`, `VELO_LOG_FILE`,
`VELO_LOG_SYSLOG`. `LogThrottle` decides whether a repeated error (by fingerprint)
is logged: the first occurrence is, then at most one summary line per interval
carrying the number suppressed. Counters count every error regardless.

Levels: the logging module's, plus `trace` (5, below `debug`) for per-poll and
per-message detail; `parse_level` takes any of them by name, in any case. At `debug`
the server writes a line at every batch boundary, commit, retry and Kafka rebalance.

Every line is safe to write whatever text it carries: a name that is not UTF-8 (a
surrogate-escaped file name) is escaped by `observability.text.safe_text`, in the JSON
and the text format alike, so no handler fails on it.

Log context: a job's thread runs under `bind_job(name)` (and `bind_stage(stage)` for
each stage of a batch), and `JobContextFilter`, on every handler we install, gives a
record logged there, by us or by a connector, the `job` and `stage` fields it lacks.
Lines about a job logged from elsewhere (the API's threads) pass them as `extra`
(`job_logger`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import logging.handlers
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from velostream.observability.text import dumps, safe_text

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = [
    "ERROR_LOGGER",
    "TRACE",
    "JobContextFilter",
    "JsonFormatter",
    "LogThrottle",
    "TextFormatter",
    "bind_job",
    "bind_stage",
    "configure_logging",
    "job_logger",
    "parse_level",
]

ERROR_LOGGER = "velostream.errors"
TRACE = 5
_LEVELS = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_ROOT = "velostream"
_CONTEXT_FIELDS = (
    "job",
    "stage",
    "kind",
    "fingerprint",
    "node_id",
    "region",
    "version",
    "record_ref",
    "suppressed",
)
_TEXT_FORMAT = "%(asctime)s %(levelname)-5s %(name)s: %(message)s"
_HANDLER_MARK = "_velostream_handler"


# (job, stage) of the code running now; threads start without one.
_context: contextvars.ContextVar[tuple[str | None, str | None]] = contextvars.ContextVar(
    "velostream_log_context", default=(None, None)
)


@contextlib.contextmanager
def bind_job(job: str) -> Iterator[None]:
    """Log lines written inside (in this thread) are about `job`."""
    token = _context.set((job, None))
    try:
        yield
    finally:
        _context.reset(token)


@contextlib.contextmanager
def bind_stage(stage: str) -> Iterator[None]:
    """Log lines written inside are about the bound job's `stage` (a Stage value)."""
    token = _context.set((_context.get()[0], stage))
    try:
        yield
    finally:
        _context.reset(token)


def job_logger(logger: logging.Logger, job: str) -> logging.LoggerAdapter[logging.Logger]:
    """`logger` whose lines carry `job` as a field, for code outside the job's thread."""
    return logging.LoggerAdapter(logger, {"job": job})


class JobContextFilter(logging.Filter):
    """Fills in `job` and `stage` from the bound context where a record has none."""

    def filter(self, record: logging.LogRecord) -> bool:
        job, stage = _context.get()
        if job is not None and getattr(record, "job", None) is None:
            record.job = job
        if stage is not None and getattr(record, "stage", None) is None:
            record.stage = stage
        return True


def parse_level(level: str | int) -> int:
    """A level number from a name (`trace`, `debug`, ... `critical`, any case) or a number."""
    if isinstance(level, int):
        return level
    name = level.strip().lower()
    if name.isdigit():
        return int(name)
    if name not in _LEVELS:
        valid = ", ".join(n for n in _LEVELS if n != "warn")
        raise ValueError(f"unknown log level {level!r}; valid: {valid}")
    return _LEVELS[name]


class TextFormatter(logging.Formatter):
    """`time level logger: message`, with text that is not UTF-8 escaped."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return safe_text(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the error context."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _CONTEXT_FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return dumps(doc, default=str).decode("utf-8")


def _parse_syslog(address: str) -> str | tuple[str, int]:
    """`/dev/log` (a socket path), `host:port` or `host` (UDP 514)."""
    if address.startswith("/"):
        return address
    host, _, port = address.rpartition(":")
    if host and port.isdigit():
        return (host, int(port))
    return (address, 514)


def configure_logging(
    level: str | int | None = None,
    format: Literal["text", "json"] | None = None,
    file: str | None = None,
    max_bytes: int = 10 * 1024 * 1024,
    backups: int = 5,
    syslog: str | None = None,
    *,
    console: bool = True,
    env: Mapping[str, str] | None = None,
) -> logging.Logger:
    """Configure the `velostream` logger; calling it again replaces our handlers.

    A rotating log file (for example `velo_deployment.log`) is `file=...` away.
    """
    e = os.environ if env is None else env
    number = parse_level(level if level is not None else e.get("VELO_LOG_LEVEL", "INFO"))
    fmt = format or e.get("VELO_LOG_FORMAT", "text")
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r}; valid: text, json")
    file = file or e.get("VELO_LOG_FILE") or None
    syslog = syslog or e.get("VELO_LOG_SYSLOG") or None

    # Named here, not at import: a record at TRACE shows as TRACE, not "Level 5".
    logging.addLevelName(TRACE, "TRACE")
    logger = logging.getLogger(_ROOT)
    logger.setLevel(number)
    logger.propagate = False
    for handler in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
        logger.removeHandler(handler)
        handler.close()

    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    handlers: list[logging.Handler] = []
    if console:
        handlers.append(logging.StreamHandler())
    if file:
        handlers.append(
            logging.handlers.RotatingFileHandler(
                file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
            )
        )
    if syslog:
        address = _parse_syslog(syslog)
        sock = socket.SOCK_DGRAM
        handlers.append(logging.handlers.SysLogHandler(address=address, socktype=sock))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(JobContextFilter())
        setattr(handler, _HANDLER_MARK, True)
        logger.addHandler(handler)
    return logger


class LogThrottle:
    """Per-fingerprint log throttling, bounded in the number of fingerprints tracked.

    Also a collector: it exports how many lines it suppressed
    (`velo_error_log_suppressed_total`), read at scrape time.
    """

    def __init__(self, interval: float = 5.0, max_keys: int = 10_000) -> None:
        self.interval = interval
        self._max_keys = max_keys
        self.lock = threading.Lock()
        # fingerprint -> [time of last line written, suppressed since then]
        self._state: OrderedDict[Hashable, list[float]] = OrderedDict()
        self.suppressed_total = 0

    def check(self, key: Hashable, now: float | None = None, count: int = 1) -> tuple[bool, int]:
        """(log this occurrence?, occurrences suppressed since the last line).

        `count` occurrences at once: at most the first is logged, the others are
        suppressed (and reported with the next line). On every error's path: one
        function, one lock.
        """
        if now is None:
            now = time.monotonic()
        with self.lock:
            state = self._state.get(key)
            if state is None:
                self._state[key] = [now, count - 1]
                self.suppressed_total += count - 1
                if len(self._state) > self._max_keys:
                    self._state.popitem(last=False)
                return True, 0
            if now - state[0] >= self.interval:
                suppressed = int(state[1])
                state[0], state[1] = now, count - 1
                self.suppressed_total += count - 1
                self._state.move_to_end(key)
                return True, suppressed
            state[1] += count
            self.suppressed_total += count
            return False, 0

    def pending(self) -> dict[Hashable, int]:
        """Suppressed counts not yet reported in a line, by fingerprint; clears them."""
        with self.lock:
            out = {k: int(v[1]) for k, v in self._state.items() if v[1]}
            for k in out:
                self._state[k][1] = 0
            return out

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.metrics_core import CounterMetricFamily

        yield CounterMetricFamily(
            "velo_error_log_suppressed",
            "Repeated error log lines suppressed by throttling (still counted)",
            value=self.suppressed_total,
        )
