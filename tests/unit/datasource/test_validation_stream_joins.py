"""Validation of stream–stream joins (`'join.timeout'`): both sides' columns are bound,
each side must have the event time, and what cannot be honoured is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from velostream.datasource.validation import check_application
from velostream.errors import SqlValidationError
from velostream.sql import Application
from velostream.sql.plan_union import stream_sources


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "orders.csv").write_text("id,customer,ts\n1,c1,1000\n2,c2,2000\n")
    (tmp_path / "payments.csv").write_text("pid,customer,amount,ts\n7,c1,9.5,1500\n")
    return tmp_path


def _app(tmp: Path, select: str, extra: str = "'join.timeout' = '5s',") -> str:
    return (
        f"CREATE STREAM out AS\n{select}\nWITH (\n"
        f"'orders.type' = 'file_source', 'orders.path' = '{tmp}/orders.csv',\n"
        f"'payments.type' = 'file_source', 'payments.path' = '{tmp}/payments.csv',\n"
        f"'payments.watch' = 'true', {extra}\n"
        f"'event.time.field' = 'ts',\n"
        f"'out.type' = 'file_sink', 'out.path' = '{tmp}/out.csv');\n"
    )


JOIN = "FROM orders o LEFT JOIN payments p ON o.customer = p.customer"


def _check(text: str) -> Application:
    return check_application(text, base_dir=Path.cwd(), source_name="app.sql")


def _problem(text: str) -> str:
    with pytest.raises(SqlValidationError) as caught:
        _check(text)
    (problem,) = caught.value.problems
    return problem


def test_a_stream_join_validates_and_streams_both_sides(files: Path) -> None:
    app = _check(_app(files, f"SELECT o.id, p.pid, p.amount {JOIN} WHERE p.amount IS NULL"))
    (job,) = app.jobs
    assert [s.name for s in stream_sources(job)] == ["orders", "payments"]


@pytest.mark.parametrize(
    ("select", "extra", "expected"),
    [
        (
            f"SELECT o.id, p.amont {JOIN}",
            "'join.timeout' = '5s',",
            "unknown column p.amont (did you mean amount?)",
        ),
        (
            f"SELECT o.id {JOIN}",
            "",
            "payments is a watched file (unbounded): a stream–stream join needs 'join.timeout'",
        ),
        (
            f"SELECT o.id {JOIN}",
            "'join.timeout' = 'soon',",
            "join.timeout 'soon' is not a duration",
        ),
        (f"SELECT o.id {JOIN}", "'join.timeout' = '0s',", "join.timeout must be above zero"),
        (
            "SELECT o.id FROM orders o SEMI JOIN payments p ON o.customer = p.customer",
            "'join.timeout' = '5s',",
            "SEMI JOIN is not supported: use [INNER | LEFT | RIGHT | FULL [OUTER]] JOIN",
        ),
    ],
)
def test_problems_are_one_line(files: Path, select: str, extra: str, expected: str) -> None:
    problem = _problem(_app(files, select, extra))
    assert expected in problem
    assert "\n" not in problem and "Binder" not in problem


def test_a_side_without_the_event_time_is_refused(files: Path) -> None:
    text = _app(files, f"SELECT o.id {JOIN}").replace("'ts'", "'amount'")
    problem = _problem(text)
    assert "orders has no event-time column amount" in problem
