"""configure_logging (console, rotating file, JSON lines, syslog) and error-log throttling."""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from tests.helpers import FakeClock, ManagerFactory
from velostream.errors import ErrorKind, Stage
from velostream.observability import logging as observability_logging
from velostream.observability import metrics as observability_metrics
from velostream.observability.logging import (
    ERROR_LOGGER,
    TRACE,
    JsonFormatter,
    LogThrottle,
    configure_logging,
    parse_level,
)
from velostream.server.processors.error_tracking_helper import ErrorTracker


def ours(logger: logging.Logger) -> list[logging.Handler]:
    return [h for h in logger.handlers if getattr(h, "_velostream_handler", False)]


def flush(logger: logging.Logger) -> None:
    for handler in logger.handlers:
        handler.flush()


def json_lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- configure_logging ------------------------------------------------------------------


def test_configure_logging_owns_the_velostream_logger(tmp_path: Path) -> None:
    logger = configure_logging("debug", console=False, file=str(tmp_path / "v.log"))
    assert logger is logging.getLogger("velostream")
    assert logger.level == logging.DEBUG
    assert logger.propagate is False
    assert [type(h) for h in ours(logger)] == [logging.handlers.RotatingFileHandler]


def test_console_handler_writes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    logger = configure_logging("INFO")
    logging.getLogger("velostream.engine").info("hello console")
    flush(logger)
    line = capsys.readouterr().err.strip()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO  velostream\.engine: hello console", line
    )


def test_the_rotating_file_really_rotates(tmp_path: Path) -> None:
    path = tmp_path / "velo_deployment.log"
    logger = configure_logging("INFO", file=str(path), max_bytes=1024, backups=2, console=False)
    log = logging.getLogger("velostream.server")
    for i in range(200):
        log.info("line %03d %s", i, "x" * 60)
    flush(logger)
    rotated = sorted(p.name for p in tmp_path.iterdir())
    assert rotated == ["velo_deployment.log", "velo_deployment.log.1", "velo_deployment.log.2"]
    for file in tmp_path.iterdir():
        assert 0 < file.stat().st_size <= 1024
    newest = path.read_text(encoding="utf-8").splitlines()
    assert "line 199 " in newest[-1]
    older = (tmp_path / "velo_deployment.log.1").read_text(encoding="utf-8").splitlines()
    first_newest = int(newest[0].split("line ")[1][:3])
    assert int(older[-1].split("line ")[1][:3]) == first_newest - 1


def test_json_lines_carry_the_error_context(tmp_path: Path, make_manager: ManagerFactory) -> None:
    path = tmp_path / "errors.jsonl"
    configure_logging("INFO", format="json", file=str(path), console=False)
    manager = make_manager()
    fingerprint = ErrorTracker.record_error(
        manager,
        "orders",
        'cannot parse "price" on line 7',
        stage=Stage.DESERIALIZE,
        kind=ErrorKind.PARSE,
        record_ref="orders.csv:7",
    )
    logging.getLogger("velostream.server").info("plain line ü")
    flush(logging.getLogger("velostream"))
    error, plain = json_lines(path)
    assert error == {
        "time": error["time"],
        "level": "ERROR",
        "logger": ERROR_LOGGER,
        "message": (
            "[orders] deserialize error (ParseError) at orders.csv:7: "
            'cannot parse "price" on line 7'
        ),
        "job": "orders",
        "stage": "deserialize",
        "kind": "ParseError",
        "fingerprint": fingerprint,
        "node_id": "node-1",
        "region": "eu-west-1",
        "version": "9.9.9",
        "record_ref": "orders.csv:7",
    }
    assert isinstance(error["time"], str)
    assert datetime.fromisoformat(error["time"]).utcoffset() is not None
    assert plain["message"] == "plain line ü"
    assert plain["logger"] == "velostream.server"
    assert "job" not in plain


def test_json_lines_carry_the_exception(tmp_path: Path) -> None:
    path = tmp_path / "v.jsonl"
    configure_logging(format="json", file=str(path), console=False)
    try:
        raise RuntimeError("kaput\nsecond line")
    except RuntimeError:
        logging.getLogger("velostream.x").exception("failed")
    flush(logging.getLogger("velostream"))
    (line,) = json_lines(path)
    assert line["message"] == "failed"
    assert isinstance(line["exception"], str)
    assert "RuntimeError: kaput\nsecond line" in line["exception"]


