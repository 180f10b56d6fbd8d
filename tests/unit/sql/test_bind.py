"""Binding a job's planned queries to its source's columns (issue 13, item 11).

On main `velo-sql validate` said "valid" for an unknown column, an unknown type and a
window without an event time; each then failed in the first batch with a raw DuckDB
Binder Error (one naming the engine's `__rn`). Bound at validation, each is a problem
at the user's line:column, in the user's names.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from velostream.datasource.registry import connector_catalog
from velostream.errors import SqlValidationError
from velostream.sql import Application, JobSpec
from velostream.sql.bind import SourceSchema
from velostream.sql.bind_errors import explain_binder_error, read_problem
from velostream.sql.check import check_application

COLUMNS = pa.schema(
    [
        ("id", pa.int64()),
        ("symbol", pa.string()),
        ("price", pa.float64()),
        ("qty", pa.int64()),
        ("ts", pa.timestamp("s")),
        ("side", pa.string()),
        ("payload", pa.string()),
    ]
)
TRADES = SourceSchema(
    source="src", columns=COLUMNS, origin="as inferred from the first lines of trades.csv"
)
PROPS = "'src.type' = 'memory_source', 'out.type' = 'memory_sink'"


def _app(select: str, *, kind: str = "STREAM", props: str = "") -> str:
    extra = f", {props}" if props else ""
    return f"CREATE {kind} out AS\n{select}\nWITH ({PROPS}{extra});\n"


def _check(text: str, schema: SourceSchema | None = TRADES) -> Application:
    def lookup(job: JobSpec, source: str) -> SourceSchema | None:
        assert source == "src"
        return schema

    return check_application(
        text,
        connectors=connector_catalog(),
        base_dir=Path.cwd(),
        source_name="app.sql",
        schemas=lookup,
    )


def _problem(text: str, schema: SourceSchema | None = TRADES) -> str:
    with pytest.raises(SqlValidationError) as caught:
        _check(text, schema)
    (problem,) = caught.value.problems
    assert "__" not in problem and "Error:" not in problem and "Binder" not in problem
    return problem


def _at(text: str, needle: str) -> str:
    """`at line:column` of the first `needle` on the SELECT's line (line 2)."""
    return f"at 2:{text.split(chr(10))[1].index(needle) + 1}: "


UNKNOWN_COLUMNS = [
    ("SELECT id, prce FROM src", "prce"),
    ("SELECT id FROM src WHERE prce > 1", "prce"),
    ("SELECT src.prce AS p FROM src", "prce"),
    ("SELECT symbol, SUM(prce) AS s FROM src GROUP BY symbol", "prce"),
    ("SELECT prce, COUNT(*) AS n FROM src GROUP BY prce", "prce"),
    ("SELECT COUNT(*) AS n FROM src WHERE prce > 0", "prce"),
    ("SELECT id, LAG(prce) OVER (ROWS WINDOW BUFFER 3 ROWS) AS p FROM src", "prce"),
    (
        "SELECT id, RANK() OVER (ROWS WINDOW BUFFER 3 ROWS PARTITION BY symbol "
        "ORDER BY prce) AS r FROM src",
        "prce",
    ),
    ("SELECT id, SUM(qty) OVER (ROWS WINDOW BUFFER 3 ROWS PARTITION BY sym) AS s FROM src", "sym"),
]


@pytest.mark.parametrize(("select", "needle"), UNKNOWN_COLUMNS)
def test_an_unknown_column_is_placed_at_its_name_with_a_suggestion(
    select: str, needle: str
) -> None:
    kind = "TABLE" if "GROUP BY" in select or "COUNT(*)" in select else "STREAM"
    text = _app(select, kind=kind)
    problem = _problem(text)
    assert _at(text, needle) in problem
    assert f"unknown column {needle} (did you mean " in problem
    assert problem.endswith("source src has id, symbol, price, qty, ts, side, payload")


def test_a_select_alias_in_a_group_by_where_is_explained() -> None:
    text = _app("SELECT symbol, COUNT(*) AS n FROM src WHERE n > 3 GROUP BY symbol", kind="TABLE")
    problem = _problem(text)
    assert _at(text, "n > 3") in problem
    assert "n names an item of the SELECT list, which this clause cannot use" in problem


