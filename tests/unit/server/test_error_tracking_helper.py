"""ErrorTracker.record_error: one call feeds buffer, catalog, counters and log; never raises."""

from __future__ import annotations

import gc
import json
import logging
import sys
import threading
import time
import tracemalloc
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from tests.helpers import NODE_CONTEXT, ManagerFactory, message_series
from velostream.errors import ErrorKind, Severity, SinkError, Stage
from velostream.observability.logging import ERROR_LOGGER
from velostream.observability.manager import ObservabilityManager, StreamingConfig
from velostream.server.processors.error_tracking_helper import ErrorTracker


def job_errors(registry: CollectorRegistry, job: str, stage: str, kind: str) -> float | None:
    return registry.get_sample_value(
        "velo_job_errors_total", {"job": job, "stage": stage, "kind": kind}
    )


def all_job_errors(registry: CollectorRegistry) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["job"], s.labels["stage"], s.labels["kind"]): s.value
        for family in registry.collect()
        if family.name == "velo_job_errors"
        for s in family.samples
        if s.name == "velo_job_errors_total"
    }


# --- one call, every destination ---------------------------------------------------------


def test_record_error_feeds_buffer_catalog_counters_and_log(
    manager: ObservabilityManager,
    registry: CollectorRegistry,
    error_log: list[logging.LogRecord],
) -> None:
    fp = ErrorTracker.record_error(
        manager,
        "orders",
        "bad row 7",
        stage=Stage.DESERIALIZE,
        kind=ErrorKind.PARSE,
        record_ref="orders.csv:8",
    )
    provider = manager.require_metrics()
    assert fp == provider.catalog.fingerprint_of(ErrorKind.PARSE, Stage.DESERIALIZE, "bad row 7")[0]
    # The server buffer holds the message prefixed with its job, as the seed did.
    assert [e.message for e in provider.get_error_messages()] == ["[orders] bad row 7"]
    job_buffer = provider.job_buffer("orders")
    assert job_buffer is not None
    assert [e.message for e in job_buffer.get_messages()] == ["bad row 7"]
    (group,) = provider.catalog.groups()
    assert (group.fingerprint, group.job, group.stage, group.kind, group.count) == (
        fp,
        "orders",
        Stage.DESERIALIZE,
        ErrorKind.PARSE,
        1,
    )
    assert group.severity is Severity.USER
    assert group.last_record_ref == "orders.csv:8"
    assert group.deployment_context == NODE_CONTEXT
    assert job_errors(registry, "orders", "deserialize", "ParseError") == 1
    assert registry.get_sample_value("velo_error_messages_total") == 1
    (line,) = error_log
    assert line.name == ERROR_LOGGER
    assert line.levelno == logging.ERROR
    assert line.getMessage() == (
        "[orders] deserialize error (ParseError) at orders.csv:8: bad row 7"
    )
    extra = {k: line.__dict__[k] for k in ("job", "stage", "kind", "fingerprint", "node_id")}
    assert extra == {
        "job": "orders",
        "stage": "deserialize",
        "kind": "ParseError",
        "fingerprint": fp,
        "node_id": "node-1",
    }
    assert line.__dict__["record_ref"] == "orders.csv:8"


def test_similar_messages_share_a_fingerprint(manager: ObservabilityManager) -> None:
    first = ErrorTracker.record_error(manager, "j", "row 1 failed", stage=Stage.PROCESS)
    second = ErrorTracker.record_error(manager, "j", "row 2 failed", stage=Stage.PROCESS)
    other = ErrorTracker.record_error(manager, "j", "row 2 failed", stage=Stage.SINK)
    assert first == second != other
    assert first is not None
    assert len(first) == 16


def test_the_message_is_kept_verbatim_in_the_buffers(manager: ObservabilityManager) -> None:
    message = 'multi\nline "quoted" \\ ünïcødé 🚀'
    ErrorTracker.record_error(manager, "j", message, stage=Stage.SINK)
    provider = manager.require_metrics()
    assert provider.get_error_messages()[0].message == f"[j] {message}"
    (group,) = provider.catalog.groups()
    assert group.sample_message == message
    assert group.normalized == "multi"


