"""`opening_connection`: a job's DuckDB opens on another thread while the job reads its
source; its first use waits for it, and an error opening it is raised there."""

from __future__ import annotations

import threading

import duckdb
import pytest

from velostream.engine import core
from velostream.errors import ResourceExhaustedError


def test_it_is_the_sandboxed_connection_once_open() -> None:
    con = core.opening_connection(memory_limit=64 << 20)
    assert con.execute("SELECT 41 + 1").fetchall() == [(42,)]
    settings = dict(
        con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN "
            "('enable_external_access', 'lock_configuration', 'threads')"
        ).fetchall()
    )
    assert settings == {"enable_external_access": "false", "lock_configuration": "true",
                        "threads": "2"}  # fmt: skip
    with pytest.raises(duckdb.Error):
        con.execute("SET enable_external_access = true")


def test_the_caller_goes_on_while_it_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    release, opened_on = threading.Event(), []
    open_for_real = core.sandboxed_connection

    def slow(threads: int = 2, memory_limit: int | None = None) -> duckdb.DuckDBPyConnection:
        opened_on.append(threading.current_thread().name)
        assert release.wait(30), "the caller waited for the opening"
        return open_for_real(threads, memory_limit)

    monkeypatch.setattr(core, "sandboxed_connection", slow)
    con = core.opening_connection()  # returns with the opening still held back
    release.set()
    assert con.execute("SELECT 1").fetchall() == [(1,)]
    assert len(opened_on) == 1 and opened_on[0].startswith("duckdb-open")


def test_an_error_opening_it_is_raised_at_its_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """As the database's own fault, never as a row's: DuckDB's InvalidInputException is
    one of the errors a batch is bisected for, record by record."""

    def failing(threads: int = 2, memory_limit: int | None = None) -> duckdb.DuckDBPyConnection:
        raise duckdb.InvalidInputException("no memory for a database")

    monkeypatch.setattr(core, "sandboxed_connection", failing)
    con = core.opening_connection()
    with pytest.raises(
        ResourceExhaustedError,
        match="cannot open the job's DuckDB database: no memory for a database",
    ) as raised:
        con.execute("SELECT 1")
    assert isinstance(raised.value.__cause__, duckdb.InvalidInputException)
    assert not isinstance(raised.value, core._ROW_ERRORS)
    con.interrupt()  # nothing runs on it: no error, no wait


def test_interrupting_it_while_it_opens_neither_waits_nor_reaches_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()
    open_for_real = core.sandboxed_connection

    def slow(threads: int = 2, memory_limit: int | None = None) -> duckdb.DuckDBPyConnection:
        assert release.wait(30)
        return open_for_real(threads, memory_limit)

    monkeypatch.setattr(core, "sandboxed_connection", slow)
    con = core.opening_connection()
    con.interrupt()  # returns at once: the opening is still held back
    release.set()
    assert con.execute("SELECT 1").fetchall() == [(1,)]  # and it was not interrupted
    con.interrupt()  # once open, it reaches the connection (nothing running: no effect)
    assert con.execute("SELECT 2").fetchall() == [(2,)]