def test_an_unknown_qualifier_is_neither_the_source_nor_a_column() -> None:
    text = _app("SELECT id FROM src WHERE x.id > 1")
    problem = _problem(text)
    assert _at(text, "x.id") in problem
    assert "unknown name x before a '.'" in problem


@pytest.mark.parametrize(
    "select",
    [
        "SELECT id, CAST(price AS DECIMLA) AS p FROM src",
        "SELECT id, price::DECIMLA AS p FROM src",
        "SELECT symbol, SUM(CAST(price AS DECIMLA)) AS s FROM src GROUP BY symbol",
    ],
)
def test_an_unknown_type_is_placed_with_a_suggestion(select: str) -> None:
    text = _app(select, kind="TABLE" if "GROUP" in select else "STREAM")
    problem = _problem(text)
    assert _at(text, "DECIMLA") in problem
    assert "unknown type DECIMLA (did you mean DECIMAL" in problem


def test_a_window_without_an_event_time_says_how_to_give_it_one() -> None:
    text = _app(
        "SELECT symbol, COUNT(*) AS n FROM src GROUP BY symbol WINDOW TUMBLING(1m)", kind="TABLE"
    )
    problem = _problem(text)
    assert _at(text, "WINDOW") in problem
    assert "WINDOW TUMBLING(1m) has no event time: source src has no _timestamp column" in problem
    assert "set 'event.time.field' to the column that holds each row's time (such as 'ts')" in (
        problem
    )
    assert "or write TUMBLING(ts, 1m)" in problem


def test_an_event_time_field_that_is_not_a_column_is_named() -> None:
    text = _app(
        "SELECT symbol, COUNT(*) AS n FROM src GROUP BY symbol WINDOW TUMBLING(1m)",
        kind="TABLE",
        props="'event.time.field' = 'tss'",
    )
    assert "event.time.field 'tss' is not a column of source src (did you mean ts?)" in (
        _problem(text)
    )
    text = _app(
        "SELECT symbol, COUNT(*) AS n FROM src GROUP BY symbol WINDOW TUMBLING(tss, 1m)",
        kind="TABLE",
    )
    problem = _problem(text)
    assert _at(text, "WINDOW") in problem
    assert "the event time tss of the window is not a column of source src" in problem


def test_an_event_time_of_text_is_refused_with_the_inferred_type() -> None:
    text = _app(
        "SELECT symbol, COUNT(*) AS n FROM src GROUP BY symbol WINDOW TUMBLING(side, 1m)",
        kind="TABLE",
    )
    problem = _problem(text)
    assert "the event time side of the window is VARCHAR, not a TIMESTAMP" in problem
    assert "side is VARCHAR, as inferred from the first lines of trades.csv" in problem


def test_arguments_of_the_wrong_type_name_the_columns_and_how_they_were_typed() -> None:
    texty = SourceSchema(
        source="src",
        columns=pa.schema([("id", pa.int64()), ("price", pa.string())]),
        origin="as inferred from the first lines of t.csv",
        evidence={"price": "'x' at t.csv:3 is not a number"},
    )
    text = _app("SELECT id, price * 2 AS dbl FROM src")
    problem = _problem(text, texty)
    assert _at(text, "price * 2") in problem
    assert problem.endswith(
        "price * 2: no operator * takes (VARCHAR, INTEGER); in source src, price is VARCHAR, "
        "as inferred from the first lines of t.csv ('x' at t.csv:3 is not a number)"
    )
    text = _app("SELECT COUNT(*) AS n, SUM(price) AS s FROM src", kind="TABLE")
    problem = _problem(text, texty)
    assert _at(text, "SUM(price)") in problem
    assert "SUM(price): no function sum takes (VARCHAR); in source src, price is VARCHAR" in (
        problem
    )


