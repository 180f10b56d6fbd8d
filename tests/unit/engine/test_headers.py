"""Kafka header functions on batches: HEADER, HAS_HEADER, HEADER_KEYS and SET_HEADER.

The batches carry `_headers` as a Kafka source makes it (a list of key/bytes structs
per row); the output's `_headers` is what the Kafka sink writes as headers.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pytest

from tests.unit.engine.harness import LineRefs
from velostream.datasource.kafka.codec import HEADERS_TYPE, encode
from velostream.datasource.traits import SourceBatch
from velostream.engine import build_executor
from velostream.sql.model import ConnectorConfig, EmitMode, JobSpec, StatementKind
from velostream.sql.planner import plan_job

HEADERS = [
    [("trace", b"t1"), ("bin", b"\xff\x00"), ("trace", b"t1b")],
    None,
    [],
    [("trace", None), ("it's", "é".encode())],
]


def batch() -> pa.Table:
    return pa.table(
        {
            "id": pa.array([1, 2, 3, 4], pa.int64()),
            "k": ["a", "b", "a", "b"],
            "_headers": pa.array(HEADERS, HEADERS_TYPE),
        }
    )


def run(sql: str, emit: EmitMode | None = None, sizes: int = 4) -> list[dict[str, Any]]:
    job = JobSpec(
        name="job",
        statement_name="out",
        kind=StatementKind.STREAM,
        select_sql=sql,
        emit=emit,
        sources=(ConnectorConfig("t", "kafka_source", {}),),
        sinks=(ConnectorConfig("out", "kafka_sink", {}),),
    )
    executor = build_executor(plan_job(job), job)
    table, rows = batch(), []
    for offset in range(0, table.num_rows, sizes):
        out = executor.process(SourceBatch(table.slice(offset, sizes), LineRefs(offset)))
        assert out.bad == []
        rows += out.table.to_pylist()
    final = executor.finish()
    return rows + ([] if final is None else final.to_pylist())


def headers(row: dict[str, Any]) -> list[tuple[str, bytes | None]]:
    return [(h["key"], h["value"]) for h in row["_headers"]]


def test_header_reads() -> None:
    rows = run(
        "SELECT id, HEADER('trace') AS tr, HEADER('it''s') AS q, HEADER('bin') AS b, "
        "HAS_HEADER('trace') AS has, HEADER_KEYS() AS keys FROM t"
    )
    assert [r["tr"] for r in rows] == ["t1b", None, None, None]  # the last of a key; null
    assert [r["q"] for r in rows] == [None, None, None, "é"]
    assert [r["has"] for r in rows] == [True, False, False, True]  # a null value is there
    assert [r["keys"] for r in rows] == ["trace,bin", "", "", "trace,it's"]
    # not UTF-8: DuckDB's text form of the bytes
    assert rows[0]["b"] == "\\xFF\\x00"
    assert "_headers" not in rows[0]


def test_header_reads_filter_and_group() -> None:
    rows = run("SELECT id FROM t WHERE HAS_HEADER('trace') AND HEADER('trace') IS NULL")
    assert rows == [{"id": 4}]
    rows = run(
        "SELECT HAS_HEADER('trace') AS h, COUNT(*) AS n FROM t GROUP BY HAS_HEADER('trace') "
        "ORDER BY h",
        EmitMode.FINAL,
        sizes=1,
    )
    assert rows == [{"h": False, "n": 2}, {"h": True, "n": 2}]


@pytest.mark.parametrize("sizes", [1, 3, 4])
def test_set_header_of_each_type(sizes: int) -> None:
    rows = run(
        "SELECT id, SET_HEADER('n', id * 2) AS n, SET_HEADER('f', id / 2) AS f, "
        "SET_HEADER('b', id > 2) AS b, SET_HEADER('none', NULL) AS z, "
        "SET_HEADER('ts', TIMESTAMP '2024-10-27 14:30:45') AS ts, "
        "SET_HEADER('copy', HEADER('trace')) AS c, "
        "SET_HEADER('raw', list_filter(_headers, lambda h: h.key = 'bin')[1].value) AS raw "
        "FROM t",
        sizes=sizes,
    )
    assert rows[0]["n"] == 2 and rows[0]["raw"] == b"\xff\x00"  # the column keeps its type
    assert rows[0]["ts"] == dt.datetime(2024, 10, 27, 14, 30, 45)
    assert headers(rows[0]) == [
        ("n", b"2"),
        ("f", b"0.5"),
        ("b", b"false"),
        ("none", None),
        ("ts", b"2024-10-27 14:30:45.000000"),
        ("copy", b"t1b"),
        ("raw", b"\xff\x00"),  # bytes as they are
    ]
    assert headers(rows[3])[2:6:3] == [("b", b"true"), ("copy", None)]


def test_set_header_of_a_nested_value_is_its_duckdb_text() -> None:
    rows = run("SELECT SET_HEADER('l', [id, id + 1]) AS l, SET_HEADER('s', {'a': k}) AS s FROM t")
    assert headers(rows[0]) == [("l", b"[1, 2]"), ("s", b"{'a': a}")]


def test_set_header_replaces_a_selected_header_and_keeps_the_others() -> None:
    rows = run("SELECT _headers, id, SET_HEADER('trace', 'new') FROM t")
    assert headers(rows[0]) == [("bin", b"\xff\x00"), ("trace", b"new")]
    assert headers(rows[1]) == [("trace", b"new")]
    assert headers(rows[3]) == [("it's", "é".encode()), ("trace", b"new")]
    assert rows[0]["col2"] == "new"


@pytest.mark.parametrize("sizes", [1, 4])
def test_set_header_of_final_groups(sizes: int) -> None:
    rows = run(
        "SELECT k, SET_HEADER('n', COUNT(*)) AS n FROM t GROUP BY k ORDER BY k",
        EmitMode.FINAL,
        sizes=sizes,
    )
    assert [(r["k"], headers(r)) for r in rows] == [("a", [("n", b"2")]), ("b", [("n", b"2")])]


def test_headers_dropped_by_list_filter_are_not_written() -> None:
    rows = run(
        "SELECT id, list_filter(_headers, lambda h: h.key <> 'trace') AS _headers, "
        "SET_HEADER('x', 'y') AS x FROM t"
    )
    assert headers(rows[0]) == [("bin", b"\xff\x00"), ("x", b"y")]
    assert headers(rows[3]) == [("it's", "é".encode()), ("x", b"y")]


def test_set_header_over_groups_and_row_windows() -> None:
    rows = run(
        "SELECT k, SET_HEADER('count', COUNT(*)) AS c, LISTAGG(HEADER('trace'), '|') AS l "
        "FROM t GROUP BY k",
        EmitMode.CHANGES,
        sizes=1,
    )
    assert [headers(r) for r in rows] == [[("count", b"1")], [("count", b"1")]] + [
        [("count", b"2")]
    ] * 2
    assert rows[-2]["l"] == "t1b"
    rows = run(
        "SELECT id, SET_HEADER('prev', LAG(id) OVER (ROWS WINDOW BUFFER 2 ROWS PARTITION BY k)) "
        "AS p FROM t",
        sizes=1,
    )
    assert [headers(r) for r in rows] == [
        [("prev", None)],
        [("prev", None)],
        [("prev", b"1")],
        [("prev", b"2")],
    ]


def test_the_kafka_codec_writes_set_headers_and_leaves_them_out_of_the_value() -> None:
    rows = run("SELECT id, SET_HEADER('x-id', id) AS x FROM t")
    table = pa.Table.from_pylist(rows, schema=None)
    messages = encode(table, "json")
    assert messages.values[0] == b'{"id":1,"x":1}'
    assert messages.headers is not None and messages.headers[0] == [("x-id", b"1")]
