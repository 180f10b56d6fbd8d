"""Table sides in the job runtime: loaded before the stream, reloaded on change, their
bad records on the normal error path, and every record accounted for.

Run through the same in-process runtime as `velo-sql run`, on real files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tests.jobserver import read_jsonl
from velostream.cli.run import JobRun, run_application
from velostream.datasource.registry import connector_catalog
from velostream.engine import sandboxed_connection
from velostream.engine.tables import TableSides
from velostream.errors import SourceError
from velostream.observability.manager import ObservabilityManager
from velostream.sql import parse_application
from velostream.sql.model import ConnectorConfig, JobSpec, StatementKind
from velostream.sql.planner import plan_job

TRADES = [
    '{"id": 1, "symbol": "AAPL", "qty": 10}',
    '{"id": 2, "symbol": "MSFT", "qty": 5}',
    '{"id": 3, "symbol": ',  # malformed: a bad stream record
    '{"id": 4, "symbol": "GOOG", "qty": 1}',
    '{"id": 5, "symbol": "DUP", "qty": 2}',
    '{"id": 6, "symbol": null, "qty": 3}',
]
INSTRUMENTS = "symbol,name\nAAPL,Apple\nMSFT,Microsoft,extra\nDUP,First\nDUP,Second\n"


def run(tmp: Path, sql: str, manager: ObservabilityManager) -> list[JobRun]:
    app = parse_application(
        sql, connectors=connector_catalog(), base_dir=tmp, source_name="tables.sql"
    )
    return run_application(app, manager, Console(file=None, quiet=True), tmp / "data")


def files(tmp: Path) -> None:
    (tmp / "trades.jsonl").write_text("\n".join(TRADES) + "\n")
    (tmp / "instruments.csv").write_text(INSTRUMENTS)


def join_app(tmp: Path, join: str, strategy: str = "SendToDLQ") -> str:
    return f"""
CREATE STREAM enriched AS
SELECT t.id, t.symbol, i.name FROM trades t {join} JOIN instruments i ON t.symbol = i.symbol
WITH (
    'trades.type' = 'file_source', 'trades.path' = '{tmp}/trades.jsonl',
    'instruments.type' = 'file_source', 'instruments.path' = '{tmp}/instruments.csv',
    'enriched.type' = 'file_sink', 'enriched.path' = '{tmp}/out.jsonl',
    'enriched.format' = 'jsonl',
    'failure_strategy' = '{strategy}', 'dlq.path' = '{tmp}/dlq.jsonl'
);
"""


def test_bad_rows_on_both_sides_are_dead_lettered_and_counted(
    tmp_path: Path, unthrottled_manager: ObservabilityManager
) -> None:
    files(tmp_path)
    [job] = run(tmp_path, join_app(tmp_path, "LEFT"), unthrottled_manager)
    assert job.state == "completed", job.error
    out = read_jsonl(tmp_path / "out.jsonl")
    # 5 good stream rows; DUP matches two instruments: 6 rows out.
    # A stream row's matches come in no set order; the stream's order is kept.
    assert [r["id"] for r in out] == [1, 2, 4, 5, 5, 6]
    assert sorted((r["id"], r["name"] or "") for r in out) == [
        (1, "Apple"),
        (2, ""),  # its instrument row was bad: no match
        (4, ""),
        (5, "First"),
        (5, "Second"),
        (6, ""),
    ]
    letters = [json.loads(line) for line in (tmp_path / "dlq.jsonl").read_text().splitlines()]
    assert sorted(letter["source"] for letter in letters) == ["instruments", "trades"]
    table_letter = next(x for x in letters if x["source"] == "instruments")
    assert "MSFT,Microsoft,extra" in json.dumps(table_letter)
    stats = job.stats
    # The stream's 6 records and the table's 1 bad record came in; 2 failed.
    assert (stats.records_in, stats.records_failed, stats.dead_letters) == (7, 2, 2)
    assert stats.records_out == 6
    catalog = unthrottled_manager.require_metrics().catalog
    groups = [g.as_dict() for g in catalog.groups(job="enriched")]
    assert any("instruments" in json.dumps(g) for g in groups)


def test_inner_join_filters_stream_rows_without_a_match(
    tmp_path: Path, unthrottled_manager: ObservabilityManager
) -> None:
    files(tmp_path)
    [job] = run(tmp_path, join_app(tmp_path, "INNER", "LogAndContinue"), unthrottled_manager)
    assert job.state == "completed", job.error
    out = read_jsonl(tmp_path / "out.jsonl")
    assert sorted((r["id"], r["name"]) for r in out) == [(1, "Apple"), (5, "First"), (5, "Second")]
    stats = job.stats
    assert (stats.records_in, stats.records_failed, stats.records_out) == (7, 2, 3)


def test_a_missing_table_file_fails_the_job_with_the_table_named(
    tmp_path: Path, unthrottled_manager: ObservabilityManager
) -> None:
    files(tmp_path)
    (tmp_path / "instruments.csv").unlink()
    [job] = run(tmp_path, join_app(tmp_path, "LEFT"), unthrottled_manager)
    assert job.state == "failed"
    assert "instruments" in str(job.error)


def test_an_in_app_table_is_joined_and_read_in_subqueries(
    tmp_path: Path, unthrottled_manager: ObservabilityManager
) -> None:
    files(tmp_path)
    sql = f"""