VALID = [
    "SELECT * FROM src",
    "SELECT id, price * qty AS notional, CASE WHEN price > 20 THEN 'HIGH' ELSE 'LOW' END AS b "
    "FROM src WHERE price > 11",
    "SELECT price * 2 AS dbl FROM src WHERE dbl > 3",
    "SELECT t.id, t.symbol FROM src t",
    "SELECT id, CAST(price AS DECIMAL(10,2)) AS p, CAST(qty AS VARCHAR) AS q, UPPER(symbol) AS s, "
    "LENGTH(symbol) AS l, TRY_CAST(side AS INTEGER) AS n FROM src",
    "SELECT id, JSON_VALUE(payload, '$.a') AS a, JSON_QUERY(payload, '$.a') AS b FROM src",
    "SELECT id, EXTRACT(HOUR FROM ts) AS h, DATE_TRUNC('minute', ts) AS m, NOW() AS n, "
    "COALESCE(symbol, 'x') AS c, ROUND(price, 1) AS r FROM src",
    "SELECT id FROM src WHERE side = 3",
    "SELECT id, symbol || '-' || side AS k, CONCAT(symbol, side) AS c2, SUBSTRING(symbol, 1, 2) "
    "AS sub, TRIM(side) AS t, ABS(price) AS a, FLOOR(price) AS f, CEIL(price) AS c, "
    "LEAST(price, 5) AS le, GREATEST(price, 5) AS gr, NULLIF(qty, 0) AS nz FROM src",
    "SELECT id, CAST(ts AS DATE) AS d, ts + INTERVAL 1 HOUR AS later FROM src "
    "WHERE symbol IN ('A') AND price BETWEEN 1 AND 100 AND symbol LIKE 'A%' LIMIT 5",
]
VALID_TABLES = [
    "SELECT symbol, COUNT(*) AS n, SUM(qty) AS v, AVG(price) AS ap, MIN(ts) AS first_ts, "
    "MAX(price) AS mx, STDDEV(price) AS sd, STDDEV_POP(qty) AS sp, COUNT(DISTINCT side) AS sides "
    "FROM src GROUP BY symbol",
    "SELECT symbol, COUNT(*) AS n FROM src GROUP BY symbol HAVING n > 1",
    "SELECT symbol, SUM(price * qty) AS total FROM src GROUP BY symbol HAVING SUM(qty) > 2 "
    "ORDER BY total DESC EMIT FINAL",
    "SELECT symbol, COUNT(*) AS n, _window_start AS ws, _window_end AS we FROM src "
    "GROUP BY symbol WINDOW TUMBLING(ts, 1m)",
    "SELECT symbol, COUNT(*) AS n, TUMBLE_START(ts, INTERVAL '1' MINUTE) AS ws FROM src "
    "GROUP BY symbol WINDOW TUMBLING(ts, INTERVAL '1' MINUTE)",
    "SELECT COUNT(*) AS n FROM src",
    "SELECT symbol AS s, FIRST_VALUE(price) AS f, LAST_VALUE(side) AS l FROM src GROUP BY s",
    "SELECT UPPER(symbol) AS s, COUNT(*) AS n FROM src GROUP BY UPPER(symbol)",
    "SELECT qty, SUM(price) * 2 AS twice FROM src WHERE side = 'buy' GROUP BY qty",
]
VALID_ROW_WINDOWS = [
    "SELECT id, LAG(price) OVER (ROWS WINDOW BUFFER 3 ROWS PARTITION BY symbol) AS prev, "
    "LEAD(price, 1, 0) OVER (ROWS WINDOW BUFFER 3 ROWS PARTITION BY symbol) AS nxt FROM src",
    "SELECT id, ROW_NUMBER() OVER (ROWS WINDOW BUFFER 5 ROWS PARTITION BY symbol) AS rn, "
    "RANK() OVER (ROWS WINDOW BUFFER 5 ROWS PARTITION BY symbol ORDER BY price DESC) AS rk "
    "FROM src",
    "SELECT *, SUM(qty) OVER (ROWS WINDOW BUFFER 3 ROWS) AS s3 FROM src WHERE price > 1",
]


@pytest.mark.parametrize("select", VALID + VALID_TABLES + VALID_ROW_WINDOWS)
def test_queries_that_run_bind(select: str) -> None:
    kind = "TABLE" if select in VALID_TABLES else "STREAM"
    assert len(_check(_app(select, kind=kind)).jobs) == 1


def test_the_default_event_time_of_a_kafka_source_binds() -> None:
    kafka = SourceSchema(
        source="src",
        columns=pa.schema(
            [("value", pa.string()), ("_key", pa.string()), ("_timestamp", pa.timestamp("ms"))]
        ),
        origin="as a topic of 'string' values has them",
    )
    text = _app(
        "SELECT _key, COUNT(*) AS n FROM src GROUP BY _key WINDOW TUMBLING(1m)", kind="TABLE"
    )
    assert len(_check(text, kafka).jobs) == 1


