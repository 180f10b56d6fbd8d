"""Checking a whole application: a SELECT the engine would fail on is a validation problem.

DuckDB judges the syntax and the function names, so a broken SELECT is refused at
`velo-sql validate` / `POST /jobs`, at its line:column, instead of at the first batch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from velostream.datasource.registry import connector_catalog
from velostream.errors import SqlValidationError
from velostream.sql import Application
from velostream.sql.check import check_application
from velostream.sql.duckdb_check import _function_names, _has_function
from velostream.sql.model import ConnectorConfig, JobSpec, StatementKind
from velostream.sql.planner import plan_job

DEMO = Path(__file__).resolve().parents[3] / "demo"
PROPS = "WITH ('src.type' = 'memory_source', 'out.type' = 'memory_sink')"


def _stmt(select: str, *, head: str = "CREATE STREAM out AS") -> str:
    return f"{head} {select} EMIT CHANGES {PROPS};"


def _check(text: str) -> Application:
    return check_application(
        text, connectors=connector_catalog(), base_dir=Path.cwd(), source_name="app.sql"
    )


def _problems(text: str) -> list[str]:
    with pytest.raises(SqlValidationError) as caught:
        _check(text)
    return caught.value.problems


def _at(text: str, needle: str, line: int = 1, number: int = 1, name: str = "out") -> str:
    """The expected prefix of a problem at `needle` on `line`, looked for after any SELECT."""
    source_line = text.split("\n")[line - 1]
    column = source_line.index(needle, max(source_line.find("SELECT"), 0)) + 1
    return f"statement {number} ({name}) at {line}:{column}: "


EMPTY = "leaves an empty item: remove the ',' or add the missing item"

# (select, needle where the problem is reported, expected message after the prefix)
BROKEN_SELECTS = [
    # --- syntax sqlglot used to let through (and silently "repair")
    ("SELECT id,, FROM src", ", FROM", 'SQL syntax error at or near ","'),
    ("SELECT id, FROM src", ", FROM", f"',' before FROM {EMPTY}"),
    ("SELECT FROM src", "SELECT", "the SELECT list is empty: name the columns to emit, or *"),
    ("SELECT id FROM src GROUP", "GROUP", 'SQL syntax error at or near "GROUP"'),
    ("SELECT id FROM src ORDER", "ORDER", 'SQL syntax error at or near "ORDER"'),
    (
        "SELECT k, COUNT(*) FROM src GROUP BY k,",
        ", EMIT",
        f"',' before the end of the SELECT {EMPTY}",
    ),
    ("SELECT UPPER(id,) FROM src", ",)", f"',' before ')' {EMPTY}"),
    ("SELECT id FROM src WHERE id IN (1, 2,)", ",)", f"',' before ')' {EMPTY}"),
    ("SELECT 'a' 'b' FROM src", "'b'", "SQL syntax error at or near \"'b'\""),
    # --- syntax sqlglot rejected too, now placed where DuckDB's parser stops
    ("SELECT id FROM src WHERE id = = 1", "= 1", 'SQL syntax error at or near "="'),
    ("SELECT a, b c d FROM src", "d FROM", 'SQL syntax error at or near "d"'),
    ("SELECT CASE WHEN a THEN 1 FROM src", "FROM", 'SQL syntax error at or near "FROM"'),
    # --- functions DuckDB does not have
    ("SELECT id, no_such_fn(id) AS x FROM src", "no_such_fn", "unknown function no_such_fn()"),
    ("SELECT UPPPER(symbol) FROM src", "UPPPER", "unknown function UPPPER() (did you mean upper?)"),
    (
        "SELECT id FROM src WHERE lenght(name) > 3",
        "lenght",
        "unknown function lenght() (did you mean length?)",
    ),
    (
        "SELECT k, COUNT(*) AS n FROM src GROUP BY k HAVING nope(COUNT(*)) > 1",
        "nope",
        "unknown function nope()",
    ),
    (
        "SELECT id, LAG(id) OVER (ROWS WINDOW BUFFER 3 ROWS ORDER BY nope(id)) FROM src",
        "nope",
        "unknown function nope()",
    ),
    (
        "SELECT COUNT(*) AS n FROM src WINDOW TUMBLING(ts, 1m) HAVING nope(COUNT(*)) > 1",
        "nope",
        "unknown function nope()",
    ),
    # --- our own functions, outside the clause that gives them a meaning
    (
        "SELECT id, TUMBLE_START(ts) AS w FROM src",
        "TUMBLE_START",
        "TUMBLE_START needs a WINDOW TUMBLING, SLIDING or SESSION clause",
    ),
]


@pytest.mark.parametrize(
    ("select", "needle", "message"), BROKEN_SELECTS, ids=[b[0] for b in BROKEN_SELECTS]
)
def test_a_broken_select_is_a_problem_at_its_position(
    select: str, needle: str, message: str
) -> None:
    text = _stmt(select)
    assert _problems(text) == [_at(text, needle) + message]


def test_positions_count_lines_comments_and_characters_of_the_file() -> None:
    text = (
        "-- @app: shop\n"
        "CREATE STREAM out AS\n"
        "SELECT id, /* the name */ 'é' AS e,\n"
        "       UPPPER(name) AS n\n"
        "FROM src\n"
        f"EMIT CHANGES {PROPS};"
    )
    assert _problems(text) == [
        _at(text, "UPPPER", line=4) + "unknown function UPPPER() (did you mean upper?)"
    ]
    text = text.replace("UPPPER(name)", "name").replace("'é' AS e,", "'é' AS e, lenght(id),")
    assert _problems(text) == [
        _at(text, "lenght", line=3) + "unknown function lenght() (did you mean length?)"
    ]


def test_a_primary_key_earlier_on_the_line_does_not_move_the_position() -> None:
    # The parser cuts PRIMARY KEY out of the SELECT it plans; the column is the file's.
    text = _stmt(
        "SELECT symbol PRIMARY KEY, COUNT(*) AS n, UPPPER(symbol) AS u FROM src GROUP BY symbol",
        head="CREATE TABLE out AS",
    )
    assert _problems(text) == [
        _at(text, "UPPPER") + "unknown function UPPPER() (did you mean upper?)"
    ]


def test_every_broken_statement_is_reported_at_once() -> None:
    first = _stmt("SELECT id,, FROM src")
    second = _stmt("SELECT no_such_fn(id) FROM src").replace("out", "b")
    assert _problems(first + "\n" + second) == [
        _at(first, ", FROM") + 'SQL syntax error at or near ","',
        _at(first + "\n" + second, "no_such_fn", line=2, number=2, name="b")
        + "unknown function no_such_fn()",
    ]


def test_a_forbidden_function_is_reported_once_by_the_sandbox() -> None:
    [problem] = _problems(_stmt("SELECT getenv('HOME') AS home FROM src"))
    assert "function getenv() is not allowed in job SQL" in problem
    [problem] = _problems(_stmt("SELECT getenvv('HOME') AS home FROM src"))
    assert problem.endswith("unknown function getenvv()"), "never suggest a forbidden function"


def test_the_functions_of_the_spec_and_our_own_are_accepted() -> None:
    scalar = (
        "SELECT CASE WHEN price > 1 THEN 'HIGH' ELSE 'LOW' END AS band, CAST(qty AS DOUBLE) AS q, "
        "COALESCE(sym, '?') AS s, NULLIF(qty, 0) AS nq, sym IS NOT NULL AS has_sym, "
        "qty IN (1, 2) AS small, qty BETWEEN 1 AND 9 AS mid, sym LIKE 'A%' AS a, sym || '!' AS x, "
        "UPPER(sym) AS u, LOWER(sym) AS l, CONCAT(sym, '-') AS c, SUBSTRING(sym, 1, 2) AS sub, "
        "TRIM(sym) AS t, LENGTH(sym) AS len, ABS(qty) AS ab, ROUND(price, 2) AS r, "
        "FLOOR(price) AS f, CEIL(price) AS ce, LEAST(qty, 3) AS le, GREATEST(qty, 3) AS gr, "
        "NOW() AS now, EXTRACT(HOUR FROM ts) AS h, DATE_TRUNC('minute', ts) AS m, "
        "ts + INTERVAL '1' MINUTE AS later FROM src"
    )
    aggregate = (
        "SELECT sym PRIMARY KEY, COUNT(*) AS n, COUNT(qty) AS c, COUNT(DISTINCT qty) AS d, "
        "SUM(qty) AS s, AVG(price) AS a, MIN(price) AS lo, MAX(price) AS hi, STDDEV(price) AS sd, "
        "STDDEV_POP(price) AS sp, FIRST_VALUE(price) AS fv, LAST_VALUE(price) AS lv "
        "FROM src GROUP BY sym"
    )
    window = (
        "SELECT sym, COUNT(*) AS n, TUMBLE_START(ts) AS ws, TUMBLE_END(ts) AS we, "
        "_window_start AS s FROM src GROUP BY sym WINDOW TUMBLING(ts, 1m)"
    )
    rows = "OVER (ROWS WINDOW BUFFER 5 ROWS PARTITION BY sym ORDER BY ts)"
    row_window = (
        f"SELECT id, LAG(price) {rows} AS prev, LEAD(price) {rows} AS nxt, "
        f"ROW_NUMBER() {rows} AS rn, RANK() {rows} AS rk, DENSE_RANK() {rows} AS dr, "
        f"SUM(qty) {rows} AS running FROM src"
    )
    for select in (scalar, aggregate, window, row_window):
        head = "CREATE TABLE out AS" if "PRIMARY KEY" in select else "CREATE STREAM out AS"
        assert [job.name for job in _check(_stmt(select, head=head)).jobs] == ["out"]


@pytest.mark.parametrize(
    "path",
    sorted((DEMO / "quickstart").glob("*.sql")) + sorted((DEMO / "kafka").glob("*.sql")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_the_demo_applications_are_valid(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BROKERS", "localhost:9092")
    app = check_application(
        path.read_text(encoding="utf-8"),
        connectors=connector_catalog(),
        base_dir=path.parent,
        source_name=str(path),
    )
    assert app.jobs


def test_function_names_come_from_duckdb_once_per_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = _function_names()
    assert {"upper", "date_trunc", "stddev_pop", "list_transform"} <= names
    assert "tumble_start" not in names and "uppper" not in names
    assert _function_names() is names

    def no_new_connections(*args: object, **kwargs: object) -> duckdb.DuckDBPyConnection:
        raise AssertionError("validation opened a DuckDB connection")

    monkeypatch.setattr(duckdb, "connect", no_new_connections)
    job = JobSpec(
        name="j",
        statement_name="out",
        kind=StatementKind.STREAM,
        select_sql="SELECT id, UPPER(sym) AS s FROM src WHERE qty > 1",
        emit=None,
        sources=(ConnectorConfig("src", "memory_source", {}),),
        sinks=(ConnectorConfig("out", "memory_sink", {}),),
    )
    for _ in range(3):
        assert plan_job(job).select_sql == ['id AS "id"', 'UPPER(sym) AS "s"']


@pytest.mark.parametrize(
    ("name", "known"),
    [
        *[(name, False) for name in ("nosuch", "uppper", "tumble_start", "cast", "exists")],
        *[(name, True) for name in ("if", "unnest", "collations")],
    ],
)
def test_probing_a_name_agrees_with_the_full_list(name: str, known: bool) -> None:
    """`collations` is only a PRAGMA: binding it fails as for an unknown name."""
    assert _has_function(name) is known
    assert (name in _function_names()) is known


def test_probing_a_name_agrees_with_the_full_list_on_every_function() -> None:
    """Binding `name()` settles most names at once; it must never say no where the
    list says yes (a PRAGMA, say, goes to the list)."""
    assert not [name for name in sorted(_function_names()) if not _has_function(name)]


def test_a_job_calling_known_functions_does_not_list_every_function() -> None:
    """Listing DuckDB's functions costs 20-70 ms a process: a valid job asks only about
    the names it calls."""
    _function_names.cache_clear()
    try:
        app = _check(
            "CREATE STREAM out AS SELECT id, UPPER(sym) AS s, ABS(qty) AS q, "
            f"COALESCE(note, '') AS n FROM src WHERE LENGTH(sym) > 1 {PROPS};"
        )
        assert app.jobs
        assert _function_names.cache_info().currsize == 0
    finally:
        _function_names.cache_clear()


@pytest.fixture
def fresh_checking_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The process's checking DuckDB forgotten (the next check opens one again); each
    open of one is logged with its thread's name."""
    from velostream.sql import duckdb_check

    opened: list[str] = []
    real = duckdb_check.checking_connection

    def logged(threads: int | None = None) -> duckdb.DuckDBPyConnection:
        opened.append(threading.current_thread().name)
        return real(threads)

    monkeypatch.setattr(duckdb_check, "checking_connection", logged)
    duckdb_check._database.cache_clear()
    yield opened
    duckdb_check._EARLY.clear()
    duckdb_check._database.cache_clear()  # the next check opens one again


def test_the_checking_database_opened_early_is_the_one_checks_use(
    fresh_checking_database: list[str],
) -> None:
    from velostream.sql import duckdb_check

    duckdb_check.open_early()
    duckdb_check.open_early()  # a second call starts nothing
    _check(_stmt("SELECT id, upper(name) AS n FROM src"))
    assert fresh_checking_database == ["duckdb-check-open"]
    duckdb_check.open_early()  # nor one after it is open
    assert fresh_checking_database == ["duckdb-check-open"]


def test_an_error_opening_the_checking_database_early_is_raised_at_its_first_use(
    fresh_checking_database: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from velostream.sql import duckdb_check

    def fails(threads: int | None = None) -> duckdb.DuckDBPyConnection:
        raise duckdb.IOException("no room for a database")

    monkeypatch.setattr(duckdb_check, "checking_connection", fails)
    duckdb_check.open_early()
    with pytest.raises(duckdb.IOException, match="no room"):
        duckdb_check.binding_connection()
