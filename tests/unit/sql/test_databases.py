"""Databases opened ahead of need are handed over only to a request with their settings."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest

from velostream.sql import databases
from velostream.sql.databases import checking_config, connect, prestart, sandbox_config


@pytest.fixture(autouse=True)
def _none_started() -> Iterator[None]:
    databases._started.clear()
    yield
    databases._started.clear()


def _setting(con: duckdb.DuckDBPyConnection, name: str) -> object:
    row = con.execute("SELECT current_setting(?)", [name]).fetchone()
    assert row is not None
    return row[0]


def test_a_prestarted_database_goes_to_the_first_request_with_its_settings() -> None:
    prestart(checking_config(1), sandbox_config())
    started = [slot for _, slot in databases._started]
    job = connect(sandbox_config())
    started[1].done.wait()
    assert job is started[1].connection
    assert _setting(job, "threads") == 2
    assert _setting(job, "preserve_insertion_order") is True
    again = connect(sandbox_config())  # taken already: a database of its own
    assert again is not job
    checking = connect(checking_config(1))
    assert checking is started[0].connection
    assert databases._started == []


def test_other_settings_open_a_database_of_their_own() -> None:
    prestart(sandbox_config())
    con = connect(sandbox_config(threads=1, memory_limit=64 * 1024 * 1024))
    assert _setting(con, "threads") == 1
    assert len(databases._started) == 1  # still there for a request that fits


def test_a_prestart_that_failed_is_opened_again_where_it_is_asked_for() -> None:
    bad = {**checking_config(), "threads": -5}
    prestart(bad)
    with pytest.raises(duckdb.Error):
        connect(bad)
    assert databases._started == []


def test_the_sandbox_settings_are_the_engines() -> None:
    config = sandbox_config(threads=3, memory_limit=1024)
    assert config["memory_limit"] == "1024B"
    assert config["enable_external_access"] is False
    assert config["temp_directory"] == ""
    assert "memory_limit" not in sandbox_config()
