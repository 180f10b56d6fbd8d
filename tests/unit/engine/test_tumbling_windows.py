"""`TumblingWindows` on its own: window bounds, the watermark, late rows, closed windows."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from tests.unit.engine.harness import LineRefs
from velostream.engine.tumbling import LATE_MESSAGE, TumblingWindows
from velostream.errors import ErrorKind, Stage
from velostream.sql.planner import EVENT_TIME, ROW, WINDOW_END, WINDOW_START, TumblingWindow

MINUTE = 60_000
T0 = datetime(2024, 1, 1, 12, 0, 0)


def windows(ooo_ms: int = 0, *, dead_letter: bool = False) -> TumblingWindows:
    return TumblingWindows(
        TumblingWindow(size_ms=MINUTE, time_sql="ts"),
        out_of_orderness_ms=ooo_ms,
        late_to_dead_letter=dead_letter,
    )


def pre(event_times: pa.Array, first_row: int = 0) -> pa.Table:
    """A pre-query's rows: the event time and each row's index in its batch."""
    rows = np.arange(first_row, first_row + len(event_times), dtype=np.int64)
    return pa.table({EVENT_TIME: event_times, ROW: pa.array(rows)})


def millis(*seconds: float) -> pa.Array:
    return pa.array([int(s * 1000) for s in seconds], pa.int64())


def test_epoch_milliseconds_get_epoch_millisecond_bounds() -> None:
    got = windows().assign(pre(millis(0, 59.999, 60, 125)), LineRefs(0))
    assert got.bad == [] and got.late == []
    assert got.rows.column(WINDOW_START).type == pa.int64()
    assert got.rows.column(WINDOW_START).to_pylist() == [0, 0, MINUTE, 2 * MINUTE]
    assert got.rows.column(WINDOW_END).to_pylist() == [MINUTE, MINUTE, 2 * MINUTE, 3 * MINUTE]
    assert got.rows.column(ROW).to_pylist() == [0, 1, 2, 3]


def test_timestamps_get_timestamp_bounds() -> None:
    times = pa.array([T0 + timedelta(seconds=s) for s in (5, 70)], pa.timestamp("us"))
    w = windows()
    got = w.assign(pre(times), LineRefs(0))
    assert got.rows.column(WINDOW_START).type == pa.timestamp("ms")
    assert got.rows.column(WINDOW_START).to_pylist() == [T0, T0 + timedelta(minutes=1)]
    assert got.rows.column(WINDOW_END).to_pylist() == [
        T0 + timedelta(minutes=1),
        T0 + timedelta(minutes=2),
    ]
    assert w.time_is_timestamp


# Arrival order: 50s comes after 61s, 5s after 130s (as in test_tumbling).
SECONDS = [0, 10, 59, 61, 50, 130, 5, 185]


@pytest.mark.parametrize(("ooo_ms", "late_rows"), [(0, [4, 6]), (15_000, [6]), (200_000, [])])
@pytest.mark.parametrize("cuts", [[8], [1] * 8, [3, 3, 2], [5, 3]])
def test_a_row_is_late_against_the_watermark_before_it_wherever_batches_are_cut(
    ooo_ms: int, late_rows: list[int], cuts: list[int]
) -> None:
    w = windows(ooo_ms, dead_letter=True)
    kept, late, offset = [], [], 0
    for size in cuts:
        got = w.assign(pre(millis(*SECONDS[offset : offset + size])), LineRefs(offset))
        kept += [offset + rn for rn in got.rows.column(ROW).to_pylist()]
        late += [r.ref for r in got.late]
        offset += size
    assert late == [f"t.csv:{rn + 2}" for rn in late_rows]
    assert kept == [rn for rn in range(len(SECONDS)) if rn not in late_rows]
    assert w.late_records == len(late_rows)
    assert w.max_event_ms == 185_000


def test_a_window_ending_at_the_watermark_has_closed() -> None:
    w = windows()
    got = w.assign(pre(millis(60, 59.999, 60)), LineRefs(0))
    assert got.rows.column(ROW).to_pylist() == [0, 2]  # [0s, 60s) ended at the watermark
    assert w.late_records == 1


def test_the_watermark_never_goes_back() -> None:
    w = windows()
    w.assign(pre(millis(130)), LineRefs(0))
    w.assign(pre(millis(5)), LineRefs(1))  # late, and no lower max for what follows
    assert w.max_event_ms == 130_000
    got = w.assign(pre(millis(10)), LineRefs(2))
    assert got.rows.num_rows == 0 and w.late_records == 2


def test_the_first_row_is_never_late_whatever_the_allowance() -> None:
    # No event time seen yet: the watermark is the lowest possible, not one that wrapped.
    w = windows(ooo_ms=MINUTE)
    got = w.assign(pre(millis(-3600, 0)), LineRefs(0))
    assert got.rows.num_rows == 2 and w.late_records == 0


def test_late_rows_are_dropped_and_counted_by_default() -> None:
    w = windows()
    got = w.assign(pre(millis(130, 5, 140)), LineRefs(0))
    assert got.late == [] and got.bad == []
    assert got.rows.column(ROW).to_pylist() == [0, 2]
    assert w.late_records == 1


def test_late_rows_go_to_the_dead_letter_queue_with_their_reference() -> None:
    w = windows(dead_letter=True)
    got = w.assign(pre(millis(130, 5, 140, 1)), LineRefs(10))
    assert [(r.ref, r.raw) for r in got.late] == [
        ("t.csv:13", b"line 13"),
        ("t.csv:15", b"line 15"),
    ]
    assert {(r.stage, r.kind, r.message) for r in got.late} == {
        (Stage.PROCESS, ErrorKind.EXECUTION, LATE_MESSAGE)
    }
    assert got.bad == []
    assert w.late_records == 2


def test_a_null_event_time_is_a_bad_row_and_does_not_move_the_watermark() -> None:
    w = windows()
    got = w.assign(pre(pa.array([1000, None, 2000], pa.int64())), LineRefs(0))
    assert [(r.ref, r.kind, r.stage) for r in got.bad] == [
        ("t.csv:3", ErrorKind.TYPE, Stage.PROCESS)
    ]
    assert "NULL" in got.bad[0].message
    assert got.rows.column(ROW).to_pylist() == [0, 2]
    assert w.late_records == 0 and w.max_event_ms == 2000


def test_an_event_time_of_another_type_makes_every_row_bad() -> None:
    w = windows()
    got = w.assign(pre(pa.array(["a", "b"])), LineRefs(0))
    assert got.rows.num_rows == 0 and got.late == []
    assert [r.ref for r in got.bad] == ["t.csv:2", "t.csv:3"]
    assert all(r.kind == ErrorKind.TYPE and "expected a timestamp" in r.message for r in got.bad)
    assert w.max_event_ms is None and w.closed() is None


@pytest.mark.parametrize("timestamps", [False, True])
def test_closed_selects_the_windows_the_watermark_has_reached(timestamps: bool) -> None:
    w = windows(ooo_ms=10_000)
    assert w.closed() is None  # nothing seen: nothing has closed
    seconds = [5, 70, 130]
    times = (
        pa.array([T0 + timedelta(seconds=s) for s in seconds], pa.timestamp("ms"))
        if timestamps
        else millis(*seconds)
    )
    state = w.assign(pre(times), LineRefs(0)).rows  # watermark: 130s - 10s = 120s
    closed = w.closed()
    assert closed is not None
    con = duckdb.connect()
    con.register("state", state)
    ends = con.sql(f"SELECT {WINDOW_END} FROM state WHERE {closed}").to_arrow_table()
    # the windows ending at 60s and 120s have closed; the one ending at 180s is open
    assert ends.num_rows == 2


def test_windows_come_first_in_the_output_order() -> None:
    assert TumblingWindows.in_time_order(["s DESC"]) == [WINDOW_START, "s DESC"]
    assert TumblingWindows.in_time_order([WINDOW_START, "k"]) == [WINDOW_START, "k"]


def test_a_restored_snapshot_carries_the_watermark_and_the_count() -> None:
    w = windows(dead_letter=True)
    w.assign(pre(millis(0, 130, 5)), LineRefs(0))
    state = w.snapshot()
    assert state == {"max_event_ms": 130_000, "time_is_timestamp": False, "late_records": 1}
    again = windows(dead_letter=True)
    again.restore(state)
    got = again.assign(pre(millis(10, 125)), LineRefs(3))
    assert [r.ref for r in got.late] == ["t.csv:5"]  # 10s is late after 130s was seen
    assert again.late_records == 2


def test_describe_gives_the_window_as_in_a_state_shape() -> None:
    assert windows().describe() == "TUMBLING(ts, 60000ms)"
