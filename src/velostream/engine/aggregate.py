"""GROUP BY over a stream: running values (EMIT CHANGES), final values, tumbling windows.

Each aggregate keeps *partials* per group (count; sum; sum and count for AVG; n, mean
and M2 for STDDEV; ...). A batch is aggregated by DuckDB — with window functions for
EMIT CHANGES, so every input row gets its group's running value, or with GROUP BY for
EMIT FINAL — and merged with the state carried from earlier batches, which lives in a
DuckDB table keyed by the group. Results do not depend on where batches are cut.

A tumbling window adds the window start and end to the group key; `tumbling` assigns
rows to windows, keeps the watermark and handles late rows, and tells which windows
have closed: those are emitted (EMIT FINAL) and forgotten; all open windows are emitted
when a bounded source ends.
"""

from __future__ import annotations

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
    with_row_numbers,
)
from velostream.engine.direct import picked_columns, renames
from velostream.engine.final import FinalAggregates
from velostream.engine.running import RunningAggregates
from velostream.engine.tumbling import NO_WINDOW_STATE, TumblingWindows
from velostream.errors import StateIncompatibleError
from velostream.sql.planner import ARG, BATCH, KEY, ROW, AggregateCall, QueryPlan

__all__ = ["AggregateExecutor"]

_STATE = "__state"
_PRE = "__pre"
_SEEN = "__seen"
_NUMERIC_INT = (pa.types.is_integer, pa.types.is_boolean)


@dataclass(frozen=True, slots=True)
class _Partial:
    """One state column of an aggregate: its running and grouped SQL and how to merge."""

    name: str
    running: str
    grouped: str
    merge: str  # over `s.<name>` (state) and `b.<name>` (batch)


def _partials(call: AggregateCall, int_arg: bool) -> list[_Partial]:
    a = ARG.format(call.index)
    p = f"__p{call.index}_"
    w = " OVER w"

    def add(name: str) -> str:
        return f"COALESCE(s.{p}{name}, 0) + COALESCE(b.{p}{name}, 0)"

    if call.func == "count_star":
        return [_Partial(p + "c", f"COUNT(*){w}", "COUNT(*)", add("c"))]
    if call.func == "count":
        return [_Partial(p + "c", f"COUNT({a}){w}", f"COUNT({a})", add("c"))]
    if call.func == "count_distinct":
        new = f"CAST(__new{call.index} AS BIGINT)"
        return [
            _Partial(
                p + "c", f"CAST(SUM({new}){w} AS BIGINT)", f"CAST(SUM({new}) AS BIGINT)", add("c")
            )
        ]
    if call.func in ("sum", "avg"):
        total = f"SUM({a})"
        run_total = f"SUM({a}){w}"
        if int_arg:
            # HUGEINT, as DuckDB sums integers: a running total must not overflow
            # where the one-shot sum would not (the output is int64 when it fits).
            total, run_total = f"CAST({total} AS HUGEINT)", f"CAST({run_total} AS HUGEINT)"
        s_merge = f"COALESCE(s.{p}s + b.{p}s, s.{p}s, b.{p}s)"
        parts = [_Partial(p + "s", run_total, total, s_merge)]
        if call.func == "avg":
            parts.append(_Partial(p + "n", f"COUNT({a}){w}", f"COUNT({a})", add("n")))
        return parts
    if call.func in ("min", "max"):
        f, pick = ("MIN", "LEAST") if call.func == "min" else ("MAX", "GREATEST")
        return [_Partial(p + "m", f"{f}({a}){w}", f"{f}({a})", f"{pick}(s.{p}m, b.{p}m)")]
    if call.func in ("stddev", "stddev_pop"):
        sn, bn = f"COALESCE(s.{p}n, 0)", f"COALESCE(b.{p}n, 0)"
        mean = (
            f"CASE WHEN {sn} = 0 THEN b.{p}mean WHEN {bn} = 0 THEN s.{p}mean "
            f"ELSE (s.{p}mean * {sn} + b.{p}mean * {bn}) / ({sn} + {bn}) END"
        )
        m2 = (
            f"CASE WHEN {sn} = 0 THEN b.{p}m2 WHEN {bn} = 0 THEN s.{p}m2 "
            f"ELSE s.{p}m2 + b.{p}m2 "
            f"+ (b.{p}mean - s.{p}mean) ^ 2 * {sn} * {bn} / ({sn} + {bn}) END"
        )
        x = f"CAST({a} AS DOUBLE)"
        return [
            _Partial(p + "n", f"COUNT({x}){w}", f"COUNT({x})", f"{sn} + {bn}"),
            _Partial(p + "mean", f"AVG({x}){w}", f"AVG({x})", mean),
            _Partial(
                p + "m2",
                f"VAR_POP({x}){w} * COUNT({x}){w}",
                f"VAR_POP({x}) * COUNT({x})",
                m2,
            ),
        ]
    if call.func == "first_value":
        return [
            _Partial(
                p + "v",
                f"FIRST_VALUE({a}){w}",
                f"FIRST({a} ORDER BY {ROW})",
                f"CASE WHEN s.{_SEEN} THEN s.{p}v ELSE b.{p}v END",
            )
        ]
    if call.func == "last_value":
        return [
            _Partial(
                p + "v",
                f"LAST_VALUE({a}){w}",
                f"LAST({a} ORDER BY {ROW})",
                f"CASE WHEN b.{_SEEN} THEN b.{p}v ELSE s.{p}v END",
            )
        ]
    raise ValueError(f"unsupported aggregate {call.func}")


