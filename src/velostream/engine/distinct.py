"""`SELECT DISTINCT` on a stream: each distinct row once, at its first occurrence.

Rows are distinct as DuckDB's `SELECT DISTINCT` judges them (NULLs equal to each
other). The executor remembers the rows it emitted (the *seen* table: the output
columns, positional, plus `__seen`, the time of the emission) and emits a row only when
no remembered copy is alive. With `distinct.ttl` a remembered row dies `ttl` after its
emission: the next occurrence at or after that time is emitted again (and remembered
anew), and dead rows leave the state, which keeps it bounded.

Time is a clock that never goes back: with `event.time.field`, the largest event time
seen so far, this row's included (a row without an event time is judged at the clock
as it is); without, the processing time of the batch.

Per batch: the plan's projection and WHERE run with row isolation (a bad CAST is that
row's failure, not the batch's); DuckDB groups the output rows among themselves (a hash
aggregate) and matches each group once with the seen table (`IS NOT DISTINCT FROM`);
then the rows to emit are picked vectorised, in rounds: each group's first occurrence
that no live copy suppresses, then (with a TTL) each group's first occurrence `ttl`
after its last emission, until none is left. A duplicate is simply not emitted: the row
counts as filtered. The match scans the seen table once per batch (cost grows with the
state, which the TTL bounds).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from velostream.datasource.traits import BadRecord, SourceBatch
from velostream.engine.core import (
    BatchOutput,
    Executor,
    isolate_rows,
    with_row_numbers,
)
from velostream.errors import ErrorKind, Stage, StateIncompatibleError
from velostream.sql.planner import BATCH, EVENT_TIME, ROW, QueryPlan

__all__ = ["DistinctExecutor"]

_SEEN = "__seen"
_NEW = "__distinct_new"
_STATE = "__distinct_seen"
_ORD = "__ord"
_SIDX = "__sidx"
_NEVER = np.iinfo(np.int64).max
_NO_TIME = np.iinfo(np.int64).min


def _col(i: int) -> str:
    return f"__c{i}"


class DistinctExecutor(Executor):
    """Emits each distinct output row once (again after `ttl_ms`, if set)."""

    state_kind = "distinct"

    def __init__(
        self,
        plan: QueryPlan,
        con: duckdb.DuckDBPyConnection | None = None,
        *,
        ttl_ms: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(plan, con)
        self.ttl_ms = ttl_ms
        self._clock = clock
        self._seen: pa.Table | None = None
        #: The largest time seen (ms); None before the first row with a time.
        self._now: int | None = None
        self._queries: dict[tuple[str, ...], str] = {}

    def query(self, columns: list[str]) -> str:
        """The projection and WHERE over a batch of `columns`, with the event time."""
        key = tuple(columns)
        query = self._queries.get(key)
        if query is None:
            where = f" WHERE {self.plan.where_sql}" if self.plan.where_sql else ""
            items = self.plan.select_list(columns, (ROW,)) + f", {ROW}"
            if self.plan.distinct_time_sql is not None:
                items += f", ({self.plan.distinct_time_sql}) AS {EVENT_TIME}"
            query = self._queries[key] = f"SELECT {items} FROM {BATCH}{where}"
        return query

    def process(self, batch: SourceBatch) -> BatchOutput:
        if self.limit_reached or batch.table.num_rows == 0:
            return BatchOutput(self._empty(batch.table))
        table = with_row_numbers(batch.table)
        result, bad, _ = isolate_rows(self, table, self.query(table.column_names), batch.refs)
        times, bad_times = self._times(result, batch)
        result = result.drop_columns([c for c in (ROW, EVENT_TIME) if c in result.column_names])
        if bad_times:
            return BatchOutput(self._apply_limit(result.slice(0, 0)), bad + bad_times)
        return BatchOutput(self._apply_limit(self._dedupe(result, times)), bad)

    def _empty(self, table: pa.Table) -> pa.Table:
        empty = with_row_numbers(table.slice(0, 0))
        self.con.register(BATCH, empty)
        try:
            result = self.con.sql(self.query(empty.column_names)).to_arrow_table()
        finally:
            self.con.unregister(BATCH)
        return result.drop_columns([c for c in (ROW, EVENT_TIME) if c in result.column_names])

    # --- time ------------------------------------------------------------------

    def _times(self, result: pa.Table, batch: SourceBatch) -> tuple[np.ndarray, list[BadRecord]]:
        """Each output row's clock (ms): the running max of event times, or now."""
        n = result.num_rows
        if self.plan.distinct_time_sql is None:
            now = int(self._clock() * 1000)
            if self._now is not None:
                now = max(now, self._now)
            self._now = now
            return np.full(n, now, dtype=np.int64), []
        et = result.column(EVENT_TIME)
        if pa.types.is_timestamp(et.type):
            ms = pc.cast(pc.cast(et, pa.timestamp("ms")), pa.int64())
        elif pa.types.is_integer(et.type) or pa.types.is_null(et.type):
            ms = pc.cast(et, pa.int64())
        else:
            message = (
                f"event time {self.plan.distinct_time_sql} has type {et.type}; "
                "expected a timestamp or epoch milliseconds"
            )
            return np.empty(0, dtype=np.int64), [
                BadRecord(
                    raw=batch.refs.raw(i),
                    ref=batch.refs.ref(i),
                    message=message,
                    kind=ErrorKind.TYPE,
                    stage=Stage.PROCESS,
                )
                for i in result.column(ROW).to_pylist()
            ]
        values = ms.fill_null(_NO_TIME).to_numpy()
        start = self._now if self._now is not None else _NO_TIME
        times = np.maximum.accumulate(np.maximum(values, start)) if n else values
        if n and int(times[-1]) != _NO_TIME:
            self._now = int(times[-1])
        return times, []

    # --- deduplication -----------------------------------------------------------

    def _dedupe(self, result: pa.Table, times: np.ndarray) -> pa.Table:
        n = result.num_rows
        if n == 0:
            self._expire()
            return result
        width = result.num_columns
        new = self._comparable(result.rename_columns([_col(i) for i in range(width)]))
        group, seen, sidx = self._match(new)
        picked = self._pick(group, seen, sidx, times)
        last = self._last_per_group(group, picked)
        self._remember(new, times, last, sidx)
        return result.take(pa.array(picked, pa.int64()))

    def _comparable(self, new: pa.Table) -> pa.Table:
        """`new`, and the seen table, with the same column types (a source's types may
        change from batch to batch: JSON, say). Types that do not widen to one another
        (a number, then a string) are compared as text."""
        if self._seen is None:
            return new
        if self._seen.num_columns - 1 != new.num_columns:
            raise StateIncompatibleError(
                f"the remembered rows have {self._seen.num_columns - 1} columns; this batch's "
                f"SELECT DISTINCT gives {new.num_columns} (the source's columns changed)"
            )
        seen = self._seen
        for i, name in enumerate(new.column_names):
            mine, theirs = seen.schema.field(i).type, new.schema.field(i).type
            if mine == theirs:
                continue
            try:
                both = pa.schema([(name, mine)]), pa.schema([(name, theirs)])
                common = pa.unify_schemas(both, promote_options="permissive").field(0).type
                seen = seen.set_column(i, name, seen.column(i).cast(common))
                new = new.set_column(i, name, new.column(i).cast(common))
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                seen = seen.set_column(i, name, seen.column(i).cast(pa.string()))
                new = new.set_column(i, name, new.column(i).cast(pa.string()))
        self._seen = seen
        return new

    def _match(self, new: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per output row: its group (the position of its first copy in the batch), the
        emission time of its remembered copy and that copy's index (-1 if none)."""
        names = new.column_names
        n = new.num_rows
        ordered = new.append_column(_ORD, pa.array(np.arange(n, dtype=np.int64)))
        columns = ", ".join(names)

        def same(a: str, b: str) -> str:
            return " AND ".join(f"{a}.{c} IS NOT DISTINCT FROM {b}.{c}" for c in names)

        # The batch's distinct rows (a hash aggregate), matched with the seen table
        # once each, then given back to every row of the batch.
        groups = f"SELECT {columns}, MIN({_ORD}) AS g FROM {_NEW} GROUP BY {columns}"
        con = self.con
        con.register(_NEW, ordered)
        remembered = self._seen is not None and self._seen.num_rows > 0
        try:
            if self._seen is not None and remembered:
                state = self._seen.append_column(
                    _SIDX, pa.array(np.arange(self._seen.num_rows, dtype=np.int64))
                )
                con.register(_STATE, state)
                matched = (
                    f"SELECT f.*, s.{_SEEN} AS s, COALESCE(s.{_SIDX}, -1) AS i "
                    f"FROM ({groups}) f LEFT JOIN {_STATE} s ON {same('f', 's')}"
                )
            else:
                matched = f"SELECT f.*, CAST(NULL AS BIGINT) AS s, -1 AS i FROM ({groups}) f"
            query = (
                f"SELECT m.g, m.s, m.i FROM {_NEW} n JOIN ({matched}) m ON {same('n', 'm')} "
                f"ORDER BY n.{_ORD}"
            )
            found = con.sql(query).fetchnumpy()
        finally:
            con.unregister(_NEW)
            if remembered:
                con.unregister(_STATE)
        group = np.asarray(found["g"], dtype=np.int64)
        copy = np.asarray(found["i"], dtype=np.int64)
        seen = np.where(copy >= 0, np.ma.filled(found["s"], 0), 0).astype(np.int64)
        return group, seen, copy

    def _until(self, emitted: np.ndarray) -> np.ndarray:
        """Until when copies emitted at `emitted` suppress their rows (ms, exclusive)."""
        if self.ttl_ms is None:
            return np.full(emitted.shape, _NEVER, dtype=np.int64)
        until: np.ndarray = np.minimum(emitted, _NEVER - self.ttl_ms) + self.ttl_ms
        return until

    def _pick(
        self, group: np.ndarray, seen: np.ndarray, copy: np.ndarray, times: np.ndarray
    ) -> np.ndarray:
        """The positions to emit, in order (see the module docstring)."""
        positions = np.arange(group.size, dtype=np.int64)
        groups, first_of, inverse = np.unique(group, return_index=True, return_inverse=True)
        # Per group: whether a copy is remembered, until when it suppresses, and the
        # position of the group's last emission in this batch.
        remembered = copy[first_of] >= 0
        until = self._until(seen[first_of])
        after = np.full(groups.size, -1, dtype=np.int64)
        picked: list[np.ndarray] = []
        while True:
            eligible = (positions > after[inverse]) & (
                ~remembered[inverse] | (times >= until[inverse])
            )
            if not eligible.any():
                break
            chosen_groups, first = np.unique(inverse[eligible], return_index=True)
            chosen = positions[eligible][first]
            picked.append(chosen)
            after[chosen_groups] = chosen
            remembered[chosen_groups] = True
            until[chosen_groups] = self._until(times[chosen])
        if not picked:
            return np.empty(0, dtype=np.int64)
        return np.sort(np.concatenate(picked))

    @staticmethod
    def _last_per_group(group: np.ndarray, picked: np.ndarray) -> np.ndarray:
        """The last emitted position of each group that emitted."""
        if picked.size == 0:
            return picked
        reverse = picked[::-1]
        _, index = np.unique(group[reverse], return_index=True)
        return np.sort(reverse[index])

    def _remember(
        self, new: pa.Table, times: np.ndarray, last: np.ndarray, sidx: np.ndarray
    ) -> None:
        """Replace the remembered copies of the groups emitted now; drop the dead ones."""
        if last.size:
            rows = new.take(pa.array(last, pa.int64())).append_column(
                _SEEN, pa.array(times[last], pa.int64())
            )
            if self._seen is None:
                self._seen = rows
            else:
                replaced = sidx[last]
                replaced = replaced[replaced >= 0]
                kept = self._seen
                if replaced.size:
                    keep = np.ones(kept.num_rows, dtype=bool)
                    keep[replaced] = False
                    kept = kept.filter(pa.array(keep))
                self._seen = pa.concat_tables([kept, rows], promote_options="permissive")
        self._expire()

    def _expire(self) -> None:
        if self.ttl_ms is None or self._seen is None or self._now is None:
            return
        seen = self._seen.column(_SEEN).fill_null(_NEVER).to_numpy()
        keep = self._until(seen) > self._now
        if not keep.all():
            self._seen = self._seen.filter(pa.array(keep))

    # --- state -----------------------------------------------------------------

    @cached_property
    def shape(self) -> dict[str, Any]:
        """The SELECT list: the remembered rows are rows of these columns."""
        return {"kind": self.state_kind, "distinct": list(self.plan.select_sql)}

    def check_state(self, state: Mapping[str, Any]) -> None:
        """The shape, then the remembered rows: positional columns and `__seen`."""
        super().check_state(state)
        seen = state.get("seen")
        if seen is None:
            return
        if not isinstance(seen, pa.Table):
            raise StateIncompatibleError("the state's remembered rows are not a table")
        names = seen.column_names
        width = len(names) - 1
        expected = [*(_col(i) for i in range(width)), _SEEN]
        if names != expected:
            raise StateIncompatibleError(
                "the state's remembered rows do not fit the query "
                f"(columns {', '.join(names)}; expected __c0.. and {_SEEN})"
            )
        if "*" not in self.plan.select_sql and width != len(self.plan.select_sql):
            raise StateIncompatibleError(
                f"the state's remembered rows have {width} columns; "
                f"the query's SELECT DISTINCT has {len(self.plan.select_sql)}"
            )

    def snapshot(self) -> dict[str, Any]:
        state = super().snapshot()
        state["now"] = self._now
        if self._seen is not None:
            state["seen"] = self._seen
        return state

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        now = state.get("now")
        self._now = None if now is None else int(now)
        self._seen = state.get("seen")
