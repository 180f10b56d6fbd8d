"""Row windows: OVER (ROWS WINDOW BUFFER N ROWS [PARTITION BY ...] [ORDER BY ...])."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from tests.unit.engine.harness import run_job
from velostream.engine import RowWindowExecutor

# Partitions: a (rows 0, 2, 3, 6), b (1, 4, 7), c (5).
TICKS = pa.table(
    {
        "id": pa.array(range(8), pa.int64()),
        "k": ["a", "b", "a", "a", "b", "c", "a", "b"],
        "v": pa.array([10, 20, 30, -5, None, 60, 70, 80], pa.int64()),
        "f": [1.5, None, 2.5, 0.0, -1.0, 3.0, 2.5, 1.0],
    }
)


def buffer(n: int, partition: str = "", order: str = "") -> str:
    over = f"ROWS WINDOW BUFFER {n} ROWS"
    if partition:
        over += f" PARTITION BY {partition}"
    if order:
        over += f" ORDER BY {order}"
    return f"OVER ({over})"


CASES: list[tuple[str, list[Any]]] = [
    (f"LAG(v) {buffer(3, 'k')}", [None, None, 10, 30, 20, None, -5, None]),
    (f"LAG(v, 2, -1) {buffer(3, 'k')}", [-1, -1, -1, 10, -1, -1, 30, 20]),
    (f"LAG(v) {buffer(1)}", [None, 10, 20, 30, -5, None, 60, 70]),
    (f"LAG(k, 3) {buffer(3)}", [None, None, None, "a", "b", "a", "a", "b"]),
    (f"ROW_NUMBER() {buffer(2, 'k')}", [1, 1, 2, 3, 2, 1, 4, 3]),
    (f"ROW_NUMBER() {buffer(2)}", [1, 2, 3, 4, 5, 6, 7, 8]),
    (f"SUM(v) {buffer(2, 'k')}", [10, 20, 40, 25, 20, 60, 65, 80]),
    (f"SUM(v) {buffer(3)}", [10, 30, 60, 45, 25, 55, 130, 210]),
    (
        f"AVG(f) {buffer(3)}",
        [1.5, 1.5, 2.0, 1.25, 0.5, pytest.approx(2 / 3), 1.5, pytest.approx(6.5 / 3)],
    ),
    (f"MIN(v) {buffer(3, 'k')}", [10, 20, 10, -5, 20, 60, -5, 20]),
    (f"MAX(v) {buffer(2)}", [10, 20, 30, 30, -5, 60, 70, 80]),
    (f"COUNT(*) {buffer(3, 'k')}", [1, 1, 2, 3, 2, 1, 3, 3]),
    (f"COUNT(v) {buffer(3, 'k')}", [1, 1, 2, 3, 1, 1, 3, 2]),
    (f"COUNT(f) {buffer(2)}", [1, 1, 1, 2, 2, 2, 2, 2]),
    (f"v - LAG(v) {buffer(2, 'k')}", [None, None, 20, -35, None, None, 75, None]),
]


@pytest.mark.parametrize(("call", "expected"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_row_window_function(call: str, expected: list[Any], batch_size: int) -> None:
    run = run_job(f"SELECT id, {call} AS w FROM t", TICKS, batch_size=batch_size)
    assert run.column("id") == list(range(8)), "rows leave in arrival order"
    assert run.column("w") == expected
    assert run.bad == []


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_lead_is_null_at_the_end_of_each_partition(batch_size: int) -> None:
    run = run_job(
        f"SELECT id, LEAD(v) {buffer(3, 'k')} AS nxt, LEAD(id, 2) {buffer(3)} AS id2 FROM t",
        TICKS,
        batch_size=batch_size,
    )
    by_id = {row["id"]: row for row in run.rows}
    assert [by_id[i]["nxt"] for i in range(8)] == [30, None, -5, 70, 80, None, None, None]
    assert [by_id[i]["id2"] for i in range(8)] == [2, 3, 4, 5, 6, 7, None, None]
    ids = run.column("id")
    for key in "abc":
        part = [i for i in ids if TICKS.column("k")[i].as_py() == key]
        assert part == sorted(part), "rows of a partition keep their order"


def test_lead_waits_for_the_following_row_of_its_partition() -> None:
    run = run_job(f"SELECT id, LEAD(v) {buffer(2, 'k')} AS nxt FROM t", TICKS, batch_size=1)
    emitted = [[row["id"] for row in t.to_pylist()] for t in run.outputs]
    # row 0 (a) leaves when row 2 (the next a) arrives; row 1 (b) when row 4 arrives; the
    # last row of each partition leaves when the source ends
    assert emitted == [[], [], [0], [2], [1], [], [3], [4], [5, 6, 7]]
    assert run.outputs[-1].to_pylist() == [
        {"id": 5, "nxt": None},
        {"id": 6, "nxt": None},
        {"id": 7, "nxt": None},
    ]


def test_row_number_continues_across_many_batches() -> None:
    table = pa.table({"k": ["x", "y"] * 50})
    run = run_job(f"SELECT k, ROW_NUMBER() {buffer(1, 'k')} AS n FROM t", table, batch_size=7)
    assert run.column("n") == [i // 2 + 1 for i in range(100)]


SCORES = pa.table({"s": pa.array([5, 3, 5, 7, 3, 3, 9, 9, 1], pa.int64())})


@pytest.mark.parametrize(
    ("order", "ranks", "dense"),
    [
        ("s DESC", [1, 2, 1, 1, 3, 2, 1, 1, 3], [1, 2, 1, 1, 3, 2, 1, 1, 2]),
        ("s", [1, 1, 2, 3, 1, 1, 3, 2, 1], [1, 1, 2, 3, 1, 1, 2, 2, 1]),
    ],
)
@pytest.mark.parametrize("batch_size", [1, 2, 9])
def test_rank_and_dense_rank_among_the_last_n_rows(
    order: str, ranks: list[int], dense: list[int], batch_size: int
) -> None:
    run = run_job(
        f"SELECT s, RANK() {buffer(3, order=order)} AS r, "
        f"DENSE_RANK() {buffer(3, order=order)} AS d FROM t",
        SCORES,
        batch_size=batch_size,
    )
    assert run.column("r") == ranks
    assert run.column("d") == dense


@pytest.mark.parametrize(
    ("order", "ranks"),
    [
        ("f", [1, 2, 1, 2, 3, 2, 1]),  # NULLS LAST, as DuckDB sorts by default
        ("f DESC", [1, 2, 2, 1, 3, 1, 2]),
        ("f NULLS FIRST", [1, 1, 2, 3, 1, 3, 2]),
        ("f DESC NULLS FIRST", [1, 1, 3, 2, 1, 2, 3]),
    ],
)
def test_rank_places_nulls_like_duckdb(order: str, ranks: list[int]) -> None:
    table = pa.table({"f": [2.0, None, 1.0, 2.0, None, 3.0, 1.0]})
    run = run_job(f"SELECT RANK() {buffer(3, order=order)} AS r FROM t", table, batch_size=2)
    assert run.column("r") == ranks


def test_rank_within_partitions() -> None:
    table = pa.table({"k": ["a", "b", "a", "b", "a"], "s": [1, 9, 3, 8, 2]})
    run = run_job(
        f"SELECT k, s, RANK() {buffer(2, 'k', 's DESC')} AS r FROM t", table, batch_size=2
    )
    assert run.column("r") == [1, 1, 1, 2, 2]


def test_where_filters_rows_before_they_enter_the_buffer() -> None:
    run = run_job(
        f"SELECT id, LAG(id) {buffer(2)} AS prev, COUNT(*) {buffer(2)} AS n FROM t WHERE k <> 'b'",
        TICKS,
        batch_size=3,
    )
    assert run.rows == [
        {"id": 0, "prev": None, "n": 1},
        {"id": 2, "prev": 0, "n": 2},
        {"id": 3, "prev": 2, "n": 2},
        {"id": 5, "prev": 3, "n": 2},
        {"id": 6, "prev": 5, "n": 2},
    ]


def test_limit_with_a_row_window() -> None:
    run = run_job(f"SELECT id, LAG(id) {buffer(1)} AS prev FROM t LIMIT 3", TICKS, batch_size=2)
    assert run.rows == [
        {"id": 0, "prev": None},
        {"id": 1, "prev": 0},
        {"id": 2, "prev": 1},
    ]
    assert run.executor is not None and run.executor.limit_reached


def test_select_star_with_a_row_window() -> None:
    run = run_job(f"SELECT *, LAG(v) {buffer(1)} AS prev FROM t", TICKS.slice(0, 3), batch_size=2)
    assert run.columns == [*TICKS.column_names, "prev"]
    assert run.column("prev") == [None, 10, 20]


def test_the_buffer_keeps_only_the_last_rows_of_each_partition() -> None:
    table = pa.table({"k": ["a", "b", "c"] * 400, "v": list(range(1200))})
    run = run_job(
        f"SELECT v, SUM(v) {buffer(4, 'k')} AS s, ROW_NUMBER() {buffer(4, 'k')} AS n FROM t",
        table,
        batch_size=100,
    )
    assert run.column("s")[-1] == 1199 + 1196 + 1193 + 1190
    assert run.column("n")[-1] == 400
    executor = run.executor
    assert isinstance(executor, RowWindowExecutor)
    history = executor._history
    assert history is not None and history.num_rows == 3 * 4