CREATE TABLE named AS SELECT symbol, UPPER(name) AS name FROM instruments WHERE name <> 'Second'
WITH ('instruments.type' = 'file_source', 'instruments.path' = '{tmp_path}/instruments.csv');

CREATE STREAM known AS
SELECT t.id, n.name FROM trades t JOIN named n ON t.symbol = n.symbol
WHERE t.symbol IN (SELECT symbol FROM named)
  AND t.qty > (SELECT COUNT(*) FROM named WHERE symbol = 'nothing')
WITH (
    'trades.type' = 'file_source', 'trades.path' = '{tmp_path}/trades.jsonl',
    'known.type' = 'file_sink', 'known.path' = '{tmp_path}/known.jsonl', 'known.format' = 'jsonl'
);
"""
    runs = run(tmp_path, sql, unthrottled_manager)
    assert [r.job.name for r in runs] == ["known"]
    [job] = runs
    assert job.state == "completed", job.error
    out = read_jsonl(tmp_path / "known.jsonl")
    assert [(r["id"], r["name"]) for r in out] == [(1, "APPLE"), (5, "FIRST")]
    # The table's bad instrument row failed while the table was computed.
    assert job.stats.records_failed == 2


def _job(tmp: Path) -> JobSpec:
    return JobSpec(
        name="j",
        statement_name="j",
        kind=StatementKind.STREAM,
        select_sql="SELECT t.id, i.name FROM trades t JOIN instruments i ON t.symbol = i.symbol",
        emit=None,
        sources=(
            ConnectorConfig("trades", "memory_source", {}),
            ConnectorConfig("instruments", "file_source", {"path": str(tmp / "instruments.csv")}),
        ),
        sinks=(),
    )


def test_a_table_is_reloaded_when_its_file_changes(tmp_path: Path) -> None:
    files(tmp_path)
    job = _job(tmp_path)
    plan = plan_job(job)
    con = sandboxed_connection()
    sides = TableSides(job, plan, con)
    [first] = sides.load()
    assert (first.rows, len(first.bad)) == (3, 1)
    assert sides.refresh() == []  # unchanged: not read again
    path = tmp_path / "instruments.csv"
    path.write_text("symbol,name\nAAPL,Apple Inc.\n")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    [again] = sides.refresh()
    assert (again.rows, again.bad) == (1, [])
    rows: list[Any] = con.sql(f"SELECT * FROM {plan.tables[0].relation}").fetchall()
    assert rows == [("AAPL", "Apple Inc.")]


def test_a_failed_reload_keeps_the_table(tmp_path: Path) -> None:
    files(tmp_path)
    job = _job(tmp_path)
    plan = plan_job(job)
    con = sandboxed_connection()
    sides = TableSides(job, plan, con)
    sides.load()
    (tmp_path / "instruments.csv").unlink()
    with pytest.raises(SourceError, match="instruments"):
        sides.refresh()
    assert con.sql(f"SELECT COUNT(*) FROM {plan.tables[0].relation}").fetchall() == [(3,)]


def test_a_table_file_of_only_a_header_is_an_empty_table(tmp_path: Path) -> None:
    files(tmp_path)
    (tmp_path / "instruments.csv").write_text("symbol,name\n")
    job = _job(tmp_path)
    plan = plan_job(job)
    con = sandboxed_connection()
    [load] = TableSides(job, plan, con).load()
    assert (load.rows, load.bad) == (0, [])
    assert con.sql(f"SELECT * FROM {plan.tables[0].relation}").columns == ["symbol", "name"]


def test_a_server_job_joins_an_in_app_table_and_reloads_it(tmp_path: Path, harness: Any) -> None:
    stream = tmp_path / "trades.jsonl"
    stream.write_text('{"id": 1, "symbol": "AAPL", "qty": 10}\n')
    table = tmp_path / "instruments.csv"
    table.write_text("symbol,name\nAAPL,Apple\n")
    out = tmp_path / "out.jsonl"
    harness.deploy(
        f"""