def _final(call: AggregateCall) -> str:
    p = f"__p{call.index}_"
    match call.func:
        case "count_star" | "count" | "count_distinct":
            return f"{p}c"
        case "sum":
            return f"{p}s"
        case "avg":
            return f"CASE WHEN {p}n > 0 THEN CAST({p}s AS DOUBLE) / {p}n END"
        case "min" | "max":
            return f"{p}m"
        case "stddev":
            return f"CASE WHEN {p}n > 1 THEN SQRT(GREATEST({p}m2, 0) / ({p}n - 1)) END"
        case "stddev_pop":
            return f"CASE WHEN {p}n > 0 THEN SQRT(GREATEST({p}m2, 0) / {p}n) END"
        case _:
            return f"{p}v"


def _describe(call: AggregateCall) -> str:
    """An aggregate as SQL, for a state's shape and its error messages."""
    if call.func == "count_star":
        return "COUNT(*)"
    if call.func == "count_distinct":
        return f"COUNT(DISTINCT {call.arg})"
    return f"{call.func.upper()}({call.arg or ''})"


class AggregateExecutor(Executor):
    """GROUP BY with EMIT CHANGES or EMIT FINAL, optionally in tumbling windows."""

    state_kind = "aggregate"

    def __init__(
        self,
        plan: QueryPlan,
        con: duckdb.DuckDBPyConnection | None = None,
        *,
        out_of_orderness_ms: int = 0,
        late_to_dead_letter: bool = False,
    ) -> None:
        super().__init__(plan, con)
        self._windows = (
            None
            if plan.window is None
            else TumblingWindows(
                plan.window,
                out_of_orderness_ms=out_of_orderness_ms,
                late_to_dead_letter=late_to_dead_letter,
            )
        )
        keys = plan.keys or ["0"]
        self._key_cols = [KEY.format(i) for i in range(len(keys))]
        if self._windows is not None:
            self._key_cols = [*TumblingWindows.KEY_COLUMNS, *self._key_cols]
        self._key_exprs = keys
        self._partials: list[_Partial] | None = None
        self._distinct = [c for c in plan.aggregates if c.func == "count_distinct"]
        self._has_state = False
        # Without a time window, EMIT CHANGES runs on numpy (`running`) and EMIT FINAL
        # on Arrow's grouping (`final`) when the aggregates and types allow; decided on
        # the first batch, kept in snapshots. Otherwise ("sql") the state is in DuckDB.
        self._running: RunningAggregates | None = None
        self._final: FinalAggregates | None = None
        self._mode: str | None = None if self._may_run() else "sql"
        self._pending: dict[str, Any] | None = None
        self._renames = None if plan.having_sql else renames(plan.select_sql)

    def _may_run(self) -> bool:
        return self._windows is None

    @property
    def late_records(self) -> int:
        """Rows found late (dropped or dead-lettered); none without a window."""
        return 0 if self._windows is None else self._windows.late_records

    # --- SQL pieces -------------------------------------------------------------

    def _pre_query(self) -> str:
        items = [f"({expr}) AS {KEY.format(i)}" for i, expr in enumerate(self._key_exprs)]
        items += [
            f"({c.arg}) AS {ARG.format(c.index)}" for c in self.plan.aggregates if c.arg is not None
        ]
        if self._windows is not None:
            time_sql, column = self._windows.pre_item
            items.append(f"({time_sql}) AS {column}")
        items.append(ROW)
        where = f" WHERE {self.plan.where_sql}" if self.plan.where_sql else ""
        return f"SELECT {', '.join(items)} FROM {BATCH}{where}"

    def _direct_pre(self, table: pa.Table) -> pa.Table | None:
        """The pre-query's rows straight from the batch, when it only picks columns."""
        if self.plan.where_sql:
            return None
        exprs = [(expr, KEY.format(i)) for i, expr in enumerate(self.plan.keys)]
        exprs += [(c.arg, ARG.format(c.index)) for c in self.plan.aggregates if c.arg is not None]
        if self._windows is not None:
            exprs.append(self._windows.pre_item)
        if not self.plan.keys:  # a global aggregate: one group, keyed 0 (an INTEGER)
            zeros = pa.array(np.zeros(table.num_rows, dtype=np.int32))
            table = table.append_column(KEY.format(0), zeros)
            exprs.insert(0, (f'"{KEY.format(0)}"', KEY.format(0)))
        return picked_columns(table, [*exprs, (ROW, ROW)])

    def _match(self, left: str, right: str) -> str:
        return " AND ".join(f"{left}.{k} IS NOT DISTINCT FROM {right}.{k}" for k in self._key_cols)

    def _ensure_partials(self, pre: pa.Table) -> list[_Partial]:
        if self._partials is None:
            parts: list[_Partial] = []
            for call in self.plan.aggregates:
                int_arg = False
                if call.arg is not None:
                    t = pre.schema.field(ARG.format(call.index)).type
                    int_arg = pa.types.is_integer(t) or pa.types.is_boolean(t)
                parts.extend(_partials(call, int_arg))
            self._partials = parts
        return self._partials

    def _finals(self) -> str:
        return ", ".join(f"{_final(c)} AS {c.column}" for c in self.plan.aggregates) or "1 AS __x"

    def _project(self, source: str, order: str) -> str:
        having = f" WHERE {self.plan.having_sql}" if self.plan.having_sql else ""
        inner = f"SELECT *, {self._finals()} FROM {source}"
        return f"SELECT {', '.join(self.plan.select_sql)} FROM ({inner}){having} ORDER BY {order}"

    # --- batches ------------------------------------------------------------------

    def process(self, batch: SourceBatch) -> BatchOutput:
        if batch.table.num_rows == 0:
            return BatchOutput(pa.table({}))
        table = with_row_numbers(batch.table)
        pre = self._direct_pre(table)
        bad: list[BadRecord] = []
        if pre is None:
            pre, bad, _ = isolate_rows(self, table, self._pre_query(), batch.refs)
        late: list[BadRecord] = []
        if self._windows is not None:
            pre, more_bad, late = self._windows.assign(pre, batch.refs)
            bad.extend(more_bad)
        if self._mode == "sql":
            out = self._process_sql(pre)
        elif self.plan.emit == "CHANGES":
            out = self._run_changes(pre)
        else:
            out = self._run_final(pre)
        return BatchOutput(self._apply_limit(out), bad, late)

    def _process_sql(self, pre: pa.Table) -> pa.Table:
        """One batch on DuckDB: the state is a table merged with the batch's partials."""
        if pre.num_rows == 0:
            return self._emit_closed()
        partials = self._ensure_partials(pre)
        con = self.con
        con.register(_PRE, pre)
        try:
            if self._distinct:
                pre = self._flag_distinct(pre)
                con.register(_PRE, pre)
            keys = ", ".join(self._key_cols)
            if not self._has_state:
                cols = ", ".join(
                    [
                        *self._key_cols,
                        f"TRUE AS {_SEEN}",
                        *(f"{p.grouped} AS {p.name}" for p in partials),
                    ]
                )
                con.execute(
                    f"CREATE OR REPLACE TABLE {_STATE} AS SELECT {cols} FROM {_PRE} "
                    f"GROUP BY {keys} LIMIT 0"
                )
                self._has_state = True
            merged = ", ".join(f"{p.merge} AS {p.name}" for p in partials)
            if self.plan.emit == "CHANGES":
                running = ", ".join(f"{p.running} AS {p.name}" for p in partials)
                window = (
                    f"WINDOW w AS (PARTITION BY {keys} ORDER BY {ROW} ROWS UNBOUNDED PRECEDING)"
                )
                bkeys = ", ".join(f"b.{k}" for k in self._key_cols)
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE __merged AS SELECT b.{ROW}, {bkeys}, "
                    f"TRUE AS {_SEEN}, {merged} FROM (SELECT {ROW}, {keys}, TRUE AS {_SEEN}, "
                    f"{running} FROM {_PRE} {window}) b LEFT JOIN {_STATE} s ON "
                    f"{self._match('b', 's')}"
                )
                out = con.sql(self._project("__merged", ROW)).to_arrow_table()
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE __upd AS SELECT * EXCLUDE ({ROW}) FROM __merged "
                    f"QUALIFY ROW_NUMBER() OVER (PARTITION BY {keys} ORDER BY {ROW} DESC) = 1"
                )
                con.execute(
                    f"CREATE OR REPLACE TABLE {_STATE} AS SELECT s.* FROM {_STATE} s ANTI JOIN "
                    f"__upd u ON {self._match('s', 'u')} UNION ALL BY NAME SELECT * FROM __upd"
                )
            else:
                # One statement: the batch's partials, grouped, merged into the state.
                grouped = ", ".join(f"{p.grouped} AS {p.name}" for p in partials)
                either = ", ".join(f"COALESCE(b.{k}, s.{k}) AS {k}" for k in self._key_cols)
                con.execute(
                    f"CREATE OR REPLACE TABLE {_STATE} AS SELECT {either}, TRUE AS {_SEEN}, "
                    f"{merged} FROM {_STATE} s FULL JOIN (SELECT {keys}, TRUE AS {_SEEN}, "
                    f"{grouped} FROM {_PRE} GROUP BY {keys}) b ON {self._match('b', 's')}"
                )
                out = None
        finally:
            con.unregister(_PRE)
        if out is None:
            return self._emit_closed()
        # EMIT CHANGES emitted every row as it came: a closed window is only forgotten.
        self._drop_closed()
        return out

    def _run_changes(self, pre: pa.Table) -> pa.Table:
        """EMIT CHANGES on numpy (`running`), or the decision to run it on DuckDB."""
        if self._running is None:
            self._running = RunningAggregates.build(self.plan, pre.schema)
            if self._running is None:
                self._mode = "sql"
                return self._process_sql(pre)
            self._mode = "running"
            if self._pending is not None:
                self._running.restore(self._pending)
                self._pending = None
        if pre.num_rows == 0:
            return pa.table({})
        values = self._running.process(pre)
        if self._renames is not None:
            picked = values.select([column for column, _ in self._renames])
            return picked.rename_columns([name for _, name in self._renames])
        having = f" WHERE {self.plan.having_sql}" if self.plan.having_sql else ""
        self.con.register(_PRE, values)
        try:
            # A scan keeps its input order (preserve_insertion_order): rows stay in order.
            return self.con.sql(
                f"SELECT {', '.join(self.plan.select_sql)} FROM {_PRE}{having}"
            ).to_arrow_table()
        finally:
            self.con.unregister(_PRE)

    def _run_final(self, pre: pa.Table) -> pa.Table:
        """EMIT FINAL: merge the batch into the grouped partials (`final`); emits nothing."""
        if self._final is None:
            self._final = FinalAggregates.build(self.plan, pre.schema)
            if self._final is None:
                self._mode = "sql"
                return self._process_sql(pre)
            self._mode = "grouped"
            if self._pending is not None:
                self._final.restore(self._pending)
                self._pending = None
        self._final.add(pre)
        return pa.table({})

    def _flag_distinct(self, pre: pa.Table) -> pa.Table:
        con = self.con
        keys = ", ".join(self._key_cols)
        for call in self._distinct:
            a, d = ARG.format(call.index), f"__dstate{call.index}"
            if not self._has_state:
                con.execute(
                    f"CREATE OR REPLACE TABLE {d} AS SELECT {keys}, {a} AS v FROM {_PRE} LIMIT 0"
                )
            pre = con.sql(
                f"SELECT p.*, (p.{a} IS NOT NULL AND d.v IS NULL AND ROW_NUMBER() OVER "
                f"(PARTITION BY {', '.join('p.' + k for k in self._key_cols)}, p.{a} "
                f"ORDER BY p.{ROW}) = 1) AS __new{call.index} FROM {_PRE} p LEFT JOIN {d} d ON "
                f"{self._match('p', 'd')} AND d.v = p.{a} ORDER BY p.{ROW}"
            ).to_arrow_table()
            con.register(_PRE, pre)
            con.execute(f"INSERT INTO {d} SELECT {keys}, {a} FROM {_PRE} WHERE __new{call.index}")
        return pre

    # --- closed windows -------------------------------------------------------------

    def _order(self) -> str:
        order = list(self.plan.order_sql) or list(self._key_cols)
        if self._windows is not None:
            order = self._windows.in_time_order(order)
        return ", ".join(order)

    def _emit_closed(self) -> pa.Table:
        """Emit and forget the windows the watermark has passed (windowed EMIT FINAL)."""
        if self._windows is None or not self._has_state:
            return pa.table({})
        closed = self._windows.closed()
        if closed is None:
            return pa.table({})
        chosen = f"(SELECT * FROM {_STATE} WHERE {closed})"
        out = self.con.sql(self._project(chosen, self._order())).to_arrow_table()
        self._drop_closed()
        return out

    def _drop_closed(self) -> None:
        closed = None if self._windows is None else self._windows.closed()
        if closed is not None and self._has_state:
            self.con.execute(f"DELETE FROM {_STATE} WHERE {closed}")
            # COUNT(DISTINCT) values seen in a closed window are state too.
            for call in self._distinct:
                self.con.execute(f"DELETE FROM __dstate{call.index} WHERE {closed}")

    @cached_property
    def shape(self) -> dict[str, Any]:
        """The keys, the aggregates (their partials are the state's columns), the window
        and the emit mode (EMIT CHANGES and EMIT FINAL keep different partials)."""
        return {
            "kind": self.state_kind,
            "group_by": list(self.plan.keys),
            "aggregates": [_describe(c) for c in self.plan.aggregates],
            "window": None if self._windows is None else self._windows.describe(),
            "emit": "CHANGES" if self.plan.emit == "CHANGES" else "FINAL",
        }

    def check_state(self, state: Mapping[str, Any]) -> None:
        """The shape, then the tables: their key and partial columns must be the plan's."""
        super().check_state(state)
        if state.get("has_state") and _STATE in state:
            partials = [p.name for c in self.plan.aggregates for p in _partials(c, False)]
            check_columns("GROUP BY table", state[_STATE], [*self._key_cols, _SEEN, *partials])
            for call in self._distinct:
                check_columns(
                    f"COUNT(DISTINCT) values of {_describe(call)}",
                    state.get(f"__dstate{call.index}"),
                    [*self._key_cols, "v"],
                )
        mode = state.get("mode", "sql" if state.get("has_state") else None)
        if mode in ("running", "grouped"):
            changes = mode == "running"
            if self._windows is not None or changes != (self.plan.emit == "CHANGES"):
                kept = "EMIT CHANGES" if changes else "EMIT FINAL"
                raise StateIncompatibleError(
                    f"the state holds the partials of an {kept} GROUP BY without a window; "
                    "the query is not one"
                )
            checker = RunningAggregates if changes else FinalAggregates
            checker.check_state(self.plan, state)

    def snapshot(self) -> dict[str, Any]:
        state = super().snapshot()
        state["has_state"] = self._has_state
        state.update(NO_WINDOW_STATE if self._windows is None else self._windows.snapshot())
        state["mode"] = self._mode
        if self._running is not None:
            state.update(self._running.snapshot())
        elif self._final is not None:
            state.update(self._final.snapshot())
        elif self._pending is not None:
            state.update(self._pending)
        if self._has_state:
            state[_STATE] = self.con.sql(f"SELECT * FROM {_STATE}").to_arrow_table()
            for call in self._distinct:
                name = f"__dstate{call.index}"
                state[name] = self.con.sql(f"SELECT * FROM {name}").to_arrow_table()
        return state

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        if self._windows is not None:
            self._windows.restore(state)
        if self._may_run():
            # (a snapshot without a mode, from before numpy ran EMIT CHANGES, is DuckDB's)
            self._mode = state.get("mode", "sql" if state.get("has_state") else None)
            fast = self._running or self._final
            if self._mode in ("running", "grouped") and fast is not None:
                fast.restore(state)
            elif self._mode in ("running", "grouped"):  # rebuilt with the next batch's types
                prefixes = ("running_", "final_")
                self._pending = {k: v for k, v in state.items() if k.startswith(prefixes)}
            else:
                self._running = self._final = self._pending = None
        self._has_state = bool(state.get("has_state", False)) and _STATE in state
        tables = [_STATE, *(f"__dstate{c.index}" for c in self._distinct)]
        for name in tables:
            table = state.get(name)
            if not self._has_state or table is None:
                self.con.execute(f"DROP TABLE IF EXISTS {name}")
                continue
            self.con.register("__restore", table)
            try:
                self.con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM __restore")
            finally:
                self.con.unregister("__restore")

    def finish(self) -> pa.Table | None:
        if self._final is not None:
            state = self._final.table()
            self._final = FinalAggregates(self.plan, self._final.schema)
            if state.num_rows == 0:
                return None
            self.con.register(_PRE, state)
            try:
                out = self.con.sql(self._project(_PRE, self._order())).to_arrow_table()
            finally:
                self.con.unregister(_PRE)
            return self._apply_limit(out)
        if not self._has_state or self.plan.emit == "CHANGES":
            return None
        out = self.con.sql(self._project(_STATE, self._order())).to_arrow_table()
        self.con.execute(f"DELETE FROM {_STATE}")
        return self._apply_limit(out)
