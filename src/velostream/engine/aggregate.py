"""GROUP BY over a stream: running values (EMIT CHANGES), final values, time windows.

A batch first goes through the *pre-query*, which computes each row's group keys
(`__kN`), aggregate arguments (`__aN`) and, with a window, event time (`__et`). Its rows
then go to one of three paths, which keep *partials* per group across batches:

- `running` (numpy): EMIT CHANGES without a window, for the aggregates it supports;
- `final` (Arrow's grouping): EMIT FINAL without a window, likewise;
- `duckdb_aggregates`: everything else, the state in a DuckDB table.

The path is chosen on the first batch (the argument types decide) and kept in
snapshots. A tumbling or sliding window (`tumbling`, `sliding`) assigns rows to windows
(a sliding window copies a row into each of its windows), keeps the watermark and
handles late rows before the rows reach the DuckDB path; the windows it finds closed
are emitted (EMIT FINAL) and forgotten, and all open windows when a bounded source
ends. Session windows (`session`) keep their own state and do all of this themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from velostream.datasource.traits import BadRecord, NoRefs, SourceBatch
from velostream.engine.core import (
    BatchOutput,
    Executor,
    isolate_rows,
    joined_rows,
    record_rows,
    with_row_numbers,
)
from velostream.engine.direct import picked_columns, renames
from velostream.engine.duckdb_aggregates import (
    MAX_STRING_BYTES,
    DuckDBAggregates,
    describe,
    partials_of,
    projection,
)
from velostream.engine.final import FinalAggregates
from velostream.engine.running import RunningAggregates
from velostream.engine.session import SessionWindows
from velostream.engine.sliding import SlidingWindows
from velostream.engine.tumbling import NO_WINDOW_STATE, TumblingWindows
from velostream.errors import ErrorKind, Stage, StateIncompatibleError
from velostream.sql.planner import ARG, KEY, ROW, QueryPlan

__all__ = ["AggregateExecutor"]

_PRE = "__pre"


class AggregateExecutor(Executor):
    """GROUP BY with EMIT CHANGES or EMIT FINAL, optionally in time windows."""

    state_kind = "aggregate"

    def __init__(
        self,
        plan: QueryPlan,
        con: duckdb.DuckDBPyConnection | None = None,
        *,
        out_of_orderness_ms: int = 0,
        late_to_dead_letter: bool = False,
        max_string_bytes: int = MAX_STRING_BYTES,
    ) -> None:
        super().__init__(plan, con)
        self._windows: TumblingWindows | None = None
        self._sessions: SessionWindows | None = None
        if plan.window is not None:
            ooo, dead_letter = out_of_orderness_ms, late_to_dead_letter
            if plan.window.kind == "SESSION":
                self._sessions = SessionWindows(
                    plan.window,
                    plan,
                    self.con,
                    out_of_orderness_ms=ooo,
                    late_to_dead_letter=dead_letter,
                )
                self._windows = self._sessions
            else:
                kind = SlidingWindows if plan.window.kind == "SLIDING" else TumblingWindows
                self._windows = kind(
                    plan.window, out_of_orderness_ms=ooo, late_to_dead_letter=dead_letter
                )
        self._key_exprs = plan.keys or ["0"]
        key_cols = [KEY.format(i) for i in range(len(self._key_exprs))]
        if self._windows is not None:
            key_cols = [*TumblingWindows.KEY_COLUMNS, *key_cols]
        self._key_cols = key_cols
        self._duckdb = DuckDBAggregates(plan, self.con, key_cols)
        self._duckdb.max_string_bytes = max_string_bytes
        # Without a time window, EMIT CHANGES runs on numpy (`running`) and EMIT FINAL
        # on Arrow's grouping (`final`) when the aggregates and types allow; decided on
        # the first batch, kept in snapshots. Otherwise ("sql") the state is in DuckDB.
        self._running: RunningAggregates | None = None
        self._final: FinalAggregates | None = None
        self._mode: str | None = None if self._may_run() else "sql"
        self._pending: dict[str, Any] | None = None
        self._renames = None if plan.having_sql else renames(plan.select_sql)
        self._pre_schema: pa.Schema | None = None  # for a global aggregate of no rows

    def _may_run(self) -> bool:
        return self._windows is None

    @property
    def late_records(self) -> int:
        """Rows found late (dropped or dead-lettered); none without a window."""
        return 0 if self._windows is None else self._windows.late_records

    # --- the pre-query ------------------------------------------------------------

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
        # A join's rows come in no set order: `joined_rows` puts them in input order.
        return f"SELECT {', '.join(items)} FROM {self.plan.from_sql}{where}"

    def _direct_pre(self, table: pa.Table) -> pa.Table | None:
        """The pre-query's rows straight from the batch, when it only picks columns."""
        if self.plan.where_sql or self.plan.tables:
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

    # --- batches ------------------------------------------------------------------

    def prime(self, columns: pa.Schema) -> None:
        """A global aggregate that saw no row learns its pre-query's columns from an empty
        batch of `columns`, untyped (a header names them, no row types them): `finish`
        then answers SQL's one row (`_no_rows`)."""
        if self._pre_schema is not None or self.plan.keys or not len(columns):
            return
        if self._mode is not None or self._duckdb.has_state:  # restored: its state answers
            return
        if self._windows is not None or self._sessions is not None:
            return
        untyped = pa.schema([(name, pa.null()) for name in columns.names])
        self.process(SourceBatch(untyped.empty_table(), NoRefs()))

    def process(self, batch: SourceBatch) -> BatchOutput:
        if batch.table.num_rows == 0 and (self._pre_schema or not batch.table.num_columns):
            return BatchOutput(pa.table({}))
        table = with_row_numbers(batch.table)
        pre = self._direct_pre(table)
        bad: list[BadRecord] = []
        refs = batch.refs
        if pre is None:
            pre, bad, _ = isolate_rows(self, table, self._pre_query(), batch.refs)
        if self.plan.tables:
            pre, refs = joined_rows(pre, refs)
        if self._pre_schema is None:
            self._pre_schema = pre.schema
        if self._sessions is not None:
            out, more_bad, dead, gone = self._sessions.process(pre, refs)
            return BatchOutput(self._apply_limit(out), [*bad, *more_bad], dead, gone)
        late: list[BadRecord] = []
        dropped = 0
        if self._windows is not None:
            pre, more_bad, late, dropped = self._windows.assign(pre, refs)
            bad.extend(more_bad)
        pre, refused = self._duckdb.limit_strings(pre)
        # Joined rows: one refused record for a stream row whatever its matches.
        for rn in record_rows(refs, np.array(sorted(refused), dtype=np.int64)).tolist():
            why = refused[rn]
            bad.append(
                BadRecord(refs.raw(rn), refs.ref(rn), why, ErrorKind.RESOURCE, Stage.PROCESS)
            )
        if self._mode == "sql":
            out = self._process_sql(pre)
        elif self.plan.emit == "CHANGES":
            out = self._run_changes(pre)
        else:
            out = self._run_final(pre)
        return BatchOutput(self._apply_limit(out), bad, late, dropped)

    def _process_sql(self, pre: pa.Table) -> pa.Table:
        """One batch on DuckDB, then the windows it closed: emitted, or (EMIT CHANGES,
        whose rows went out as they came) only forgotten."""
        out = self._duckdb.merge(pre) if pre.num_rows else None
        if out is None:
            return self._emit_closed()
        closed = None if self._windows is None else self._windows.closed()
        if closed is not None:
            self._duckdb.drop(closed)
        return out

    def _emit_closed(self) -> pa.Table:
        """Emit and forget the windows the watermark has passed (windowed EMIT FINAL)."""
        closed = None if self._windows is None else self._windows.closed()
        if closed is None:
            return pa.table({})
        return self._duckdb.take(closed, self._order())

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

    def _order(self) -> str:
        order = list(self.plan.order_sql) or list(self._key_cols)
        if self._windows is not None:
            order = self._windows.in_time_order(order)
        return ", ".join(order)

    def finish(self) -> pa.Table | None:
        if self._sessions is not None:
            out = self._sessions.finish()
            return None if out is None else self._apply_limit(out)
        if self._final is not None or self._mode == "grouped":
            if self._final is not None:
                state = self._final.table()
                self._final = FinalAggregates(self.plan, self._final.schema)
            else:  # restored, and no batch since to rebuild the partials with: same table
                state = (self._pending or {}).get("final_state") or pa.table({})
                self._pending = None
            if state.num_rows == 0:
                return self._no_rows()
            self.con.register(_PRE, state)
            try:
                out = self.con.sql(projection(self.plan, _PRE, self._order())).to_arrow_table()
            finally:
                self.con.unregister(_PRE)
            return self._apply_limit(out)
        if self.plan.emit == "CHANGES":
            return None
        if not self._duckdb.has_state:
            return self._no_rows()
        out = self._duckdb.take_all(self._order())
        return None if out is None else self._apply_limit(out)

    def _no_rows(self) -> pa.Table | None:
        """A global aggregate's one row over no rows (COUNT 0, the rest NULL, then its
        HAVING), as SQL answers; None for a grouped or windowed query (no group, no row),
        or when no batch came to tell the argument types."""
        schema = self._pre_schema
        if schema is None or self.plan.keys or self._windows is not None:
            return None
        empty = schema.empty_table()
        for call in self.plan.aggregates:  # COUNT(DISTINCT)'s "a new value" flags
            if call.func == "count_distinct":
                empty = empty.append_column(f"__new{call.index}", pa.array([], pa.bool_()))
        columns = [f"NULL AS {k}" for k in self._key_cols]
        columns += [f"{part.grouped} AS {part.name}" for part in partials_of(self.plan, schema)]
        self.con.register(_PRE, empty)
        try:
            state = self.con.sql(f"SELECT {', '.join(columns)} FROM {_PRE}").to_arrow_table()
            self.con.register(_PRE, state)
            out = self.con.sql(projection(self.plan, _PRE, self._order())).to_arrow_table()
        finally:
            self.con.unregister(_PRE)
        return self._apply_limit(out)

    # --- state --------------------------------------------------------------------

    @cached_property
    def shape(self) -> dict[str, Any]:
        """The keys, the aggregates (their partials are the state's columns), the window
        and the emit mode (EMIT CHANGES and EMIT FINAL keep different partials)."""
        return {
            "kind": self.state_kind,
            "group_by": list(self.plan.keys),
            "aggregates": [describe(c) for c in self.plan.aggregates],
            "window": None if self._windows is None else self._windows.describe(),
            "emit": "CHANGES" if self.plan.emit == "CHANGES" else "FINAL",
        }

    def check_state(self, state: Mapping[str, Any]) -> None:
        """The shape, then the tables: their key and partial columns must be the plan's."""
        super().check_state(state)
        self._duckdb.check_state(state)
        if self._sessions is not None:
            self._sessions.check_state(state)
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
        # One flat mapping, in the order (and with the fields) of earlier versions.
        state = super().snapshot()
        state["has_state"] = self._duckdb.has_state
        state.update(NO_WINDOW_STATE if self._windows is None else self._windows.snapshot())
        state["mode"] = self._mode
        if self._running is not None:
            state.update(self._running.snapshot())
        elif self._final is not None:
            state.update(self._final.snapshot())
        elif self._pending is not None:
            state.update(self._pending)
        state.update(self._duckdb.snapshot())
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
        self._duckdb.restore(state)
