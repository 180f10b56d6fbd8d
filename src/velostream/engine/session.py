"""Session windows on event time: per GROUP BY key, rows no more than `gap` apart.

A key's session is a run of its rows whose event times, in time order, are at most
`gap` apart (a gap of exactly `gap` continues it). `_window_start` is the first row's
event time, `_window_end` the last row's plus `gap`, as in the original system. The
rows of open sessions are kept in a DuckDB table (`__sessions`: group keys, aggregate
arguments, event time in epoch milliseconds, arrival number); sessions are found in it
with window functions, so an out-of-order row may extend a session or bridge two, and
every aggregate is computed exactly as by a one-shot GROUP BY over the session's rows.

The watermark is the tumbling one (max event time seen − out-of-orderness). A session
has closed when its end is *before* the watermark (a row at exactly its end would still
join it); it is then emitted (EMIT FINAL) and its rows forgotten. Rows are judged as if
they came one by one: a row behind the watermark (event time before it) could meet a
session that closed earlier in its batch, so sessions are closed before such a row, and
it is late (counted, dropped or dead-lettered) when its own session `[t, t + gap]` has
ended before the watermark and it touches no open session of its key. A row at or
after the watermark can neither be late nor meet a closed session, so runs of such rows
go in together. Under EMIT CHANGES each row emits its session's value once it joined;
a row earlier than an earlier row of its key (which may bridge sessions) starts a new
run, so each row's session is the one it joined.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from velostream.datasource.traits import BadRecord, RecordRefs
from velostream.engine.core import check_columns
from velostream.engine.duckdb_aggregates import partials_of, projection
from velostream.engine.tumbling import TumblingWindows, WindowedRows
from velostream.sql.planner import (
    ARG,
    EVENT_TIME,
    KEY,
    ROW,
    WINDOW_END,
    WINDOW_START,
    QueryPlan,
    TumblingWindow,
)

__all__ = ["SESSION_TABLE", "SessionWindows"]

SESSION_TABLE = "__sessions"
_ROWS = "__srows"
_SID = "__sid"
_ENDED = "__ended"


class SessionWindows(TumblingWindows):
    """The sessions of a GROUP BY: their rows, the watermark, late rows, emission."""

    def __init__(
        self,
        window: TumblingWindow,
        plan: QueryPlan,
        con: duckdb.DuckDBPyConnection,
        *,
        out_of_orderness_ms: int = 0,
        late_to_dead_letter: bool = False,
    ) -> None:
        super().__init__(
            window, out_of_orderness_ms=out_of_orderness_ms, late_to_dead_letter=late_to_dead_letter
        )
        self.plan = plan
        self.con = con
        self.keys = [KEY.format(i) for i in range(len(plan.keys or ["0"]))]
        self.columns = [
            *self.keys,
            *(ARG.format(c.index) for c in plan.aggregates if c.arg is not None),
            EVENT_TIME,
            ROW,
        ]
        self.changes = plan.emit == "CHANGES"
        self.next_row = 0
        self._schema: pa.Schema | None = None

    # --- SQL pieces ---------------------------------------------------------------

    def _match(self, left: str, right: str) -> str:
        return " AND ".join(f"{left}.{k} IS NOT DISTINCT FROM {right}.{k}" for k in self.keys)

    def _bound(self, ms_sql: str) -> str:
        return f"CAST(epoch_ms({ms_sql}) AS TIMESTAMP_MS)" if self.time_is_timestamp else ms_sql

    def _sessions_sql(self) -> str:
        """The kept rows with their session (`__sid`, per key) and each COUNT(DISTINCT)'s
        `__newN` (the row brings a value its session has not had before it)."""
        keys = ", ".join(self.keys)
        by_time = f"PARTITION BY {keys} ORDER BY {EVENT_TIME}, {ROW}"
        starts = (
            f"SELECT *, CASE WHEN {EVENT_TIME} - LAG({EVENT_TIME}) OVER ({by_time}) "
            f"<= {self.window.size_ms} THEN 0 ELSE 1 END AS __new_session FROM {SESSION_TABLE}"
        )
        numbered = (
            f"SELECT * EXCLUDE (__new_session), SUM(__new_session) OVER ({by_time} ROWS "
            f"UNBOUNDED PRECEDING) AS {_SID} FROM ({starts})"
        )
        news = [
            f"({ARG.format(c.index)} IS NOT NULL AND ROW_NUMBER() OVER (PARTITION BY {keys}, "
            f"{_SID}, {ARG.format(c.index)} ORDER BY {ROW}) = 1) AS __new{c.index}"
            for c in self.plan.aggregates
            if c.func == "count_distinct"
        ]
        return f"SELECT *{''.join(', ' + n for n in news)} FROM ({numbered})"

    # --- a batch ------------------------------------------------------------------

    def process(
        self, pre: pa.Table, refs: RecordRefs
    ) -> tuple[pa.Table, list[BadRecord], list[BadRecord], int]:
        """Apply one batch's pre-query rows: (output, bad rows, late rows for the DLQ,
        late rows dropped). The output is the running values (EMIT CHANGES) or the
        sessions the batch closed (EMIT FINAL)."""
        timed = self.timed(pre, refs)
        if isinstance(timed, WindowedRows):
            return self._close(self._watermark()), timed.bad, [], 0
        pre, ms, bad = timed
        n = len(ms)
        before = self.watermarks_before(ms)
        numbers = np.arange(self.next_row, self.next_row + n, dtype=np.int64)
        self.next_row += n
        rows = pre.select(self.columns[:-2]).append_column(EVENT_TIME, pa.array(ms))
        rows = rows.append_column(ROW, pa.array(numbers))
        behind = ms < before
        starts = {0, *np.flatnonzero(behind).tolist()}
        if self.changes and n:
            starts.update(self._out_of_key_order(rows))
        cuts = [*sorted(starts), n]
        late_mask = np.zeros(n, dtype=bool)
        out: list[pa.Table] = []
        for a, b in itertools.pairwise(cuts):
            if a >= b:
                continue
            if behind[a]:
                out.append(self._close(int(before[a])))
                if ms[a] + self.window.size_ms < before[a] and not self._touches(rows.slice(a, 1)):
                    late_mask[a] = True
                    a += 1
                    if a == b:
                        continue
            self._add(rows.slice(a, b - a))
            if self.changes:
                out.append(self._running(int(numbers[a])))
        out.append(self._close(self._watermark()))
        _, late, dropped = self.leave_late(pre, late_mask, refs)
        return _concat(out), bad, late, dropped

    def _watermark(self) -> int | None:
        if self.max_event_ms is None:
            return None
        return self.max_event_ms - self.out_of_orderness_ms

    def _out_of_key_order(self, rows: pa.Table) -> list[int]:
        """The rows earlier than a row of their key seen before them (kept or in this
        batch): under EMIT CHANGES each starts a run of its own."""
        keys = ", ".join(self.keys)
        partition = ", ".join(f"r.{k}" for k in self.keys)
        earlier = (
            f"MAX(r.{EVENT_TIME}) OVER (PARTITION BY {partition} ORDER BY r.{ROW} ROWS BETWEEN "
            "UNBOUNDED PRECEDING AND 1 PRECEDING)"
        )
        kept = "NULL"
        join = ""
        if self._schema is not None:
            kept = "m.__max"
            join = (
                f" LEFT JOIN (SELECT {keys}, MAX({EVENT_TIME}) AS __max FROM {SESSION_TABLE} "
                f"GROUP BY {keys}) m ON {self._match('r', 'm')}"
            )
        self.con.register(_ROWS, rows)
        try:
            flags = self.con.sql(
                f"SELECT COALESCE(r.{EVENT_TIME} < GREATEST({kept}, ({earlier})), FALSE) AS f "
                f"FROM {_ROWS} r{join} ORDER BY r.{ROW}"
            ).fetchnumpy()["f"]
        finally:
            self.con.unregister(_ROWS)
        return np.flatnonzero(np.asarray(flags, dtype=bool)).tolist()

    def _touches(self, row: pa.Table) -> bool:
        """Whether the one row of `row` is within `gap` of a kept row of its key."""
        if self._schema is None:
            return False
        gap = self.window.size_ms
        self.con.register(_ROWS, row)
        try:
            found = self.con.sql(
                f"SELECT COUNT(*) FROM {SESSION_TABLE} s JOIN {_ROWS} r ON "
                f"{self._match('s', 'r')} AND s.{EVENT_TIME} BETWEEN r.{EVENT_TIME} - {gap} "
                f"AND r.{EVENT_TIME} + {gap}"
            ).fetchall()
        finally:
            self.con.unregister(_ROWS)
        return bool(found[0][0])

    def _add(self, rows: pa.Table) -> None:
        """Keep `rows` (types unified with the kept rows', as DuckDB's UNION does)."""
        self.con.register(_ROWS, rows)
        try:
            if self._schema is None:
                self.con.execute(f"CREATE OR REPLACE TABLE {SESSION_TABLE} AS FROM {_ROWS}")
            elif rows.schema.equals(self._schema):
                self.con.execute(f"INSERT INTO {SESSION_TABLE} FROM {_ROWS}")
            else:
                self.con.execute(
                    f"CREATE OR REPLACE TABLE {SESSION_TABLE} AS FROM {SESSION_TABLE} "
                    f"UNION ALL BY NAME FROM {_ROWS}"
                )
        finally:
            self.con.unregister(_ROWS)
        if self._schema is None or not rows.schema.equals(self._schema):
            self._schema = self.con.sql(f"FROM {SESSION_TABLE} LIMIT 0").to_arrow_table().schema

    def _running(self, first_row: int) -> pa.Table:
        """EMIT CHANGES: the value of each row's session once the row joined it, for the
        rows numbered from `first_row` on, in arrival order."""
        assert self._schema is not None
        keys = ", ".join(self.keys)
        partials = ", ".join(f"{p.running} AS {p.name}" for p in self._partials())
        gap = self.window.size_ms
        window = (
            f"WINDOW w AS (PARTITION BY {keys}, {_SID} ORDER BY {ROW} ROWS UNBOUNDED PRECEDING)"
        )
        values = (
            f"SELECT {ROW}, {keys}, {self._bound(f'MIN({EVENT_TIME}) OVER w')} AS {WINDOW_START}, "
            f"{self._bound(f'MAX({EVENT_TIME}) OVER w + {gap}')} AS {WINDOW_END}"
            f"{', ' + partials if partials else ''} FROM ({self._sessions_sql()}) {window}"
        )
        chosen = f"(SELECT * FROM ({values}) WHERE {ROW} >= {first_row})"
        return self.con.sql(projection(self.plan, chosen, ROW)).to_arrow_table()

    def _partials(self) -> list[Any]:
        assert self._schema is not None
        return partials_of(self.plan, self._schema)

    # --- closing sessions ---------------------------------------------------------

    def _grouped(self, source: str) -> str:
        """Each session of `source` (rows of `_sessions_sql`) as keys, bounds, partials."""
        keys = ", ".join(self.keys)
        partials = "".join(f", {p.grouped} AS {p.name}" for p in self._partials())
        gap = self.window.size_ms
        return (
            f"(SELECT {keys}, {self._bound(f'MIN({EVENT_TIME})')} AS {WINDOW_START}, "
            f"{self._bound(f'MAX({EVENT_TIME}) + {gap}')} AS {WINDOW_END}{partials} "
            f"FROM {source} GROUP BY {keys}, {_SID})"
        )

    def _close(self, watermark: int | None) -> pa.Table:
        """Emit (EMIT FINAL) and forget the sessions that ended before `watermark`."""
        if watermark is None or self._schema is None:
            return pa.table({})
        gap = self.window.size_ms
        oldest = self.con.sql(f"SELECT MIN({EVENT_TIME}) FROM {SESSION_TABLE}").fetchall()[0]
        if oldest[0] is None or oldest[0] + gap >= watermark:
            return pa.table({})  # every session ends at or after the watermark
        keys = ", ".join(self.keys)
        # The rows with their session and its end, found once for both steps.
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {_ENDED} AS SELECT *, MAX({EVENT_TIME}) OVER "
            f"(PARTITION BY {keys}, {_SID}) + {gap} AS __end FROM ({self._sessions_sql()})"
        )
        out = pa.table({})
        if not self.changes:
            closed = self._grouped(f"(FROM {_ENDED} WHERE __end < {watermark})")
            out = self.con.sql(projection(self.plan, closed, self.order)).to_arrow_table()
        self.con.execute(
            f"CREATE OR REPLACE TABLE {SESSION_TABLE} AS SELECT {', '.join(self.columns)} "
            f"FROM {_ENDED} WHERE __end >= {watermark}"
        )
        self.con.execute(f"DROP TABLE {_ENDED}")
        return out

    @property
    def order(self) -> str:
        """The order of the sessions emitted together (closed by one watermark advance,
        or open at the end): the query's ORDER BY, else by start, then key. (Sessions
        rarely share a start, so unlike windows they are not sorted by it first.)"""
        return ", ".join(self.plan.order_sql or [WINDOW_START, WINDOW_END, *self.keys])

    def finish(self) -> pa.Table | None:
        """EMIT FINAL: every session still open, when a bounded source ends."""
        if self.changes or self._schema is None:
            return None
        every = self._grouped(f"({self._sessions_sql()})")
        out = self.con.sql(projection(self.plan, every, self.order))
        table = out.to_arrow_table()
        self.con.execute(f"DELETE FROM {SESSION_TABLE}")
        return table if table.num_rows else None

    # --- state --------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        state = super().snapshot()
        state["session_next_row"] = self.next_row
        if self._schema is not None:
            state[SESSION_TABLE] = self.con.sql(f"FROM {SESSION_TABLE}").to_arrow_table()
        return state

    def check_state(self, state: Mapping[str, Any]) -> None:
        """Raise StateIncompatibleError unless the kept rows have this query's columns."""
        if state.get(SESSION_TABLE) is not None:
            check_columns("session rows", state[SESSION_TABLE], self.columns)

    def restore(self, state: Mapping[str, Any]) -> None:
        self.check_state(state)
        super().restore(state)
        self.next_row = int(state.get("session_next_row", 0))
        table = state.get(SESSION_TABLE)
        self._schema = None
        self.con.execute(f"DROP TABLE IF EXISTS {SESSION_TABLE}")
        if table is not None:
            self._add(table)


def _concat(tables: list[pa.Table]) -> pa.Table:
    named = [t for t in tables if t.num_columns]
    if not named:
        return pa.table({})
    return pa.concat_tables(named, promote_options="permissive") if len(named) > 1 else named[0]