def test_json_formatter_serialises_odd_values() -> None:
    record = logging.LogRecord("velostream.x", logging.ERROR, __file__, 1, "m", None, None)
    record.job = Path("/weird/job")  # not JSON: rendered with str()
    doc = orjson.loads(JsonFormatter().format(record))
    assert doc["job"] == "/weird/job"


def test_settings_come_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "env.log"
    env = {"VELO_LOG_LEVEL": "warning", "VELO_LOG_FORMAT": "json", "VELO_LOG_FILE": str(path)}
    logger = configure_logging(console=False, env=env)
    log = logging.getLogger("velostream.x")
    log.info("not written")
    log.warning("written")
    flush(logger)
    assert [line["message"] for line in json_lines(path)] == ["written"]


def test_arguments_win_over_the_environment(tmp_path: Path) -> None:
    env_file, arg_file = tmp_path / "env.log", tmp_path / "arg.log"
    env = {"VELO_LOG_LEVEL": "ERROR", "VELO_LOG_FORMAT": "json", "VELO_LOG_FILE": str(env_file)}
    logger = configure_logging("INFO", format="text", file=str(arg_file), console=False, env=env)
    logging.getLogger("velostream.x").info("info line")
    flush(logger)
    assert not env_file.exists()
    assert arg_file.read_text(encoding="utf-8").rstrip().endswith("velostream.x: info line")


@pytest.mark.parametrize(
    "call",
    [
        {"format": "xml"},
        {"env": {"VELO_LOG_FORMAT": "yaml"}},
    ],
)
def test_unknown_format_is_refused(call: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="unknown log format"):
        configure_logging(console=False, **call)  # type: ignore[arg-type]


def test_configuring_again_replaces_only_our_handlers(tmp_path: Path) -> None:
    logger = logging.getLogger("velostream")
    foreign = logging.NullHandler()
    logger.addHandler(foreign)
    configure_logging(file=str(tmp_path / "a.log"))
    first = ours(logger)
    assert len(first) == 2
    configure_logging(file=str(tmp_path / "b.log"), console=False)
    second = ours(logger)
    assert len(second) == 1
    assert not set(first) & set(second)
    assert foreign in logger.handlers


# --- levels ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "level"),
    [("trace", 5), ("TRACE", 5), ("debug", 10), ("Info", 20), ("warn", 30), ("critical", 50)],
)
def test_levels_are_named_in_any_case(name: str, level: int) -> None:
    assert parse_level(name) == level
    assert parse_level(level) == level


def test_an_unknown_level_is_refused_naming_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown log level 'verbose'; valid: trace, debug, info"):
        parse_level("verbose")


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_trace_is_a_level_below_debug(tmp_path: Path, how: str) -> None:
    path = tmp_path / "trace.log"
    if how == "argument":
        logger = configure_logging("trace", file=str(path), console=False)
    else:
        logger = configure_logging(file=str(path), console=False, env={"VELO_LOG_LEVEL": "trace"})
    assert logger.level == TRACE < logging.DEBUG
    log = logging.getLogger("velostream.kafka")
    log.log(TRACE, "polled %d", 3)
    log.debug("committed")
    flush(logger)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == [
        "TRACE velostream.kafka: polled 3",
        "DEBUG velostream.kafka: committed",
    ]


def test_debug_leaves_trace_lines_out(tmp_path: Path) -> None:
    path = tmp_path / "debug.log"
    logger = configure_logging("debug", file=str(path), console=False)
    logging.getLogger("velostream.kafka").log(TRACE, "polled")
    flush(logger)
    assert path.read_text(encoding="utf-8") == ""


# --- names that are not UTF-8 -----------------------------------------------------------

