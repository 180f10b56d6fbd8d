"""Row windows: `f(...) OVER (ROWS WINDOW BUFFER N ROWS [PARTITION BY ...] [ORDER BY ...])`.

The last N rows of each partition are carried from batch to batch (the *buffer*; rows
leave it in arrival order, oldest first). Each batch runs as DuckDB queries over the
carried rows followed by the new ones.

Semantics. A row's value is computed once, when it is final, over its *frame*: the rows
of its partition the buffer holds at that moment, *sorted by the ORDER BY of its
OVER (...)*, ties in arrival order (without ORDER BY: in arrival order).

- LAG, ROW_NUMBER, RANK, DENSE_RANK and running SUM/AVG/MIN/MAX/COUNT and
  STDDEV/VARIANCE (sample and population) are final when the row arrives; the frame is
  the last N rows of its partition, itself included (for LAG(x, N), the N rows before
  it and itself). LAG(x, k) is the row k places before it
  in the sorted frame; SUM etc. run over the rows that sort up to it; RANK/DENSE_RANK
  rank its ORDER BY value among the frame's. ROW_NUMBER counts the whole partition: the
  rows that have left the buffer, plus its place in the sorted frame (in arrival
  order: how many rows its partition has had).
- LEAD(x, k) is final when k more rows of its partition have arrived (or the source
  ends); the frame is the last N rows of the partition at that moment, and the row
  itself. LEAD is the row k places after it in the sorted frame (NULL, or the default).

So, on input whose ORDER BY values come out of order, a value is that of an ordered
evaluation over the rows the buffer holds when the value is made: a row that arrives
later, or has left the buffer, is not seen. On input in ORDER BY order the values are
those without ORDER BY. Output rows keep their arrival order within a partition; a row
waiting for its LEAD holds back only the rows of its own partition (rows of other
partitions go on, so partitions may interleave otherwise than they came).

How. Without ORDER BY, window functions over the rows in arrival order. With ORDER BY,
each row gets a sort key (`create_sort_key` of the ORDER BY, then arrival); a row whose
frame is in arrival order already takes those same arrival-order values, and only the
others are joined with their frame's rows and aggregated over those that sort before,
up to or after them (`_ordered_sql`): O(out-of-order rows x N) per batch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from velostream.datasource.traits import BadRecord, SourceBatch
from velostream.engine.core import (
    BatchOutput,
    Executor,
    check_columns,
    isolate_rows,
    joined_rows,
    with_row_numbers,
)
from velostream.sql.planner import BATCH, ROW, QueryPlan, RowWindowCall

__all__ = ["RowWindowExecutor"]

_SEQ = "__seq"
_HIST = "__hist"
_EMITTED = "__emitted"
_ALL = "__all"
_BASE = "__base"
_TARGET = "__tgt"
# The values a buffered row carries for each call (see `RowWindowExecutor._run`).
_CARRIED = re.compile(r"__(v|fz|abs)\d+")


def _partition(call: RowWindowCall) -> str:
    return f"PARTITION BY {', '.join(call.partition_sql)}" if call.partition_sql else ""


def _describe(call: RowWindowCall) -> str:
    """A row-window call as SQL, for a state's shape and its error messages."""
    args = [call.arg] if call.arg else []
    if call.func in ("lag", "lead"):
        args += [str(call.offset), *([call.default_sql] if call.default_sql else [])]
    over = f"ROWS WINDOW BUFFER {call.buffer_rows} ROWS"
    if call.partition_sql:
        over += f" PARTITION BY {', '.join(call.partition_sql)}"
    if call.order_sql:
        over += f" ORDER BY {', '.join(call.order_sql)}"
    return f"{call.func.upper()}({', '.join(args)}) OVER ({over})"


