"""Row windows: `f(...) OVER (ROWS WINDOW BUFFER N ROWS [PARTITION BY ...] [ORDER BY ...])`.

The last N rows of each partition are carried from batch to batch. Each batch runs
as one DuckDB query over the carried rows followed by the new ones, in arrival order:
LAG, running SUM/AVG/MIN/MAX/COUNT over the last N rows, ROW_NUMBER counted over the
whole partition, RANK/DENSE_RANK of the ORDER BY value among the last N rows, and
LEAD — a row with a LEAD waits until its following row arrives (or the source ends).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cached_property
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from velostream.datasource.traits import SourceBatch
from velostream.engine.core import (
    BatchOutput,
    Executor,
    check_columns,
    isolate_rows,
    star,
    with_row_numbers,
)
from velostream.sql.planner import BATCH, ROW, QueryPlan, RowWindowCall

__all__ = ["RowWindowExecutor"]

_SEQ = "__seq"
_HIST = "__hist"
_EMITTED = "__emitted"
_ALL = "__all"
# The values a buffered row carries for each call (see `RowWindowExecutor._run`).
_CARRIED = re.compile(r"__(v|fz|abs)\d+")


def _partition(call: RowWindowCall) -> str:
    return f"PARTITION BY {', '.join(call.partition_sql)}" if call.partition_sql else ""


def _keys(call: RowWindowCall) -> str:
    return ", ".join(call.partition_sql) if call.partition_sql else "0"


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
        # Row-level CASTs of the SELECT run here first, so that a row failing one is
        # isolated before it reaches the window query (which spans batches).
        self._checks = [f"__chk{i}" for i, c in enumerate(c for c in plan.casts if not c[3])]
        checks = "".join(
            f", ({cast[4]}) AS __chk{i}" for i, cast in enumerate(c for c in plan.casts if not c[3])
        )
        where = f" WHERE {plan.where_sql}" if plan.where_sql else ""
        self._pre_query = f"SELECT *{checks} FROM {BATCH}{where}"

    def _call_sql(self, call: RowWindowCall) -> str:
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
                col = f"__abs{call.index}"
                return (
                    f"CASE WHEN {_HIST} THEN {col} ELSE COALESCE(MAX({col}) OVER ({part}), 0) + "
                    f"ROW_NUMBER() OVER ({part}{',' if part else 'PARTITION BY'} {_HIST} "
                    f"ORDER BY {_SEQ}) END"
                )
            case "count":
                arg = call.arg or "*"
                return f"COUNT({arg}) OVER {frame}"
            case "rank" | "dense_rank":
                return f"__rank{call.index}"
            case _:
                return f"{call.func.upper()}({call.arg}) OVER {frame}"

    def _rank_sql(self, call: RowWindowCall, source: str) -> str:
        """RANK/DENSE_RANK of each row's ORDER BY value among its partition's last N rows."""
        expr = call.order_sql[0]
        nulls_first = expr.upper().endswith(" NULLS FIRST")
        if nulls_first or expr.upper().endswith(" NULLS LAST"):
            expr = expr[: expr.upper().rindex(" NULLS ")]
        desc = expr.upper().endswith(" DESC")
        if desc or expr.upper().endswith(" ASC"):
            expr = expr[: expr.upper().rindex(" ")]
        cmp = ">" if desc else "<"
        # Rows that sort before a: a smaller (larger, DESC) value, or a NULL on the
        # NULLS side (DuckDB's default is NULLS LAST either way).
        null_before = (
            "(b.__o IS NULL AND a.__o IS NOT NULL)"
            if nulls_first
            else "(a.__o IS NULL AND b.__o IS NOT NULL)"
        )
        before = f"(b.__o {cmp} a.__o OR {null_before})"
        part = _partition(call)
        pos = f"ROW_NUMBER() OVER ({part} ORDER BY {_SEQ})"
        match = (
            " AND ".join(
                f"a.__pk{i} IS NOT DISTINCT FROM b.__pk{i}" for i in range(len(call.partition_sql))
            )
            or "TRUE"
        )
        pk = ", ".join(f"({p}) AS __pk{i}" for i, p in enumerate(call.partition_sql))
        pk = (pk + ", ") if pk else ""
        inner = f"SELECT {_SEQ}, {pk}({expr}) AS __o, {pos} AS __pos FROM {source}"
        if call.func == "rank":
            fn = f"COUNT(*) FILTER (WHERE {before})"
        else:  # the NULLs before a, if any, are one more distinct value
            fn = (
                f"COUNT(DISTINCT b.__o) FILTER (WHERE {before}) + "
                f"COALESCE(MAX(CAST(b.__o IS NULL AS INTEGER)) FILTER (WHERE {before}), 0)"
            )
        return (
            f"SELECT a.{_SEQ}, 1 + {fn} AS __rank{call.index} "
            f"FROM ({inner}) a JOIN ({inner}) b ON {match} AND b.__pos BETWEEN "
            f"a.__pos - {call.buffer_rows - 1} AND a.__pos GROUP BY a.{_SEQ}"
        )

    def process(self, batch: SourceBatch) -> BatchOutput:
        if batch.table.num_rows == 0:
            return BatchOutput(pa.table({}))
        table = with_row_numbers(batch.table)
        filtered, bad, _ = isolate_rows(self, table, self._pre_query, batch.refs)
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
        con.register(_ALL, combined)
        try:
            ranks = [c for c in self._calls if c.func in ("rank", "dense_rank")]
            source = _ALL
            for call in ranks:
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE __ranked{call.index} AS "
                    f"{self._rank_sql(call, _ALL)}"
                )
            if ranks:
                joins = " ".join(f"JOIN __ranked{c.index} USING ({_SEQ})" for c in ranks)
                source = f"(SELECT * FROM {_ALL} {joins})"
            # A value is computed once, when it is final, and kept with its row: every
            # call but LEAD when the row arrives (its preceding rows are all here then),
            # each LEAD when its following rows have arrived. A row waiting for a LEAD
            # must not see its other values change as older rows leave the buffer.
            carried = self._history is not None
            cols, ready_cols = [], []
            for call in self._calls:
                sql = self._call_sql(call)
                if carried and call.func != "row_number":
                    frozen = f"__fz{call.index}" if call.func == "lead" else _HIST
                    sql = f"CASE WHEN {frozen} THEN __v{call.index} ELSE {sql} END"
                cols.append(f"{sql} AS {call.column}")
                if call.func == "lead":
                    done = (
                        "TRUE"
                        if final
                        else f"COUNT(*) OVER ({_partition(call)} ORDER BY {_SEQ} ROWS BETWEEN "
                        f"1 FOLLOWING AND UNBOUNDED FOLLOWING) >= {call.offset}"
                    )
                    if carried:
                        done = f"COALESCE(__fz{call.index}, FALSE) OR {done}"
                    ready_cols.append(f"({done}) AS __rd{call.index}")
            leads = [c for c in self._calls if c.func == "lead"]
            ready = " AND ".join(f"__rd{c.index}" for c in leads) or "TRUE"
            con.execute(
                "CREATE OR REPLACE TEMP TABLE __computed AS SELECT *, "
                f"{', '.join(cols + ready_cols)} FROM {source}"
            )
            everything = star(ROW, _SEQ, _HIST, _EMITTED, *self._internal_columns(carried))
            items = ", ".join(everything if item == "*" else item for item in self.plan.select_sql)
            out = con.sql(
                f"SELECT {items} FROM __computed WHERE NOT {_EMITTED} AND {ready} ORDER BY {_SEQ}"
            ).to_arrow_table()
            replaced = [f"TRUE AS {_HIST}", f"({_EMITTED} OR {ready}) AS {_EMITTED}"]
            replaced += [
                f"{c.column} AS __abs{c.index}" for c in self._calls if c.func == "row_number"
            ]
            values = [f"{c.column} AS __v{c.index}" for c in self._calls if c.func != "row_number"]
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
        drop = [*self._call_columns().split(", ")[1:]]
        drop += [f"__rd{c.index}" for c in self._calls if c.func == "lead"]
        self._history = history.drop_columns([c for c in drop if c in history.column_names])
        return out

    def _value_columns(self) -> list[str]:
        """The values carried with each row in the buffer (see `_run`)."""
        names = [f"__v{c.index}" for c in self._calls if c.func != "row_number"]
        return names + [f"__fz{c.index}" for c in self._calls if c.func == "lead"]

    def _history_keys(self) -> str:
        # Rows are kept per partition of every call; the union keeps enough for each.
        parts = {p for c in self._calls for p in c.partition_sql}
        return ", ".join(sorted(parts)) if parts else "0"

    def _call_columns(self) -> str:
        names = [c.column for c in self._calls]
        names += [f"__rank{c.index}" for c in self._calls if c.func in ("rank", "dense_rank")]
        return "".join(f", {n}" for n in names)

    def _internal_columns(self, carried: bool) -> list[str]:
        names = [c.column for c in self._calls]
        names += [f"__abs{c.index}" for c in self._calls if c.func == "row_number"]
        names += [f"__rank{c.index}" for c in self._calls if c.func in ("rank", "dense_rank")]
        names += [f"__rd{c.index}" for c in self._calls if c.func == "lead"]
        if carried:
            names += self._value_columns()
        return names

    @cached_property
    def shape(self) -> dict[str, Any]:
        """The window calls: the buffered rows carry a value per call."""
        return {"kind": self.state_kind, "windows": [_describe(c) for c in self._calls]}

    def check_state(self, state: Mapping[str, Any]) -> None:
        """The shape, then the buffered rows: they must carry the values of these calls."""
        super().check_state(state)
        history = state.get("history")
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
        self._history = state.get("history")

    def finish(self) -> pa.Table | None:
        if not self._has_lead or self._history is None:
            return None
        empty = self._history.slice(0, 0)
        return self._apply_limit(self._run(empty, final=True))