NAME = os.fsdecode(b"tr\xffades.csv")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_name_that_is_not_utf8_is_logged_escaped(
    tmp_path: Path,
    make_manager: ManagerFactory,
    fmt: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "v.log"
    configure_logging("INFO", format=fmt, file=str(path), console=False)  # type: ignore[arg-type]
    ErrorTracker.record_error(
        make_manager(),
        "odd",
        f"cannot read {NAME}",
        stage=Stage.DESERIALIZE,
        kind=ErrorKind.PARSE,
        record_ref=f"{NAME}:7",
    )
    try:
        raise OSError(f"no such file: {NAME}")
    except OSError:
        logging.getLogger("velostream.x").exception("opening %s", NAME)
    flush(logging.getLogger("velostream"))
    assert "Logging error" not in capsys.readouterr().err
    text = path.read_text(encoding="utf-8")
    if fmt == "json":
        error, failure = json_lines(path)
        assert error["record_ref"] == "tr\\xffades.csv:7"
        assert error["message"].endswith("at tr\\xffades.csv:7: cannot read tr\\xffades.csv")
        assert failure["message"] == "opening tr\\xffades.csv"
        assert "no such file: tr\\xffades.csv" in failure["exception"]
    else:
        assert "error (ParseError) at tr\\xffades.csv:7: cannot read tr\\xffades.csv" in text
        assert "OSError: no such file: tr\\xffades.csv" in text


@pytest.fixture
def udp_listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    try:
        yield sock
    finally:
        sock.close()


def test_syslog_sends_to_a_real_socket(udp_listener: socket.socket) -> None:
    port = udp_listener.getsockname()[1]
    logger = configure_logging(syslog=f"127.0.0.1:{port}", console=False)
    logging.getLogger("velostream.x").error("to syslog")
    flush(logger)
    datagram = udp_listener.recv(4096)
    assert datagram.startswith(b"<11>")  # facility user, severity error
    assert b"velostream.x: to syslog" in datagram


@pytest.mark.parametrize(
    ("address", "expected"),
    [("127.0.0.1", ("127.0.0.1", 514)), ("localhost:5514", ("localhost", 5514))],
)
def test_syslog_addresses(address: str, expected: tuple[str, int]) -> None:
    logger = configure_logging(syslog=address, console=False)
    (handler,) = ours(logger)
    assert isinstance(handler, logging.handlers.SysLogHandler)
    assert handler.address == expected


# --- LogThrottle ------------------------------------------------------------------------------


def test_throttle_logs_the_first_then_one_summary_per_interval() -> None:
    throttle = LogThrottle(interval=5.0)
    assert throttle.check("fp", now=100.0) == (True, 0)
    assert [throttle.check("fp", now=100.0 + i) for i in range(3)] == [(False, 0)] * 3
    assert throttle.check("other", now=101.0) == (True, 0)
    assert throttle.check("fp", now=105.0) == (True, 3)
    assert throttle.check("fp", now=106.0) == (False, 0)
    assert throttle.check("fp", now=110.0) == (True, 1)
    assert throttle.check("fp", now=115.0) == (True, 0)


def test_throttle_pending_reports_and_clears() -> None:
    throttle = LogThrottle(interval=5.0)
    for key in ["a", "a", "a", "b", "c", "c"]:
        throttle.check(key, now=0.0)
    assert throttle.pending() == {"a": 2, "c": 1}
    assert throttle.pending() == {}
    assert throttle.check("a", now=1.0) == (False, 0)  # the interval still runs
    assert throttle.check("a", now=5.0) == (True, 1)


def test_zero_interval_logs_everything() -> None:
    throttle = LogThrottle(interval=0.0)
    assert [throttle.check("k", now=1.0) for _ in range(3)] == [(True, 0)] * 3


def test_throttle_tracks_a_bounded_number_of_keys() -> None:
    throttle = LogThrottle(interval=5.0, max_keys=2)
    for key in ["a", "b", "c"]:
        throttle.check(key, now=0.0)
    assert throttle.check("a", now=1.0) == (True, 0)  # "a" was forgotten
    assert throttle.check("c", now=1.0) == (False, 0)


def test_throttle_reads_the_clock_when_not_given_one(fake_clock: FakeClock) -> None:
    throttle = LogThrottle(interval=5.0)
    assert throttle.check("k") == (True, 0)
    assert throttle.check("k") == (False, 0)
    fake_clock.now += 5.0
    assert throttle.check("k") == (True, 1)


# --- throttling through record_error: the log is thinned, counters are exact ---------------


def test_repeated_errors_log_once_then_a_summary_while_counters_stay_exact(
    tmp_path: Path,
    make_manager: ManagerFactory,
    registry: CollectorRegistry,
    fake_clock: FakeClock,
) -> None:
    path = tmp_path / "errors.jsonl"
    configure_logging("INFO", format="json", file=str(path), console=False)
    manager = make_manager(throttle_seconds=5.0, registry=registry)

    def record(n: int) -> None:
        for i in range(n):
            ErrorTracker.record_error(
                manager, "orders", f"bad row {i}", stage=Stage.DESERIALIZE, kind=ErrorKind.PARSE
            )

    record(1000)
    fake_clock.now += 4.5
    record(10)
    flush(logging.getLogger("velostream"))
    assert len(json_lines(path)) == 1
    fake_clock.now += 0.5  # exactly the interval since the first line
    record(1)
    fake_clock.now += 1.0
    record(7)
    manager.shutdown()
    flush(logging.getLogger("velostream"))
    first, summary, flushed = json_lines(path)
    assert first["message"] == "[orders] deserialize error (ParseError): bad row 0"
    assert "suppressed" not in first
    assert summary["message"] == (
        "[orders] deserialize error (ParseError): bad row 0 (1009 similar not logged)"
    )
    assert summary["suppressed"] == 1009
    assert summary["fingerprint"] == first["fingerprint"]
    assert flushed["level"] == "WARNING"
    assert (
        flushed["message"] == f"7 more occurrences of error {first['fingerprint']} were not logged"
    )
    assert flushed["suppressed"] == 7
    labels = {"job": "orders", "stage": "deserialize", "kind": "ParseError"}
    assert registry.get_sample_value("velo_job_errors_total", labels) == 1018
    assert registry.get_sample_value("velo_error_messages_total") == 1018
    assert registry.get_sample_value("velo_error_log_suppressed_total") == 1016
    (group,) = manager.require_metrics().catalog.groups()
    assert group.count == 1018


def test_distinct_fingerprints_are_throttled_separately(
    make_manager: ManagerFactory, error_log: list[logging.LogRecord], fake_clock: FakeClock
) -> None:
    manager = make_manager()
    for stage in [Stage.SOURCE, Stage.SINK, Stage.SOURCE, Stage.SINK]:
        ErrorTracker.record_error(manager, "j", "down", stage=stage, kind=ErrorKind.CONNECTION)
    ErrorTracker.record_error(manager, "j", "other", stage=Stage.SOURCE)
    assert [r.getMessage() for r in error_log] == [
        "[j] source error (ConnectionError): down",
        "[j] sink error (ConnectionError): down",
        "[j] source error (InternalError): other",
    ]


class SteppedClock:
    """A wall clock that NTP steps back an hour while monotonic time moves on."""

    def __init__(self) -> None:
        self.wall = 1_000_000.0
        self.mono = 500.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono


def test_a_wall_clock_step_back_does_not_silence_the_summary(
    make_manager: ManagerFactory,
    error_log: list[logging.LogRecord],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = SteppedClock()
    monkeypatch.setattr(observability_metrics, "time", clock)
    monkeypatch.setattr(observability_logging, "time", clock)
    manager = make_manager(throttle_seconds=5.0)
    for _ in range(3):
        ErrorTracker.record_error(manager, "j", "disk full", stage=Stage.SINK)
    clock.wall -= 3600.0
    clock.mono += 6.0
    ErrorTracker.record_error(manager, "j", "disk full", stage=Stage.SINK)
    assert [r.__dict__.get("suppressed") for r in error_log] == [None, 2]


def test_each_jobs_first_occurrence_is_logged(
    make_manager: ManagerFactory, error_log: list[logging.LogRecord], fake_clock: FakeClock
) -> None:
    manager = make_manager()
    for job in ["orders", "orders", "trades"]:
        ErrorTracker.record_error(manager, job, "disk full", stage=Stage.SINK, kind=ErrorKind.IO)
    assert [r.__dict__["job"] for r in error_log] == ["orders", "trades"]