@dataclass(frozen=True, slots=True)
class _Frame:
    """Calls with ORDER BY whose rows' frames are the same, computed together.

    At arrival a row's frame is itself and the `back` rows before it; a LEAD's frame is
    its own (`lead`; see the module docstring)."""

    number: int
    calls: tuple[RowWindowCall, ...]
    back: int
    lead: RowWindowCall | None = None

    @property
    def ranks(self) -> bool:
        """RANK/DENSE_RANK: ties count, so arrival order never gives the value."""
        return any(c.func in ("rank", "dense_rank") for c in self.calls)


def _frames(calls: list[RowWindowCall]) -> list[_Frame]:
    """The frames of the calls with ORDER BY."""
    grouped: dict[tuple[Any, ...], list[RowWindowCall]] = {}
    for call in calls:
        if not call.order_sql:
            continue
        # LAG(x, N) reaches one row further back than the buffer's N (as without ORDER BY)
        back = max(call.buffer_rows - 1, call.offset if call.func == "lag" else 0)
        lead = call.index if call.func == "lead" else None
        grouped.setdefault((call.partition_sql, call.order_keys, back, lead), []).append(call)
    return [
        _Frame(
            number=n,
            calls=tuple(group),
            back=key[2],
            lead=group[0] if key[3] is not None else None,
        )
        for n, (key, group) in enumerate(grouped.items())
    ]


def _stores_value(call: RowWindowCall) -> bool:
    """Whether a buffered row keeps `call`'s value (`__vN`); a ROW_NUMBER without ORDER
    BY is the count it keeps anyway (`__absN`)."""
    return call.func != "row_number" or bool(call.order_sql)


