"""Sliding (hopping) windows on event time: a row in every window that contains it.

Windows are `[start, start + size)` for every `start` that is a multiple of the advance
(epoch milliseconds), so each row belongs to `size / advance` windows (the planner
makes the size a whole number of advances, as Flink SQL's HOP does). A row is copied
once per window it joins, with that window's bounds; the copies then go through the
same GROUP BY as tumbling windows, keyed by the window bounds.

Late data follows Flink: each of a row's windows that has closed (its end at or before
the watermark seen before the row) is left out; a row is late, counted and dropped or
dead-lettered, only when all its windows have closed.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from velostream.datasource.traits import RecordRefs
from velostream.engine.tumbling import TumblingWindows, WindowedRows
from velostream.sql.planner import WINDOW_END, WINDOW_START

__all__ = ["SlidingWindows"]


class SlidingWindows(TumblingWindows):
    """The time side of a GROUP BY in sliding windows; state and closing as tumbling."""

    def assign(self, pre: pa.Table, refs: RecordRefs) -> WindowedRows:
        """One copy of each row per open window that contains it, with the window's
        bounds; rows without a usable event time and late rows leave it."""
        timed = self.timed(pre, refs)
        if isinstance(timed, WindowedRows):
            return timed
        pre, ms, bad = timed
        size, advance = self.window.size_ms, self.window.advance_ms
        count = size // advance
        watermark = self.watermarks_before(ms)
        # A row's windows in start order: the earliest starts `count - 1` advances before
        # the latest (the last start at or before the event time). Window i has closed
        # when earliest + i * advance + size <= watermark: the first few have.
        earliest = (ms // advance) * advance - (count - 1) * advance
        floor = earliest + size - advance  # (no watermark yet: int64 min, kept in range)
        reach = np.maximum(watermark, floor) - earliest - size
        closed = np.clip(reach // advance + 1, 0, count)
        pre, late, dropped = self.leave_late(pre, closed == count, refs)
        keep = closed < count
        earliest, closed = earliest[keep], closed[keep]
        open_count = count - closed
        rows = np.repeat(np.arange(len(earliest), dtype=np.int64), open_count)
        first = np.cumsum(open_count) - open_count
        within = np.arange(len(rows), dtype=np.int64) - np.repeat(first, open_count)
        starts = earliest[rows] + (closed[rows] + within) * advance
        pre = pre.take(pa.array(rows))
        pre = pre.append_column(WINDOW_START, self.bounds(starts))
        pre = pre.append_column(WINDOW_END, self.bounds(starts + size))
        return WindowedRows(pre, bad, late, dropped)