def test_a_non_string_message_is_recorded_as_text(manager: ObservabilityManager) -> None:
    exc = SinkError("disk 3 full")
    ErrorTracker.record_error(manager, "j", exc, stage=Stage.SINK, exc=exc)  # type: ignore[arg-type]
    assert manager.require_metrics().get_error_messages()[0].message == "[j] disk 3 full"


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ValueError("bad value"), "TypeError"),
        (json.JSONDecodeError("Expecting value", "{", 0), "ParseError"),
        (TimeoutError("slow"), "TimeoutError"),
        (ConnectionRefusedError("refused"), "ConnectionError"),
        (FileNotFoundError(2, "No such file"), "IOError"),
        (MemoryError(), "ResourceError"),
        (SinkError("disk full", job="j", stage=Stage.SINK), "IOError"),
        (KeyError("k"), "InternalError"),
    ],
)
def test_the_kind_is_classified_from_the_exception(
    manager: ObservabilityManager,
    registry: CollectorRegistry,
    exc: BaseException,
    kind: str,
) -> None:
    ErrorTracker.record_error(manager, "j", str(exc), stage=Stage.PROCESS, exc=exc)
    assert job_errors(registry, "j", "process", kind) == 1
    assert all_job_errors(registry) == {("j", "process", kind): 1}


def test_an_explicit_kind_wins_over_the_exception(
    manager: ObservabilityManager, registry: CollectorRegistry
) -> None:
    ErrorTracker.record_error(
        manager, "j", "x", stage=Stage.SINK, kind=ErrorKind.RESOURCE, exc=ValueError("x")
    )
    assert all_job_errors(registry) == {("j", "sink", "ResourceError"): 1}


def test_without_kind_or_exception_the_kind_is_internal(
    manager: ObservabilityManager, registry: CollectorRegistry
) -> None:
    ErrorTracker.record_error(manager, "j", "x", stage=Stage.JOB)
    assert all_job_errors(registry) == {("j", "job", "InternalError"): 1}


def test_severity_can_be_overridden(manager: ObservabilityManager) -> None:
    ErrorTracker.record_error(
        manager, "j", "x", stage=Stage.SOURCE, kind=ErrorKind.CONNECTION, severity=Severity.USER
    )
    ErrorTracker.record_error(manager, "j", "y", stage=Stage.SOURCE, kind=ErrorKind.CONNECTION)
    severities = {g.sample_message: g.severity for g in manager.require_metrics().catalog.groups()}
    assert severities == {"x": Severity.USER, "y": Severity.SYSTEM}


def test_the_manager_is_initialised_on_first_error(make_manager: ManagerFactory) -> None:
    manager = make_manager(initialize=False)
    assert ErrorTracker.record_error(manager, "j", "x", stage=Stage.JOB) is not None
    provider = manager.metrics()
    assert provider is not None
    assert provider.get_total_errors() == 1


def test_without_observability_the_error_is_still_logged(
    error_log: list[logging.LogRecord],
) -> None:
    assert ErrorTracker.record_error(None, "orders", "boom", stage=Stage.SINK) is None
    (line,) = error_log
    assert line.getMessage() == "[orders] boom"
    assert line.levelno == logging.ERROR
    assert (line.__dict__["job"], line.__dict__["stage"], line.__dict__["kind"]) == (
        "orders",
        "sink",
        "InternalError",
    )


# --- never raises --------------------------------------------------------------------------