CREATE TABLE names AS SELECT symbol, UPPER(name) AS name FROM instruments
WITH ('instruments.type' = 'file_source', 'instruments.path' = '{table}');

CREATE STREAM named AS
SELECT t.id, n.name FROM trades t LEFT JOIN names n ON t.symbol = n.symbol
WITH (
    'trades.type' = 'file_source', 'trades.path' = '{stream}', 'trades.format' = 'jsonl',
    'trades.watch' = 'true', 'trades.polling_interval' = '20ms',
    'named.type' = 'file_sink', 'named.path' = '{out}', 'named.format' = 'jsonl'
);
"""
    )
    assert harness.status("named")["source"] == "trades"
    harness.wait_for(lambda: len(_lines(out)) == 1, what="the first row")
    table.write_text("symbol,name\nAAPL,Apple Inc.\n")
    stat = table.stat()
    os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with stream.open("a") as f:
        f.write('{"id": 2, "symbol": "AAPL", "qty": 10}\n')
    harness.wait_for(lambda: len(_lines(out)) == 2, what="the row after the change")
    assert [(r["id"], r["name"]) for r in _lines(out)] == [(1, "APPLE"), (2, "APPLE INC.")]
    assert harness.state("named") == "running"


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_listagg_over_a_join_refuses_the_stream_record_once(
    tmp_path: Path, unthrottled_manager: ObservabilityManager
) -> None:
    """A stream row matching two table rows that takes its group's LISTAGG past the
    bound is one refused record, dead-lettered with its own position."""
    (tmp_path / "trades.jsonl").write_text(
        '{"id": 1, "symbol": "AAPL", "note": "aaaa"}\n'
        '{"id": 2, "symbol": "DUP", "note": "bbbb"}\n'
        '{"id": 3, "symbol": "DUP", "note": "cccc"}\n'
    )
    (tmp_path / "instruments.csv").write_text(INSTRUMENTS)
    sql = f"""
CREATE TABLE notes AS
SELECT i.name, LISTAGG(t.note, ',') AS notes, COUNT(*) AS n
FROM trades t JOIN instruments i ON t.symbol = i.symbol
GROUP BY i.name
EMIT FINAL
WITH (
    'trades.type' = 'file_source', 'trades.path' = '{tmp_path}/trades.jsonl',
    'instruments.type' = 'file_source', 'instruments.path' = '{tmp_path}/instruments.csv',
    'notes.type' = 'file_sink', 'notes.path' = '{tmp_path}/out.jsonl', 'notes.format' = 'jsonl',
    'failure_strategy' = 'SendToDLQ', 'dlq.path' = '{tmp_path}/dlq.jsonl',
    'listagg.max.bytes' = '4'
);
"""
    [job] = run(tmp_path, sql, unthrottled_manager)
    assert job.state == "completed", job.error
    # id 3 would take both DUP groups (First, Second) past 4 bytes: one record refused.
    letters = [json.loads(line) for line in (tmp_path / "dlq.jsonl").read_text().splitlines()]
    trade_letters = [x for x in letters if x["source"] == "trades"]
    assert [json.loads(x["payload"])["id"] for x in trade_letters] == [3]
    assert trade_letters[0]["position"].endswith(":3"), trade_letters[0]
    # The table's bad line and trade 3: two failed records of the four that came in.
    assert (job.stats.records_in, job.stats.records_failed) == (4, 2)
    assert sorted((r["name"], r["notes"]) for r in read_jsonl(tmp_path / "out.jsonl")) == [
        ("Apple", "aaaa"),
        ("First", "bbbb"),
        ("Second", "bbbb"),
    ]