NAMES_ONLY = SourceSchema(
    source="src",
    columns=pa.schema([("id", pa.string()), ("price", pa.string()), ("ts", pa.string())]),
    origin="as named in the header of t.csv (no row yet to type them)",
    typed=False,
)


def test_with_names_only_types_are_not_judged_but_names_are() -> None:
    select = (
        "SELECT id, price * 2 AS dbl, ABS(price) AS a, DATE_TRUNC('minute', ts) AS m, "
        "price > 3 AS big FROM src"
    )
    assert len(_check(_app(select), NAMES_ONLY).jobs) == 1
    text = _app("SELECT id, price * 2 AS dbl, prce FROM src")
    assert "unknown column prce (did you mean price?): source src has id, price, ts" in (
        _problem(text, NAMES_ONLY)
    )
    text = _app("SELECT id, CAST(price AS DECIMLA) AS p FROM src")
    assert "unknown type DECIMLA" in _problem(text, NAMES_ONLY)


def test_without_columns_only_types_and_functions_are_judged() -> None:
    select = (
        "SELECT whatever, payload.x AS px, CAST(price AS DECIMAL(10, 2)) AS p FROM src "
        "WHERE anything > 1"
    )
    assert len(_check(_app(select), None).jobs) == 1
    text = _app("SELECT whatever, CAST(price AS INTEGR) AS p FROM src")
    problem = _problem(text, None)
    assert _at(text, "INTEGR") in problem
    assert "unknown type INTEGR (did you mean INTEGER" in problem
    for select in [
        "SELECT k, COUNT(*) AS n FROM src GROUP BY k WINDOW TUMBLING(1m)",
        "SELECT K, k, COUNT(*) AS n FROM src GROUP BY K, k "
        "WINDOW TUMBLING(to_timestamp(ms / 1000), 1m)",
    ]:
        assert len(_check(_app(select, kind="TABLE"), None).jobs) == 1


def test_columns_duckdb_cannot_take_are_not_judged() -> None:
    twice = SourceSchema(
        source="src",
        columns=pa.schema([("id", pa.int64()), ("id", pa.string())]),
        origin="as inferred from the first lines of t.csv",
    )
    assert len(_check(_app("SELECT id FROM src"), twice).jobs) == 1


def test_every_job_of_an_application_is_bound() -> None:
    text = _app("SELECT prce FROM src") + _app("SELECT CAST(id AS NUMBR) AS n FROM src").replace(
        "out", "out2"
    )
    with pytest.raises(SqlValidationError) as caught:
        _check(text)
    first, second = caught.value.problems
    assert first.startswith("statement 1 (out) at 2:8: unknown column prce")
    assert second.startswith("statement 2 (out2) at 5:")
    assert "unknown type NUMBR" in second


def _duckdb_error(query: str) -> duckdb.Error:
    con = duckdb.connect()
    con.register("__batch", pa.table({"price": pa.array([1.0]), "__rn": pa.array([0])}))
    with pytest.raises(duckdb.Error) as caught:
        con.sql(query)
    return caught.value


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            "SELECT prce FROM __batch",
            "unknown column prce (did you mean price?): the input has price",
        ),
        (
            "SELECT CAST(price AS DECIMLA) FROM __batch",
            "unknown type DECIMLA (did you mean DECIMAL",
        ),
        ("SELECT nosuch(price) FROM __batch", "unknown function nosuch()"),
        ("SELECT upper(price) FROM __batch", "no function upper takes (DOUBLE)"),
    ],
)
def test_a_run_time_bind_error_is_said_in_our_words(query: str, expected: str) -> None:
    said = explain_binder_error(_duckdb_error(query), ["price", "__rn"])
    assert said is not None and said.startswith(expected)
    assert "__rn" not in said and "Error" not in said


def test_other_errors_are_not_bind_errors() -> None:
    assert explain_binder_error(ValueError("x"), ["a"]) is None
    con = duckdb.connect()
    with pytest.raises(duckdb.Error) as caught:
        con.sql("SELECT CAST('x' AS INTEGER)").fetchall()
    assert explain_binder_error(caught.value, ["a"]) is None
    assert read_problem(caught.value).what == "other"