def break_catalog(manager: ObservabilityManager, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("catalog is broken")

    monkeypatch.setattr(manager.require_metrics().catalog, "record", broken)


def test_a_failure_inside_recording_is_counted_not_raised(
    manager: ObservabilityManager,
    registry: CollectorRegistry,
    error_log: list[logging.LogRecord],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    break_catalog(manager, monkeypatch)
    assert ErrorTracker.record_error(manager, "orders", "boom", stage=Stage.SINK) is None
    assert ErrorTracker.record_error(manager, "orders", "boom", stage=Stage.SINK) is None
    assert registry.get_sample_value("velo_error_recording_failures_total") == 2
    line = error_log[-1]
    assert line.getMessage() == "failed to record an error of job 'orders'"
    assert line.exc_info is not None
    assert isinstance(line.exc_info[1], RuntimeError)


def test_an_error_whose_recording_failed_is_still_counted(
    manager: ObservabilityManager,
    registry: CollectorRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # velo_error_recording_failures' own help text: "(the error was still counted)".
    break_catalog(manager, monkeypatch)
    ErrorTracker.record_error(manager, "orders", "boom", stage=Stage.SINK, kind=ErrorKind.IO)
    assert registry.get_sample_value("velo_error_recording_failures_total") == 1
    assert registry.get_sample_value("velo_error_messages_total") == 1
    assert job_errors(registry, "orders", "sink", "IOError") == 1


def test_stage_and_kind_by_name_are_recorded_fully(
    manager: ObservabilityManager, registry: CollectorRegistry
) -> None:
    by_name = ErrorTracker.record_error(manager, "j", "disk 1 full", stage="sink", kind="IOError")
    by_enum = ErrorTracker.record_error(
        manager, "j", "disk 2 full", stage=Stage.SINK, kind=ErrorKind.IO
    )
    assert by_name is not None and by_name == by_enum
    assert job_errors(registry, "j", "sink", "IOError") == 2
    assert registry.get_sample_value("velo_error_recording_failures_total") == 0


@pytest.mark.parametrize(
    "details", [{"stage": "proces"}, {"stage": "sink", "kind": "IOErr"}, {"stage": 3}]
)
def test_an_unknown_stage_or_kind_is_refused_before_anything_is_recorded(
    manager: ObservabilityManager,
    registry: CollectorRegistry,
    error_log: list[logging.LogRecord],
    details: dict[str, object],
) -> None:
    with pytest.raises(ValueError, match=r"unknown error (stage|kind)"):
        ErrorTracker.record_error(manager, "j", "x", **details)  # type: ignore[arg-type]
    provider = manager.require_metrics()
    assert registry.get_sample_value("velo_error_messages_total") == 0
    assert registry.get_sample_value("velo_error_recording_failures_total") == 0
    assert provider.get_error_messages() == []
    assert len(provider.catalog) == 0
    assert error_log == []


def test_the_seeds_three_argument_call(
    manager: ObservabilityManager,
    registry: CollectorRegistry,
    error_log: list[logging.LogRecord],
) -> None:
    """The seed writes `ErrorTracker::record_error(&manager, "job_name", "Error message")`."""
    fp = ErrorTracker.record_error(manager, "job_name", "Error message")
    provider = manager.require_metrics()
    assert [e.message for e in provider.get_error_messages()] == ["[job_name] Error message"]
    (group,) = provider.catalog.groups()
    assert (group.fingerprint, group.stage, group.kind) == (fp, Stage.JOB, ErrorKind.INTERNAL)
    assert job_errors(registry, "job_name", "job", "InternalError") == 1
    (line,) = error_log
    assert line.__dict__["job"] == "job_name"
    assert line.__dict__["stage"] == "job"


def test_a_broken_log_handler_does_not_raise(
    manager: ObservabilityManager, registry: CollectorRegistry
) -> None:
    class Broken(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raise OSError("log disk full")

        def handle(self, record: logging.LogRecord) -> bool:
            self.emit(record)  # unlike the stdlib handlers, let the error escape
            return True

    handler = Broken()
    logging.getLogger(ERROR_LOGGER).addHandler(handler)
    try:
        assert ErrorTracker.record_error(manager, "j", "x", stage=Stage.SINK) is None
    finally:
        logging.getLogger(ERROR_LOGGER).removeHandler(handler)
    # The error itself was counted before the log line failed.
    assert registry.get_sample_value("velo_error_messages_total") == 1
    assert registry.get_sample_value("velo_error_recording_failures_total") == 1


def test_a_message_with_undecodable_bytes_is_recorded(
    manager: ObservabilityManager, registry: CollectorRegistry
) -> None:
    # A line that is not UTF-8, decoded with surrogateescape (as os.fsdecode does).
    line = b"1,caf\xe9,3.50".decode("utf-8", "surrogateescape")
    fp = ErrorTracker.record_error(manager, "files", f"bad line {line}", stage=Stage.DESERIALIZE)
    assert fp is not None
    assert registry.get_sample_value("velo_error_recording_failures_total") == 0
    assert len(manager.require_metrics().catalog) == 1


# --- property: the counter counts every call -------------------------------------------------

CALLS = st.lists(
    st.tuples(
        st.sampled_from(["", "orders", "trades"]),
        st.sampled_from(list(Stage)),
        st.one_of(st.none(), st.sampled_from(list(ErrorKind))),
        st.text(max_size=40),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(calls=CALLS)
def test_error_messages_total_equals_the_number_of_calls(
    calls: Sequence[tuple[str, Stage, ErrorKind | None, str]],
) -> None:
    registry = CollectorRegistry()
    config = StreamingConfig(process_metrics=False, node_context=NODE_CONTEXT)
    manager = ObservabilityManager(config, registry)
    for job, stage, kind, message in calls:
        assert ErrorTracker.record_error(manager, job, message, stage=stage, kind=kind) is not None
    provider = manager.require_metrics()
    assert registry.get_sample_value("velo_error_messages_total") == len(calls)
    assert provider.get_total_errors() == len(calls)
    assert sum(g.count for g in provider.catalog.groups()) == len(calls)
    attributed = [c for c in calls if c[0]]
    assert sum(all_job_errors(registry).values()) == len(attributed)
    for job in ("orders", "trades"):
        buffer = provider.job_buffer(job)
        expected = sum(1 for c in calls if c[0] == job)
        assert (buffer.total_errors if buffer else 0) == expected


# --- concurrency -----------------------------------------------------------------------------


@pytest.mark.slow
def test_concurrent_record_error_keeps_every_total_exact(
    make_manager: ManagerFactory, registry: CollectorRegistry
) -> None:
    manager = make_manager(registry=registry, throttle_seconds=3600.0)
    logging.getLogger(ERROR_LOGGER).setLevel(logging.CRITICAL)  # restored by conftest
    jobs = ["job-0", "job-1", "job-2", "job-3"]
    shapes = [
        ("disk full", Stage.SINK, ErrorKind.IO),
        ("bad row", Stage.DESERIALIZE, ErrorKind.PARSE),
    ]
    threads_n, per_thread = 8, 50_000
    barrier = threading.Barrier(threads_n)
    failures: list[int] = []

    def work(t: int) -> None:
        job = jobs[t % len(jobs)]
        record = ErrorTracker.record_error
        barrier.wait()
        for i in range(per_thread):
            message, stage, kind = shapes[i % 2]
            if record(manager, job, message, stage=stage, kind=kind) is None:
                failures.append(i)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    total = threads_n * per_thread
    per_shape_and_job = total // len(jobs) // len(shapes)
    provider = manager.require_metrics()
    assert failures == []
    assert registry.get_sample_value("velo_error_messages_total") == total
    assert all_job_errors(registry) == {
        (job, stage.value, kind.value): per_shape_and_job
        for job in jobs
        for _, stage, kind in shapes
    }
    assert {(g.job, g.sample_message): g.count for g in provider.catalog.groups()} == {
        (job, message): per_shape_and_job for job in jobs for message, _, _ in shapes
    }
    assert provider.get_total_errors() == total
    assert provider.buffer.get_message_counts() == {
        f"[{job}] {message}": per_shape_and_job for job in jobs for message, _, _ in shapes
    }
    assert sum(e.count for e in provider.get_error_messages()) == total
    for job in jobs:
        buffer = provider.job_buffer(job)
        assert buffer is not None
        assert buffer.total_errors == total // len(jobs)
    assert registry.get_sample_value("velo_error_recording_failures_total") == 0


def test_flushing_the_log_throttle_while_errors_are_recorded(
    make_manager: ManagerFactory,
) -> None:
    manager = make_manager(throttle_seconds=3600.0)
    logging.getLogger(ERROR_LOGGER).setLevel(logging.CRITICAL)
    stop = threading.Event()

    def record_distinct_errors() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            word = "".join(chr(97 + i // 26**k % 26) for k in range(5))
            for _ in range(2):  # the repeat leaves a suppressed count to flush
                ErrorTracker.record_error(manager, "j", f"no column {word}", stage=Stage.PROCESS)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave the two threads finely
    recorder = threading.Thread(target=record_distinct_errors)
    recorder.start()
    try:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            manager.flush_log_throttle()  # what shutdown() does while jobs still fail
    finally:
        stop.set()
        recorder.join()
        sys.setswitchinterval(interval)


# --- memory bound ------------------------------------------------------------------------------


def distinct_words(n: int, length: int = 6) -> list[str]:
    """`n` distinct lower-case words, scrambled (7919 is prime to 26)."""
    space = 26**length
    words = []
    for i in range(n):
        x = i * 7919 % space
        words.append("".join(chr(97 + x // 26**k % 26) for k in range(length)))
    return words


@pytest.mark.slow
def test_distinct_messages_stay_bounded(
    make_manager: ManagerFactory, registry: CollectorRegistry
) -> None:
    """300,000 distinct messages; the last 100,000 are traced. Every store is full before
    tracing starts, so what the window retains is at most the stores' entries it
    replaced (about 2.7 MB: the log throttle's 10,000 keys, the catalog's 1,000
    groups); an unbounded catalog or throttle would add tens of MB."""
    n, traced = 300_000, 100_000
    manager = make_manager(registry=registry, buffer_size=10, catalog_size=1000)
    logging.getLogger(ERROR_LOGGER).setLevel(logging.CRITICAL)  # restored by conftest
    # Letters only, so every message is still distinct after normalisation.
    messages = [f"unknown column {word} in table" for word in distinct_words(n)]
    assert len(set(messages)) == n
    provider = manager.require_metrics()
    record = ErrorTracker.record_error

    for message in messages[: n - traced]:  # fill every store past its bound, untraced
        record(manager, "job", message, stage=Stage.PROCESS, kind=ErrorKind.EXECUTION)
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for message in messages[n - traced :]:
            record(manager, "job", message, stage=Stage.PROCESS, kind=ErrorKind.EXECUTION)
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()

    print(f"\nlast {traced:,} of {n:,} distinct messages retained {growth / 1e6:.2f} MB")
    assert len(message_series(registry)) <= 10
    assert provider.get_buffered_error_count() == 10
    assert len(provider.catalog) <= 1000
    assert registry.get_sample_value("velo_error_messages_total") == n
    assert registry.get_sample_value("velo_error_catalog_evictions_total") == n - 1000
    assert growth < 4 * 1024 * 1024


# --- many identical occurrences in one call ------------------------------------------------


def _everywhere(manager: ObservabilityManager) -> dict[str, object]:
    """What every place holds, minus times (for comparing two managers)."""
    provider = manager.require_metrics()
    job_buffer = provider.job_buffer("orders")
    assert job_buffer is not None
    return {
        "server buffer": [(e.message, e.count) for e in provider.get_error_messages()],
        "server total": provider.get_total_errors(),
        "server counts": provider.buffer.get_message_counts(),
        "job buffer": [(e.message, e.count) for e in job_buffer.get_messages()],
        "catalog": [(g.fingerprint, g.count, g.last_record_ref) for g in provider.catalog.groups()],
        "counters": all_job_errors(provider.registry),
        "total": provider.total_recorded(),
        "suppressed": manager.errors.throttle.suppressed_total,
    }


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(1, 6)), max_size=12))
def test_a_count_is_the_same_as_that_many_calls(runs: list[tuple[str, int]]) -> None:
    """Batches of bad records that fail alike are recorded with one call and a count."""

    def manager() -> ObservabilityManager:
        config = StreamingConfig(
            error_buffer_size=2, log_throttle_seconds=3600.0, process_metrics=False
        )
        m = ObservabilityManager.from_streaming_config(config, CollectorRegistry())
        m.initialize()
        return m

    one_by_one, counted = manager(), manager()
    logging.getLogger(ERROR_LOGGER).setLevel(logging.CRITICAL)  # restored by conftest
    for message, n in [("first", 1), *runs]:
        for i in range(n):
            ErrorTracker.record_error(
                one_by_one, "orders", message, stage=Stage.PROCESS, record_ref=f"r{i}"
            )
        ErrorTracker.record_error(
            counted, "orders", message, stage=Stage.PROCESS, record_ref=f"r{n - 1}", count=n
        )
    assert _everywhere(counted) == _everywhere(one_by_one)


def test_a_counted_call_logs_one_line_and_reports_the_rest_as_suppressed(
    make_manager: ManagerFactory, error_log: list[logging.LogRecord]
) -> None:
    manager = make_manager(throttle_seconds=0.0)
    ErrorTracker.record_error(manager, "orders", "bad", stage=Stage.PROCESS, count=7)
    assert len(error_log) == 1
    ErrorTracker.record_error(manager, "orders", "bad", stage=Stage.PROCESS)
    assert len(error_log) == 2
    assert "(6 similar not logged)" in error_log[1].getMessage()