class RowWindowExecutor(Executor):
    """Window functions over a bounded buffer of rows per partition."""

    state_kind = "row_window"

    def __init__(self, plan: QueryPlan, con: duckdb.DuckDBPyConnection | None = None) -> None:
        super().__init__(plan, con)
        self._calls = plan.row_calls
        self._keep = max(max(c.buffer_rows, c.offset) for c in self._calls)
        self._history: pa.Table | None = None
        self._seq = 0
        self._has_lead = any(c.func == "lead" for c in self._calls)
        self._frames = _frames(self._calls)
        self._frame_of = {c.index: f for f in self._frames for c in f.calls}
        # Row-level CASTs of the SELECT run here first, so that a row failing one is
        # isolated before it reaches the window query (which spans batches).
        self._checks = [f"__chk{i}" for i, c in enumerate(c for c in plan.casts if not c[3])]
        checks = "".join(
            f", ({cast[4]}) AS __chk{i}" for i, cast in enumerate(c for c in plan.casts if not c[3])
        )
        where = f" WHERE {plan.where_sql}" if plan.where_sql else ""
        self._pre_query = f"SELECT *{checks} FROM {BATCH}{where}"

    def _call_sql(self, call: RowWindowCall) -> str:
        """A call without ORDER BY: a window function over the rows in arrival order."""
        part = _partition(call)
        ordered = f"({part} ORDER BY {_SEQ})"
        preceding = call.buffer_rows - 1
        frame = f"({part} ORDER BY {_SEQ} ROWS BETWEEN {preceding} PRECEDING AND CURRENT ROW)"
        default = f", {call.default_sql}" if call.default_sql else ""
        match call.func:
            case "lag":
                return f"LAG({call.arg}, {call.offset}{default}) OVER {ordered}"
            case "lead":
                return f"LEAD({call.arg}, {call.offset}{default}) OVER {ordered}"
            case "row_number":
                return f"__cnt{call.index}"
            case "count":
                arg = call.arg or "*"
                return f"COUNT({arg}) OVER {frame}"
            case _:
                return f"{call.func.upper()}({call.arg}) OVER {frame}"

    def _count_sql(self, call: RowWindowCall) -> str:
        """How many rows the partition has had, up to and including each row."""
        part = _partition(call)
        col = f"__abs{call.index}"
        return (
            f"CASE WHEN {_HIST} THEN {col} ELSE COALESCE(MAX({col}) OVER ({part}), 0) + "
            f"ROW_NUMBER() OVER ({part}{',' if part else 'PARTITION BY'} {_HIST} "
            f"ORDER BY {_SEQ}) END"
        )

    def _ready_sql(self, call: RowWindowCall, *, final: bool, carried: bool) -> str:
        """Whether a LEAD row's value is final: `offset` rows have followed it, or the end."""
        done = (
            "TRUE"
            if final
            else f"COUNT(*) OVER ({_partition(call)} ORDER BY {_SEQ} ROWS BETWEEN "
            f"1 FOLLOWING AND UNBOUNDED FOLLOWING) >= {call.offset}"
        )
        return f"COALESCE(__fz{call.index}, FALSE) OR {done}" if carried else done

    def _frame_columns(self, frame: _Frame, *, final: bool) -> tuple[str, str, str]:
        """The items that make `frame`'s sort key (`__skN`, `__rkN` for RANK), its
        descents (a row that sorts before the one that came just before it), and
        whether a row's frame is out of order (`__badN`): else its values are the ones
        arrival order gives, and the join of `_ordered_sql` is not needed."""
        n, part = frame.number, _partition(frame.calls[0])
        keys = [f"{e}, '{m}'" for e, m in frame.calls[0].order_keys]
        sort_args = ", ".join([*keys, f"{_SEQ}, 'ASC NULLS LAST'"])
        sort = f"create_sort_key({sort_args}) AS __sk{n}"
        if frame.ranks:
            sort += f", create_sort_key({', '.join(keys)}) AS __rk{n}"
        descent = (
            f"CAST(COALESCE(__sk{n} < LAG(__sk{n}) OVER ({part} ORDER BY {_SEQ}), FALSE) "
            f"AS INTEGER) AS __dn{n}"
        )
        if frame.lead is not None:
            k, size = frame.lead.offset, frame.lead.buffer_rows
            first = min(1, k - size + 2)  # (see `_ordered_sql`: from its first row on)
            since = f"{-first} PRECEDING" if first <= 0 else f"{first} FOLLOWING"
            rows = f"ROWS BETWEEN {since} AND {k} FOLLOWING"
        else:
            rows = f"ROWS BETWEEN {frame.back - 1} PRECEDING AND CURRENT ROW"
        if frame.ranks or (frame.lead is not None and final):
            bad = "TRUE"
        elif frame.back == 0 and frame.lead is None:
            bad = "FALSE"
        else:
            bad = f"COALESCE(SUM(__dn{n}) OVER ({part} ORDER BY {_SEQ} {rows}), 0) > 0"
        return sort, descent, f"{bad} AS __bad{n}"

    def _ordered_sql(self, frame: _Frame, *, carried: bool) -> str:
        """The values of `frame`'s calls for the rows whose value is made now and whose
        frame is out of order: each such row `t` is joined with the rows `b` of its
        frame, and each value aggregated over the rows that sort before it, up to it or
        after it (by the sort key `__skN`: the ORDER BY, then arrival)."""
        n, first = frame.number, frame.calls[0]
        part = _partition(first)
        # A LAG/LEAD default has the type of its argument: LAG over a partition of one
        # row gives it so, as DuckDB's LAG would.
        defaults = "".join(
            f", LAG({c.arg}, 1, {c.default_sql}) OVER (PARTITION BY {_SEQ}) AS __d{c.index}"
            for c in frame.calls
            if c.default_sql
        )
        positions = (
            f"SELECT *, MIN({_SEQ}) OVER ({part}) AS __pid, "
            f"ROW_NUMBER() OVER ({part} ORDER BY {_SEQ}) AS __pos, "
            f"COUNT(*) OVER ({part}) AS __last{defaults} FROM {_BASE}"
        )
        if frame.lead is not None:  # its last row is its k-th follower, or the last row
            i = frame.lead.index
            made = f"__rd{i} AND NOT COALESCE(__fz{i}, FALSE)" if carried else f"__rd{i}"
            high = f"LEAST(__pos + {frame.lead.offset}, __last)"
            low = f"GREATEST(LEAST(__pos, {high} - {first.buffer_rows - 1}), 1)"
        else:
            made, high, low = f"NOT {_HIST}", "__pos", f"GREATEST(__pos - {frame.back}, 1)"
        rank_key = f", __rk{n} AS __ark" if frame.ranks else ""
        me = f"b.{_SEQ} = t.{_TARGET}"
        before, after, upto = (f"b.__sk{n} {op} t.__ak" for op in ("<", ">", "<="))
        values = []
        for call in frame.calls:
            match call.func:
                case "lag" | "lead":
                    # the k nearest rows before (after) it, nearest first; a struct
                    # keeps a NULL value from being skipped
                    pick, side = ("max_by", before) if call.func == "lag" else ("min_by", after)
                    k = call.offset
                    default = f"ANY_VALUE(b.__d{call.index}) FILTER (WHERE {me})"
                    value = (
                        f"CASE WHEN COUNT(*) FILTER (WHERE {side}) >= {k} THEN "
                        f"({pick}({{'v': {call.arg}}}, b.__sk{n}, {k}) FILTER (WHERE {side}))"
                        f"[{k}].v ELSE {default if call.default_sql else 'NULL'} END"
                    )
                case "row_number":  # the rows that left the buffer, then its place in it
                    value = (
                        f"ANY_VALUE(b.__cnt{call.index}) FILTER (WHERE {me}) - COUNT(*) + "
                        f"COUNT(*) FILTER (WHERE {upto})"
                    )
                case "rank":
                    value = f"1 + COUNT(*) FILTER (WHERE b.__rk{n} < t.__ark)"
                case "dense_rank":
                    value = f"1 + COUNT(DISTINCT b.__rk{n}) FILTER (WHERE b.__rk{n} < t.__ark)"
                case _:
                    value = f"{call.func.upper()}({call.arg or '*'}) FILTER (WHERE {upto})"
            values.append(f"{value} AS __o{call.index}")
        return (
            f"WITH s AS ({positions}), "
            f"t AS (SELECT {_SEQ} AS {_TARGET}, __pid AS __tpid, __sk{n} AS __ak{rank_key}, "
            f"UNNEST(range({low}, {high} + 1)) AS __bpos FROM s WHERE {made} AND __bad{n}) "
            f"SELECT t.{_TARGET}, {', '.join(values)} FROM t JOIN s b ON b.__pid = t.__tpid "
            f"AND b.__pos = t.__bpos GROUP BY t.{_TARGET}"
        )

    def _value_sql(self, call: RowWindowCall) -> str:
        """A call's value for the rows it is made for in this run."""
        frame = self._frame_of.get(call.index)
        if frame is None:
            return self._call_sql(call)
        if frame.ranks:
            return f"__o{call.index}"
        return f"CASE WHEN __bad{frame.number} THEN __o{call.index} ELSE {self._call_sql(call)} END"

    def process(self, batch: SourceBatch) -> BatchOutput:
        if batch.table.num_rows == 0:
            return BatchOutput(pa.table({}))
        table = with_row_numbers(batch.table)
        refs = batch.refs
        bad: list[BadRecord] = []
        if self.plan.prejoin_sql is not None:  # the joined rows are the batch
            table, bad, _ = isolate_rows(self, table, self.plan.prejoin_sql, refs)
            table, refs = joined_rows(table, refs)
        filtered, more_bad, _ = isolate_rows(self, table, self._pre_query, refs)
        bad += more_bad
        filtered = filtered.drop_columns(self._checks)
        n = filtered.num_rows
        filtered = (
            filtered.append_column(
                _SEQ, pa.array(np.arange(self._seq, self._seq + n, dtype=np.int64))
            )
            .append_column(_HIST, pa.array(np.zeros(n, dtype=bool)))
            .append_column(_EMITTED, pa.array(np.zeros(n, dtype=bool)))
        )
        self._seq += n
        for call in self._calls:
            if call.func == "row_number":
                filtered = filtered.append_column(f"__abs{call.index}", pa.nulls(n, pa.int64()))
        out = self._run(filtered, final=False)
        return BatchOutput(self._apply_limit(out), bad)

    def _run(self, new: pa.Table, *, final: bool) -> pa.Table:
        con = self.con
        combined = (
            new
            if self._history is None
            else pa.concat_tables([self._history, new], promote_options="permissive")
        )
        carried = self._history is not None
        leads = [c for c in self._calls if c.func == "lead"]
        con.register(_ALL, combined)
        try:
            helpers = [
                f"{self._count_sql(c)} AS __cnt{c.index}"
                for c in self._calls
                if c.func == "row_number"
            ]
            helpers += [
                f"({self._ready_sql(c, final=final, carried=carried)}) AS __rd{c.index}"
                for c in leads
            ]
            layers = [self._frame_columns(f, final=final) for f in self._frames]
            helpers += [sort for sort, _, _ in layers]
            base = f"SELECT *{''.join(', ' + h for h in helpers)} FROM {_ALL}"
            if layers:  # a window function cannot take another's value: one layer each
                base = f"SELECT *, {', '.join(d for _, d, _ in layers)} FROM ({base})"
                base = f"SELECT *, {', '.join(b for _, _, b in layers)} FROM ({base})"
            con.execute(f"CREATE OR REPLACE TEMP TABLE {_BASE} AS {base}")
            source, picked, joins = _BASE, [], []
            for frame in self._frames:
                n = frame.number
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE __ordered{n} AS "
                    f"{self._ordered_sql(frame, carried=carried)}"
                )
                picked += [f"o{n}.__o{c.index}" for c in frame.calls]
                joins.append(f"LEFT JOIN __ordered{n} o{n} ON o{n}.{_TARGET} = b.{_SEQ}")
            if joins:
                source = f"(SELECT b.*, {', '.join(picked)} FROM {_BASE} b {' '.join(joins)})"
            # A value is computed once, when it is final, and kept with its row: every
            # call but LEAD when the row arrives (its preceding rows are all here then),
            # each LEAD when its following rows have arrived. A row waiting for a LEAD
            # must not see its other values change as older rows leave the buffer.
            cols = []
            for call in self._calls:
                sql = self._value_sql(call)
                if carried and _stores_value(call):
                    frozen = f"__fz{call.index}" if call.func == "lead" else _HIST
                    sql = f"CASE WHEN {frozen} THEN __v{call.index} ELSE {sql} END"
                cols.append(f"{sql} AS {call.column}")
            ready = " AND ".join(f"__rd{c.index}" for c in leads) or "TRUE"
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE __computed AS SELECT *, {', '.join(cols)} "
                f"FROM {source}"
            )
            columns = con.table("__computed").columns
            items = self.plan.select_list(columns, self._internal_columns(carried))
            out = con.sql(
                f"SELECT {items} FROM __computed WHERE NOT {_EMITTED} AND {ready} ORDER BY {_SEQ}"
            ).to_arrow_table()
            replaced = [f"TRUE AS {_HIST}", f"({_EMITTED} OR {ready}) AS {_EMITTED}"]
            replaced += [
                f"__cnt{c.index} AS __abs{c.index}" for c in self._calls if c.func == "row_number"
            ]
            values = [f"{c.column} AS __v{c.index}" for c in self._calls if _stores_value(c)]
            values += [f"__rd{c.index} AS __fz{c.index}" for c in leads]
            previous = self._value_columns() if carried else []
            exclude = f"EXCLUDE ({', '.join(previous)}) " if previous else ""
            history = con.sql(
                f"SELECT * {exclude}REPLACE ({', '.join(replaced)}), {', '.join(values)} "
                f"FROM __computed QUALIFY NOT ({_EMITTED} OR {ready}) OR ROW_NUMBER() OVER "
                f"(PARTITION BY {self._history_keys()} ORDER BY {_SEQ} DESC) <= {self._keep} "
                f"ORDER BY {_SEQ}"
            ).to_arrow_table()
        finally:
            con.unregister(_ALL)
        scratch = self._scratch_columns()
        self._history = history.drop_columns([c for c in scratch if c in history.column_names])
        return out

    def _value_columns(self) -> list[str]:
        """The values carried with each row in the buffer (see `_run`)."""
        names = [f"__v{c.index}" for c in self._calls if _stores_value(c)]
        return names + [f"__fz{c.index}" for c in self._calls if c.func == "lead"]

    def _history_keys(self) -> str:
        # Rows are kept per partition of every call; the union keeps enough for each.
        parts = {p for c in self._calls for p in c.partition_sql}
        return ", ".join(sorted(parts)) if parts else "0"

    def _scratch_columns(self) -> list[str]:
        """The columns a run adds that the buffer does not keep."""
        names = [c.column for c in self._calls]
        names += [f"__cnt{c.index}" for c in self._calls if c.func == "row_number"]
        names += [f"__o{c.index}" for c in self._calls if c.order_sql]
        names += [f"__rd{c.index}" for c in self._calls if c.func == "lead"]
        for frame in self._frames:
            names += [f"__{p}{frame.number}" for p in ("sk", "dn", "bad")]
            names += [f"__rk{frame.number}"] if frame.ranks else []
        return names

    def _internal_columns(self, carried: bool) -> list[str]:
        """Every column of a run that is not the input's (never part of `*`)."""
        names = [ROW, _SEQ, _HIST, _EMITTED, *self._scratch_columns()]
        names += [f"__abs{c.index}" for c in self._calls if c.func == "row_number"]
        if carried:
            names += self._value_columns()
        return names

    @cached_property
    def shape(self) -> dict[str, Any]:
        """The window calls: the buffered rows carry a value per call."""
        return {"kind": self.state_kind, "windows": [_describe(c) for c in self._calls]}

    def _upgraded(self, history: Any) -> Any:
        """Buffered rows from before a ROW_NUMBER with ORDER BY kept its value: the value
        then was the count (`__absN`)."""
        if not isinstance(history, pa.Table):
            return history
        for call in self._calls:
            value, count = f"__v{call.index}", f"__abs{call.index}"
            names = history.column_names
            missing = value not in names and count in names
            if call.func == "row_number" and call.order_sql and missing:
                history = history.append_column(value, history.column(count))
        return history

    def check_state(self, state: Mapping[str, Any]) -> None:
        """The shape, then the buffered rows: they must carry the values of these calls."""
        super().check_state(state)
        history = self._upgraded(state.get("history"))
        if history is None:
            return
        ours = [_SEQ, _HIST, _EMITTED, *self._value_columns()]
        ours += [f"__abs{c.index}" for c in self._calls if c.func == "row_number"]
        # The input's own columns are whatever the source gave; only ours are checked.
        names = history.column_names if isinstance(history, pa.Table) else []
        inputs = [n for n in names if n not in ours[:3] and not _CARRIED.fullmatch(n)]
        check_columns("buffered rows", history, [*inputs, *ours])

    def snapshot(self) -> dict[str, Any]:
        state = super().snapshot()
        state["seq"] = self._seq
        if self._history is not None:
            state["history"] = self._history
        return state

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self._seq = int(state.get("seq", 0))
        self._history = self._upgraded(state.get("history"))

    def finish(self) -> pa.Table | None:
        if not self._has_lead or self._history is None:
            return None
        empty = self._history.slice(0, 0)
        return self._apply_limit(self._run(empty, final=True))
