"""Stream–stream joins: both sides streamed, rows matched within `join.timeout`.

A multi-source job's batches come from either side (`SourceBatch.source`). Each side's
rows are kept in a DuckDB table of their own (`__ssj_left`, `__ssj_right`: the user's
columns, the event time in epoch milliseconds `__et`, an arrival number `__seq`, and
for a side whose unmatched rows are emitted — the left of a LEFT JOIN, the right of a
RIGHT JOIN, both of a FULL JOIN — `__matched`). A batch from one side is joined, in
one DuckDB query, to the rows kept of the other (its ON condition, and event times at
most `timeout` apart), the query's projection and WHERE give the output, and the batch
is kept. A row whose own values fail in the projection (a CAST of its column) is found
first, against the other side's columns NULL, and is a bad record of its source; only
before the other side's first row is there nothing to check it against, and a pair
that fails later is then blamed on the arriving row.

The watermark is the smaller of the two sides' largest event times, less
`watermark.max_out_of_orderness`. A row older than the watermark is late (counted,
dropped or dead-lettered): a row it could have matched may be gone. A kept row older
than watermark − timeout can match no row still to come (those are at or after the
watermark), so it is dropped; a row of an outer side that never matched is then
emitted with the other side's columns NULL, as are all such rows when every source has
ended (`finish`). Under these rules the output is, as a multiset, the
one-shot join of every row that was not late.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import cached_property
from typing import Any, ClassVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from velostream.datasource.traits import BadRecord, RecordRefs, SourceBatch
from velostream.engine.core import BatchOutput, Executor, isolate_rows, with_row_numbers
from velostream.engine.tumbling import process_records
from velostream.errors import (
    ErrorKind,
    QueryExecutionError,
    SchemaError,
    StateIncompatibleError,
)
from velostream.sql.planner import BATCH, EVENT_TIME, ROW, QueryPlan, StreamJoin

__all__ = ["LATE_JOIN_MESSAGE", "StreamJoinExecutor"]

LATE_JOIN_MESSAGE = "late record: older than the stream–stream join's watermark"
_BUFFERS = {"left": "__ssj_left", "right": "__ssj_right"}
_SEQ = "__seq"
_MATCHED = "__matched"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class StreamJoinExecutor(Executor):
    """Joins two streams within a timeout of event time; keeps both sides' recent rows."""

    state_kind: ClassVar[str] = "stream_join"
    late_message: ClassVar[str] = LATE_JOIN_MESSAGE

    def __init__(
        self,
        plan: QueryPlan,
        con: duckdb.DuckDBPyConnection | None = None,
        *,
        out_of_orderness_ms: int = 0,
        late_to_dead_letter: bool = False,
    ) -> None:
        assert plan.stream_join is not None
        # No CAST flagging: it reads `from_sql`, whose batch is always the left side.
        super().__init__(dataclasses.replace(plan, casts=[]), con)
        self.join: StreamJoin = plan.stream_join
        self.out_of_orderness_ms = out_of_orderness_ms
        self.late_to_dead_letter = late_to_dead_letter
        self.max_ms: dict[str, int | None] = {"left": None, "right": None}
        self.kept: dict[str, bool] = {"left": False, "right": False}
        self.seq = 0
        self.late_records = 0
        self.aliases = {
            "left": _quote(self.join.left_alias),
            "right": _quote(self.join.right_alias),
        }

    @cached_property
    def shape(self) -> dict[str, Any]:
        j = self.join
        return {
            "kind": self.state_kind,
            "join": [j.left, j.right, j.kind],
            "on": j.on_sql,
            "join_timeout_ms": j.timeout_ms,
            "event_time": j.time_column,
        }

    # --- SQL pieces ---------------------------------------------------------------

    def _within(self) -> str:
        left, right = self.aliases["left"], self.aliases["right"]
        return (
            f"({self.join.on_sql}) AND abs({left}.{EVENT_TIME} - {right}.{EVENT_TIME}) "
            f"<= {self.join.timeout_ms}"
        )

    def _where(self) -> str:
        return f" WHERE {self.plan.where_sql}" if self.plan.where_sql else ""

    def _probe_sql(self, side: str) -> str:
        """The batch (as `side`) joined to the rows kept of the other side."""
        other = "right" if side == "left" else "left"
        relations = {side: BATCH, other: _BUFFERS[other]}
        new, old = self.aliases[side], self.aliases[other]
        return (
            f"SELECT {self.plan.select_list(())} FROM {relations['left']} AS "
            f"{self.aliases['left']} JOIN {relations['right']} AS {self.aliases['right']} "
            f"ON {self._within()}{self._where()} ORDER BY {new}.{ROW}, {old}.{_SEQ}"
        )

    def _alone_sql(self, side: str) -> str:
        """The projection of the batch (as `side`) with the other side's columns NULL."""
        other = "right" if side == "left" else "left"
        return (
            f"SELECT {self.plan.select_list(())} FROM {BATCH} AS {self.aliases[side]} "
            f"LEFT JOIN (FROM {_BUFFERS[other]} LIMIT 0) AS {self.aliases[other]} ON FALSE"
        )

    def _unmatched_sql(self, side: str, condition: str) -> str:
        """The kept rows of `side` meeting `condition` that never matched, the other
        side's columns NULL."""
        other = "right" if side == "left" else "left"
        if self.kept[other]:
            nulls = f"(FROM {_BUFFERS[other]} LIMIT 0)"
        else:
            named = self.join.right_columns if other == "right" else self.join.left_columns
            names = named or ("__none",)
            nulls = "(SELECT " + ", ".join(f"NULL AS {_quote(n)}" for n in names) + ")"
        rows = f"(FROM {_BUFFERS[side]} WHERE NOT {_MATCHED} AND {condition})"
        return (
            f"SELECT {self.plan.select_list(())} FROM {rows} AS {self.aliases[side]} "
            f"LEFT JOIN {nulls} AS {self.aliases[other]} ON FALSE{self._where()} "
            f"ORDER BY {self.aliases[side]}.{_SEQ}"
        )

    def _run(self, query: str) -> pa.Table:
        try:
            return self.con.sql(query).to_arrow_table()
        except duckdb.Error as exc:
            raise QueryExecutionError(f"stream–stream join failed: {exc}") from exc

    def _execute(self, statement: str) -> None:
        try:
            self.con.execute(statement)
        except duckdb.Error as exc:
            raise QueryExecutionError(f"stream–stream join failed: {exc}") from exc

    # --- a batch ------------------------------------------------------------------

    def _side(self, batch: SourceBatch) -> str:
        source = (batch.source or "").lower()
        if source == self.join.left.lower():
            return "left"
        if source == self.join.right.lower():
            return "right"
        raise SchemaError(
            f"a batch from {batch.source or 'an unnamed source'} is neither side of the "
            f"join ({self.join.left}, {self.join.right})"
        )

    @property
    def watermark(self) -> int | None:
        """min(the sides' largest event times) − out-of-orderness; None until both came."""
        left, right = self.max_ms["left"], self.max_ms["right"]
        if left is None or right is None:
            return None
        return min(left, right) - self.out_of_orderness_ms

    def process(self, batch: SourceBatch) -> BatchOutput:
        side = self._side(batch)
        if self.limit_reached or batch.table.num_rows == 0:
            return BatchOutput(pa.table({}))
        table = with_row_numbers(batch.table)
        table, ms, bad = self._timed(table, batch.refs)
        watermark = self.watermark
        late_mask = ms < watermark if watermark is not None else np.zeros(len(ms), dtype=bool)
        late: list[BadRecord] = []
        dropped = 0
        if late_mask.any():
            self.late_records += int(late_mask.sum())
            if self.late_to_dead_letter:
                rows = table.column(ROW).to_numpy()[late_mask]
                late = process_records(batch.refs, rows, LATE_JOIN_MESSAGE, ErrorKind.EXECUTION)
            else:
                dropped = int(late_mask.sum())
            table, ms = table.filter(pa.array(~late_mask)), ms[~late_mask]
        seq = np.arange(self.seq, self.seq + len(ms), dtype=np.int64)
        self.seq += len(ms)
        rows = table.append_column(EVENT_TIME, pa.array(ms)).append_column(_SEQ, pa.array(seq))
        out: list[pa.Table] = []
        other = "right" if side == "left" else "left"
        if rows.num_rows and self.kept[other]:
            # A row whose own values fail (a CAST of its column) is found alone first, so
            # that a failing pair never blames the other side's row.
            _, failed, rows = isolate_rows(self, rows, self._alone_sql(side), batch.refs)
            result, more, rows = isolate_rows(self, rows, self._probe_sql(side), batch.refs)
            bad += failed + more
            out.append(result)
        if rows.num_rows:
            self._keep(side, rows)
            kept_ms = rows.column(EVENT_TIME).to_numpy()
            before = self.max_ms[side]
            top = int(kept_ms.max())
            self.max_ms[side] = top if before is None else max(before, top)
        out.append(self._evict())
        return BatchOutput(self._apply_limit(_concat(out)), bad, late, dropped)

    def _timed(
        self, table: pa.Table, refs: RecordRefs
    ) -> tuple[pa.Table, np.ndarray, list[BadRecord]]:
        """(`table` less rows without a usable event time, their times in epoch ms, those
        rows as bad records)."""
        name = self.join.time_column
        found = next((c for c in table.column_names if c.lower() == name.lower()), None)
        rns = table.column(ROW).to_numpy()
        if found is None:
            message = f"event time column {name} is missing (stream–stream join)"
            return table.slice(0, 0), np.zeros(0, np.int64), process_records(refs, rns, message)
        column = table.column(found)
        if pa.types.is_timestamp(column.type):
            column = pc.cast(pc.cast(column, pa.timestamp("ms")), pa.int64())
        elif pa.types.is_integer(column.type):
            column = pc.cast(column, pa.int64())
        else:
            message = (
                f"event time {name} has type {column.type}; expected a timestamp or epoch "
                "milliseconds"
            )
            return table.slice(0, 0), np.zeros(0, np.int64), process_records(refs, rns, message)
        nulls = np.asarray(pc.is_null(column).to_numpy(zero_copy_only=False), dtype=bool)
        bad: list[BadRecord] = []
        if nulls.any():
            bad = process_records(refs, rns[nulls], f"event time {name} is NULL")
            table, column = table.filter(pa.array(~nulls)), column.filter(pa.array(~nulls))
        return table, column.to_numpy(zero_copy_only=False).astype(np.int64), bad

    def _keep(self, side: str, rows: pa.Table) -> None:
        """Add `rows` (with `__et`, `__seq`) to `side`'s kept rows. An outer side's rows
        get `__matched` (whether a kept row of the other side matches them already);
        the other side's kept rows that these match are marked matched, if outer."""
        other = "right" if side == "left" else "left"
        buffer = _BUFFERS[side]
        rows = rows.drop_columns([ROW])
        self.con.register(BATCH, rows)
        try:
            query = f"FROM {BATCH}"
            if self.join.outer(side):
                matched = "FALSE"
                if self.kept[other]:
                    matched = (
                        f"EXISTS (SELECT 1 FROM {_BUFFERS[other]} AS {self.aliases[other]} "
                        f"WHERE {self._within()})"
                    )
                query = f"SELECT *, {matched} AS {_MATCHED} FROM {BATCH} AS {self.aliases[side]}"
            if self.join.outer(other) and self.kept[other]:
                self._execute(
                    f"UPDATE {_BUFFERS[other]} AS {self.aliases[other]} SET {_MATCHED} = "
                    f"TRUE WHERE NOT {_MATCHED} AND EXISTS (SELECT 1 FROM {BATCH} AS "
                    f"{self.aliases[side]} WHERE {self._within()})"
                )
            self._add(buffer, query, self.kept[side])
        finally:
            self.con.unregister(BATCH)
        self.kept[side] = True

    def _add(self, buffer: str, query: str, exists: bool) -> None:
        """Insert `query`'s rows into `buffer` (types unified as DuckDB's UNION does)."""
        if not exists:
            self._execute(f"CREATE OR REPLACE TABLE {buffer} AS {query}")
            return
        try:
            self.con.execute(f"INSERT INTO {buffer} BY NAME {query}")
        except duckdb.Error:
            self._execute(
                f"CREATE OR REPLACE TABLE {buffer} AS FROM {buffer} UNION ALL BY NAME {query}"
            )

    def _evict(self) -> pa.Table:
        """Forget kept rows older than watermark − timeout; emit those of an outer side
        that never matched."""
        watermark = self.watermark
        if watermark is None:
            return pa.table({})
        return self._expire(f"{EVENT_TIME} < {watermark - self.join.timeout_ms}")

    def _expire(self, cut: str) -> pa.Table:
        """Emit the unmatched rows of outer sides meeting `cut`, then forget every kept
        row meeting it."""
        out: list[pa.Table] = []
        for side, buffer in _BUFFERS.items():
            if not self.kept[side]:
                continue
            if self.join.outer(side):
                out.append(self._run(self._unmatched_sql(side, cut)))
            self._execute(f"DELETE FROM {buffer} WHERE {cut}")
        return _concat(out)

    def finish(self) -> pa.Table | None:
        """The unmatched rows of outer sides still kept (the sources ended: nothing
        more can match them)."""
        out: list[pa.Table] = []
        for side, buffer in _BUFFERS.items():
            if self.kept[side] and self.join.outer(side):
                out.append(self._run(self._unmatched_sql(side, "TRUE")))
                self._execute(f"DELETE FROM {buffer} WHERE NOT {_MATCHED}")
        table = self._apply_limit(_concat(out))
        return table if table.num_rows else None

    # --- state --------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        state = super().snapshot()
        state["join_max_ms"] = dict(self.max_ms)
        state["join_seq"] = self.seq
        state["late_records"] = self.late_records
        for side, buffer in _BUFFERS.items():
            kept = self._run(f"FROM {buffer}") if self.kept[side] else None
            state[f"join_{side}"] = kept
        return state

    def check_state(self, state: Mapping[str, Any]) -> None:
        """Raise StateIncompatibleError unless the kept rows have the join's columns."""
        super().check_state(state)
        for side in _BUFFERS:
            table = state.get(f"join_{side}")
            if table is None:
                continue
            if not isinstance(table, pa.Table):
                raise StateIncompatibleError(f"the state's {side} rows are not a table")
            need = [EVENT_TIME, _SEQ, *([_MATCHED] if self.join.outer(side) else [])]
            missing = [c for c in need if c not in table.column_names]
            if missing:
                raise StateIncompatibleError(
                    f"the state's {side} rows do not fit a stream–stream join "
                    f"(missing {', '.join(missing)})"
                )
        maxes = state.get("join_max_ms")
        if maxes is not None and (not isinstance(maxes, Mapping) or set(maxes) != set(_BUFFERS)):
            raise StateIncompatibleError("the state's join watermarks do not fit the query")

    def restore(self, state: dict[str, Any]) -> None:
        self.check_state(state)
        super().restore(state)
        maxes = state.get("join_max_ms") or {}
        self.max_ms = {side: maxes.get(side) for side in _BUFFERS}
        self.seq = int(state.get("join_seq", 0))
        self.late_records = int(state.get("late_records", 0))
        for side, buffer in _BUFFERS.items():
            self._execute(f"DROP TABLE IF EXISTS {buffer}")
            self.kept[side] = False
            table = state.get(f"join_{side}")
            if table is not None:
                self.con.register(BATCH, table)
                try:
                    self._add(buffer, f"FROM {BATCH}", False)
                finally:
                    self.con.unregister(BATCH)
                self.kept[side] = True


def _concat(tables: list[pa.Table]) -> pa.Table:
    named = [t for t in tables if t.num_columns]
    if not named:
        return pa.table({})
    return pa.concat_tables(named, promote_options="permissive") if len(named) > 1 else named[0]
