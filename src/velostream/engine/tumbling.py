"""Tumbling windows on event time: each row's window, the watermark, late rows.

A row's window is `[start, start + size)`, `start` its event time rounded down to a
multiple of the size (in epoch milliseconds; a TIMESTAMP event time gives TIMESTAMP
bounds). The watermark is the max event time seen so far minus the allowed
out-of-orderness. A row is late when its window ended at or before the watermark seen
*before* it, so a batch is judged as if its rows had come one by one and lateness does
not depend on where batches are cut. A late row is counted and dropped, or, with the
dead-letter strategy, also handed back as a record for the DLQ. A window closes (is
emitted under EMIT FINAL, its state released) once the watermark reaches its end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from velostream.datasource.traits import BadRecord, RecordRefs
from velostream.engine.core import Executor, record_rows
from velostream.errors import ErrorKind, Stage
from velostream.sql.planner import EVENT_TIME, ROW, WINDOW_END, WINDOW_START, TumblingWindow

__all__ = [
    "LATE_MESSAGE",
    "NO_WINDOW_STATE",
    "TumblingWindows",
    "WindowedRows",
    "process_records",
]

LATE_MESSAGE = Executor.late_message

#: The window fields of a snapshot taken without a window: the format always has them.
NO_WINDOW_STATE: Mapping[str, Any] = {
    "max_event_ms": None,
    "time_is_timestamp": False,
    "late_records": 0,
}

_MIN_MS = np.iinfo(np.int64).min


class WindowedRows(NamedTuple):
    """A batch after window assignment: the rows that go on, with their window bounds;
    rows without a usable event time; late rows for the DLQ (dead-letter strategy only)
    and how many late rows were dropped (drop strategy)."""

    rows: pa.Table
    bad: list[BadRecord]
    late: list[BadRecord]
    dropped: int = 0


def process_records(
    refs: RecordRefs, rows: np.ndarray, message: str, kind: ErrorKind = ErrorKind.TYPE
) -> list[BadRecord]:
    """The `process` bad records of the batch rows numbered `rows` (their `__rn`): one
    per source record, however many joined rows it gave."""
    return [
        BadRecord(
            raw=refs.raw(int(rn)),
            ref=refs.ref(int(rn)),
            message=message,
            kind=kind,
            stage=Stage.PROCESS,
        )
        for rn in record_rows(refs, rows)
    ]


class TumblingWindows:
    """The time side of a windowed GROUP BY: bounds, watermark, late data and its count.

    Its state (`max_event_ms`, `time_is_timestamp`, `late_records`) goes into the
    executor's snapshot as flat fields (`snapshot`, `restore`).
    """

    #: The group-key columns a window adds in front of the GROUP BY keys.
    KEY_COLUMNS = (WINDOW_START, WINDOW_END)

    def __init__(
        self,
        window: TumblingWindow,
        *,
        out_of_orderness_ms: int = 0,
        late_to_dead_letter: bool = False,
    ) -> None:
        self.window = window
        self.out_of_orderness_ms = out_of_orderness_ms
        self.late_to_dead_letter = late_to_dead_letter
        self.max_event_ms: int | None = None
        # Set by the first TIMESTAMP event time: the watermark is then compared as one.
        self.time_is_timestamp = False
        self.late_records = 0

    @property
    def pre_item(self) -> tuple[str, str]:
        """The event time as an item of the pre-query: (its SQL, its column)."""
        return self.window.time_sql, EVENT_TIME

    def describe(self) -> str:
        """The window as SQL, for a state's shape."""
        return self.window.describe()

    # --- a batch ------------------------------------------------------------------

    def assign(self, pre: pa.Table, refs: RecordRefs) -> WindowedRows:
        """Add each row's window bounds to `pre` (which has `__et` and `__rn`), moving
        the watermark along; rows without a usable event time and late rows leave it."""
        timed = self.timed(pre, refs)
        if isinstance(timed, WindowedRows):
            return timed
        pre, ms, bad = timed
        size = self.window.size_ms
        start = (ms // size) * size
        end = start + size
        late_mask = end <= self.watermarks_before(ms)
        pre, late, dropped = self.leave_late(pre, late_mask, refs)
        keep = ~late_mask
        pre = pre.append_column(WINDOW_START, self.bounds(start[keep]))
        pre = pre.append_column(WINDOW_END, self.bounds(end[keep]))
        return WindowedRows(pre, bad, late, dropped)

    def timed(
        self, pre: pa.Table, refs: RecordRefs
    ) -> tuple[pa.Table, np.ndarray, list[BadRecord]] | WindowedRows:
        """(`pre` less rows without a usable event time, the event times in epoch
        milliseconds, those rows as bad records); every row bad is a `WindowedRows`."""
        event_ms = self._event_ms(pre, refs)
        if isinstance(event_ms, list):
            return WindowedRows(pre.slice(0, 0), event_ms, [])
        ms = event_ms.to_numpy(zero_copy_only=False)
        null_mask = np.asarray(pc.is_null(event_ms).to_numpy(zero_copy_only=False), dtype=bool)
        bad: list[BadRecord] = []
        if null_mask.any():
            message = f"event time {self.window.time_sql} is NULL"
            bad = process_records(
                refs, pre.column(ROW).to_numpy()[null_mask], message, ErrorKind.TYPE
            )
            pre = pre.filter(pa.array(~null_mask))
            ms = ms[~null_mask]
        return pre, ms.astype(np.int64), bad

    def leave_late(
        self, pre: pa.Table, late_mask: np.ndarray, refs: RecordRefs
    ) -> tuple[pa.Table, list[BadRecord], int]:
        """(`pre` less its late rows, those rows for the DLQ, how many were dropped);
        the late rows are counted."""
        late: list[BadRecord] = []
        dropped = 0
        if late_mask.any():
            # Counted as records: a late stream row that matched N table rows is one.
            rows = record_rows(refs, pre.column(ROW).to_numpy()[late_mask])
            self.late_records += rows.size
            if self.late_to_dead_letter:
                late = process_records(refs, rows, LATE_MESSAGE, ErrorKind.EXECUTION)
            else:
                dropped = rows.size
            pre = pre.filter(pa.array(~late_mask))
        return pre, late, dropped

    def _event_ms(self, pre: pa.Table, refs: RecordRefs) -> pa.ChunkedArray | list[BadRecord]:
        """The event time in epoch milliseconds, or every row as bad if its type is neither
        a timestamp nor an integer."""
        et = pre.column(EVENT_TIME)
        if pa.types.is_timestamp(et.type):
            self.time_is_timestamp = True
            return pc.cast(pc.cast(et, pa.timestamp("ms")), pa.int64())
        if pa.types.is_integer(et.type):
            return pc.cast(et, pa.int64())
        message = (
            f"event time {self.window.time_sql} has type {et.type}; "
            "expected a timestamp or epoch milliseconds"
        )
        return process_records(refs, pre.column(ROW).to_numpy(), message, ErrorKind.TYPE)

    def watermarks_before(self, ms: np.ndarray) -> np.ndarray:
        """The watermark each row meets: from the max event time of every earlier row,
        this batch's and the carried one. Moves the carried max past this batch."""
        carried = self.max_event_ms if self.max_event_ms is not None else _MIN_MS
        before = np.empty_like(ms)
        if ms.size:
            running = np.maximum.accumulate(ms)
            before[0] = carried
            before[1:] = np.maximum(running[:-1], carried)
            self.max_event_ms = int(max(carried, running[-1]))
        # Saturate: no max seen yet (int64 min) must not wrap around to a huge watermark.
        floor = _MIN_MS + self.out_of_orderness_ms
        return np.where(before > floor, before - self.out_of_orderness_ms, _MIN_MS)

    def bounds(self, ms: np.ndarray) -> pa.Array:
        bounds = pa.array(ms, pa.int64())
        return bounds.cast(pa.timestamp("ms")) if self.time_is_timestamp else bounds

    # --- closing windows ----------------------------------------------------------

    def closed(self) -> str | None:
        """A SQL condition on a state row: its window has closed (the watermark reached
        its end). None until an event time has been seen."""
        if self.max_event_ms is None:
            return None
        wm = self.max_event_ms - self.out_of_orderness_ms
        watermark = f"epoch_ms(CAST({wm} AS BIGINT))" if self.time_is_timestamp else str(wm)
        return f"{WINDOW_END} <= {watermark}"

    @staticmethod
    def in_time_order(order: list[str]) -> list[str]:
        """An output order with windows in time order first (ORDER BY sorts within one)."""
        return order if WINDOW_START in order else [WINDOW_START, *order]

    # --- state --------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "max_event_ms": self.max_event_ms,
            "time_is_timestamp": self.time_is_timestamp,
            "late_records": self.late_records,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.max_event_ms = state.get("max_event_ms")
        self.time_is_timestamp = bool(state.get("time_is_timestamp", False))
        self.late_records = int(state.get("late_records", 0))
