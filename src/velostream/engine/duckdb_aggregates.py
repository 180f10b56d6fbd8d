"""GROUP BY on DuckDB: the partials of each group in a table, merged batch by batch.

Each aggregate keeps *partials* per group (count; sum; sum and count for AVG; n, mean
and M2 for STDDEV and VARIANCE; the string so far for LISTAGG; ...). A batch is
aggregated by DuckDB — with window functions for EMIT CHANGES, so every input row gets
its group's running value, or with GROUP BY for EMIT FINAL — and merged with the state
carried from earlier batches, which lives in a DuckDB table (`__state`) keyed by the
group. COUNT(DISTINCT) also remembers each group's values (`__dstateN`), and LISTAGG
the length each group has been given (`__lstateN`), which bounds its string
(`limit_strings`). Results do not depend on where batches are cut.

This path runs every aggregate, any key and a time window (whose bounds are then part
of the key); `running` and `final` are the faster paths for what they support.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from velostream.engine.core import check_columns
from velostream.sql.planner import ARG, ROW, WINDOW_START, AggregateCall, QueryPlan

__all__ = [
    "MAX_STRING_BYTES",
    "STATE_TABLE",
    "DuckDBAggregates",
    "Partial",
    "describe",
    "partials_of",
    "projection",
]

STATE_TABLE = "__state"
MAX_STRING_BYTES = 1 << 20
"""Default bound of one group's LISTAGG/STRING_AGG value (UTF-8 bytes, separators in)."""
_PRE = "__pre"
_SEEN = "__seen"


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
        # A count, so never NULL: 0 over no rows, as COUNT gives.
        new = f"CAST(__new{call.index} AS BIGINT)"
        return [
            _Partial(
                p + "c",
                f"CAST(COALESCE(SUM({new}){w}, 0) AS BIGINT)",
                f"CAST(COALESCE(SUM({new}), 0) AS BIGINT)",
                add("c"),
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
    if call.func in ("stddev", "stddev_pop", "variance", "var_pop"):
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
    if call.func == "string_agg":
        # In arrival order: the window is ordered by it, the grouped aggregate too.
        sep = sql_string(_separator(call))
        x = f"CAST({a} AS VARCHAR)"
        sv, bv = f"s.{p}v", f"b.{p}v"
        return [
            _Partial(
                p + "v",
                f"STRING_AGG({x}, {sep}){w}",
                f"STRING_AGG({x}, {sep} ORDER BY {ROW})",
                f"CASE WHEN {sv} IS NULL THEN {bv} WHEN {bv} IS NULL THEN {sv} "
                f"ELSE {sv} || {sep} || {bv} END",
            )
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


Partial = _Partial


def partials_of(plan: QueryPlan, schema: pa.Schema) -> list[_Partial]:
    """The partials of every aggregate of `plan`, over pre-query rows of `schema`."""
    parts: list[_Partial] = []
    for call in plan.aggregates:
        int_arg = False
        if call.arg is not None:
            t = schema.field(ARG.format(call.index)).type
            int_arg = pa.types.is_integer(t) or pa.types.is_boolean(t)
        parts.extend(_partials(call, int_arg))
    return parts


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
        case "variance":
            return f"CASE WHEN {p}n > 1 THEN GREATEST({p}m2, 0) / ({p}n - 1) END"
        case "var_pop":
            return f"CASE WHEN {p}n > 0 THEN GREATEST({p}m2, 0) / {p}n END"
        case _:
            return f"{p}v"


def _separator(call: AggregateCall) -> str:
    return "," if call.separator is None else call.separator


def _length_sql(x: str, sep: int) -> str:
    """What a value `x` adds to its LISTAGG: its UTF-8 bytes and a separator's `sep`."""
    return f"CASE WHEN {x} IS NULL THEN 0 ELSE strlen(CAST({x} AS VARCHAR)) + {sep} END"


def sql_string(text: str) -> str:
    """`text` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def describe(call: AggregateCall) -> str:
    """An aggregate as SQL, for a state's shape and its error messages."""
    if call.func == "string_agg":
        return f"LISTAGG({call.arg}, {sql_string(_separator(call))})"
    if call.func == "count_star":
        return "COUNT(*)"
    if call.func == "count_distinct":
        return f"COUNT(DISTINCT {call.arg})"
    return f"{call.func.upper()}({call.arg or ''})"


def projection(plan: QueryPlan, source: str, order: str) -> str:
    """The query's output over a table of partials: finals, HAVING, SELECT, ORDER BY.

    Every path that keeps partials under the state's column names ends here.
    """
    finals = ", ".join(f"{_final(c)} AS {c.column}" for c in plan.aggregates) or "1 AS __x"
    having = f" WHERE {plan.having_sql}" if plan.having_sql else ""
    inner = f"SELECT *, {finals} FROM {source}"
    return f"SELECT {', '.join(plan.select_sql)} FROM ({inner}){having} ORDER BY {order}"


class DuckDBAggregates:
    """The state of a GROUP BY as DuckDB tables, on the executor's connection.

    `key_cols` name the group-key columns of the pre-query's rows (`__kN`, after the
    window bounds when there is a window); the tables exist once a batch has been merged.
    """

    def __init__(
        self, plan: QueryPlan, con: duckdb.DuckDBPyConnection, key_cols: list[str]
    ) -> None:
        self.plan = plan
        self.con = con
        self.key_cols = key_cols
        self.has_state = False
        self._partials: list[_Partial] | None = None
        self._distinct = [c for c in plan.aggregates if c.func == "count_distinct"]
        self._strings = [c for c in plan.aggregates if c.func == "string_agg"]
        self.max_string_bytes = MAX_STRING_BYTES

    @property
    def _tables(self) -> list[str]:
        return [
            STATE_TABLE,
            *(f"__dstate{c.index}" for c in self._distinct),
            *(f"__lstate{c.index}" for c in self._strings),
        ]

    def _match(self, left: str, right: str) -> str:
        return " AND ".join(f"{left}.{k} IS NOT DISTINCT FROM {right}.{k}" for k in self.key_cols)

    def _ensure_partials(self, pre: pa.Table) -> list[_Partial]:
        # The partials' SQL depends on the argument types (integer sums), known from
        # the first batch.
        if self._partials is None:
            self._partials = partials_of(self.plan, pre.schema)
        return self._partials

    # --- batches ------------------------------------------------------------------

    def merge(self, pre: pa.Table) -> pa.Table | None:
        """Merge the pre-query's rows (at least one) into the state.

        EMIT CHANGES returns the output rows, one per input row with its group's running
        values; EMIT FINAL returns None (its groups are emitted by `take`).
        """
        partials = self._ensure_partials(pre)
        con = self.con
        con.register(_PRE, pre)
        try:
            if self._distinct:
                pre = self._flag_distinct(pre)
                con.register(_PRE, pre)
            keys = ", ".join(self.key_cols)
            if not self.has_state:
                cols = ", ".join(
                    [
                        *self.key_cols,
                        f"TRUE AS {_SEEN}",
                        *(f"{p.grouped} AS {p.name}" for p in partials),
                    ]
                )
                con.execute(
                    f"CREATE OR REPLACE TABLE {STATE_TABLE} AS SELECT {cols} FROM {_PRE} "
                    f"GROUP BY {keys} LIMIT 0"
                )
                self.has_state = True
            if self.plan.emit == "CHANGES":
                return self._merge_running(partials, keys)
            self._merge_grouped(partials, keys)
            return None
        finally:
            con.unregister(_PRE)

    def _merge_running(self, partials: list[_Partial], keys: str) -> pa.Table:
        con = self.con
        merged = ", ".join(f"{p.merge} AS {p.name}" for p in partials)
        running = ", ".join(f"{p.running} AS {p.name}" for p in partials)
        window = f"WINDOW w AS (PARTITION BY {keys} ORDER BY {ROW} ROWS UNBOUNDED PRECEDING)"
        bkeys = ", ".join(f"b.{k}" for k in self.key_cols)
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE __merged AS SELECT b.{ROW}, {bkeys}, "
            f"TRUE AS {_SEEN}, {merged} FROM (SELECT {ROW}, {keys}, TRUE AS {_SEEN}, "
            f"{running} FROM {_PRE} {window}) b LEFT JOIN {STATE_TABLE} s ON "
            f"{self._match('b', 's')}"
        )
        # A row of a sliding window has one copy per window: those in window order.
        order = f"{ROW}, {WINDOW_START}" if WINDOW_START in self.key_cols else ROW
        out = con.sql(projection(self.plan, "__merged", order)).to_arrow_table()
        # Each group's last row holds its new partials.
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE __upd AS SELECT * EXCLUDE ({ROW}) FROM __merged "
            f"QUALIFY ROW_NUMBER() OVER (PARTITION BY {keys} ORDER BY {ROW} DESC) = 1"
        )
        con.execute(
            f"CREATE OR REPLACE TABLE {STATE_TABLE} AS SELECT s.* FROM {STATE_TABLE} s ANTI JOIN "
            f"__upd u ON {self._match('s', 'u')} UNION ALL BY NAME SELECT * FROM __upd"
        )
        return out

    def _merge_grouped(self, partials: list[_Partial], keys: str) -> None:
        # One statement: the batch's partials, grouped, merged into the state.
        merged = ", ".join(f"{p.merge} AS {p.name}" for p in partials)
        grouped = ", ".join(f"{p.grouped} AS {p.name}" for p in partials)
        either = ", ".join(f"COALESCE(b.{k}, s.{k}) AS {k}" for k in self.key_cols)
        self.con.execute(
            f"CREATE OR REPLACE TABLE {STATE_TABLE} AS SELECT {either}, TRUE AS {_SEEN}, "
            f"{merged} FROM {STATE_TABLE} s FULL JOIN (SELECT {keys}, TRUE AS {_SEEN}, "
            f"{grouped} FROM {_PRE} GROUP BY {keys}) b ON {self._match('b', 's')}"
        )

    def _flag_distinct(self, pre: pa.Table) -> pa.Table:
        """`pre` with `__newN`: the row brings a value its group has not had (and
        remember it)."""
        con = self.con
        keys = ", ".join(self.key_cols)
        for call in self._distinct:
            a, d = ARG.format(call.index), f"__dstate{call.index}"
            if not self.has_state:
                con.execute(
                    f"CREATE OR REPLACE TABLE {d} AS SELECT {keys}, {a} AS v FROM {_PRE} LIMIT 0"
                )
            pre = con.sql(
                f"SELECT p.*, (p.{a} IS NOT NULL AND d.v IS NULL AND ROW_NUMBER() OVER "
                f"(PARTITION BY {', '.join('p.' + k for k in self.key_cols)}, p.{a} "
                f"ORDER BY p.{ROW}) = 1) AS __new{call.index} FROM {_PRE} p LEFT JOIN {d} d ON "
                f"{self._match('p', 'd')} AND d.v = p.{a} ORDER BY p.{ROW}"
            ).to_arrow_table()
            con.register(_PRE, pre)
            con.execute(f"INSERT INTO {d} SELECT {keys}, {a} FROM {_PRE} WHERE __new{call.index}")
        return pre

    def limit_strings(self, pre: pa.Table) -> tuple[pa.Table, dict[int, str]]:
        """`pre` less the rows that would take a group's LISTAGG past `max_string_bytes`.

        A group's *attempted* length (`__lstateN.n`: every non-NULL value it was given,
        each with a separator) is kept whether or not its rows were taken; a row is
        refused when the attempted length up to and including it is over the bound. So
        the value that overflows a group, and every later non-NULL value of the group,
        are refused (returned by `__rn` with the reason), wherever the batches are cut.
        """
        if not self._strings or pre.num_rows == 0:
            return pre, {}
        con, keys, limit = self.con, ", ".join(self.key_cols), self.max_string_bytes
        refused: dict[int, str] = {}
        con.register(_PRE, pre)
        try:
            for call in self._strings:
                a, table = ARG.format(call.index), f"__lstate{call.index}"
                sep = len(_separator(call).encode())
                con.execute(
                    f"CREATE TABLE IF NOT EXISTS {table} AS SELECT {keys}, "
                    f"CAST(0 AS BIGINT) AS n FROM {_PRE} LIMIT 0"
                )
                pkeys = ", ".join(f"p.{k}" for k in self.key_cols)
                running = (
                    f"SUM({_length_sql('p.' + a, sep)}) OVER (PARTITION BY {pkeys} "
                    f"ORDER BY p.{ROW} ROWS UNBOUNDED PRECEDING)"
                )
                rows = con.sql(
                    f"SELECT {ROW} FROM (SELECT p.{ROW}, p.{a} IS NOT NULL AS has, "
                    f"COALESCE(l.n, 0) + {running} - {sep} AS total FROM {_PRE} p "
                    f"LEFT JOIN {table} l ON {self._match('p', 'l')}) WHERE has AND total > {limit}"
                ).fetchall()
                reason = (
                    f"{describe(call)} of this row's group would exceed {limit} bytes "
                    "(listagg.max.bytes); the row is refused, and so is every later "
                    "non-NULL value of the group"
                )
                refused.update((int(rn), reason) for (rn,) in rows)
                con.execute(
                    f"CREATE OR REPLACE TABLE {table} AS SELECT {keys}, SUM(n) AS n FROM "
                    f"(SELECT {keys}, n FROM {table} UNION ALL BY NAME SELECT {keys}, "
                    f"SUM({_length_sql(a, sep)}) AS n FROM {_PRE} GROUP BY {keys}) "
                    f"GROUP BY {keys}"
                )
        finally:
            con.unregister(_PRE)
        if not refused:
            return pre, refused
        keep = ~np.isin(pre.column(ROW).to_numpy(), np.fromiter(refused, dtype=np.int64))
        return pre.filter(pa.array(keep)), refused

    # --- emitting -----------------------------------------------------------------

    def take(self, where: str, order: str) -> pa.Table:
        """The output for the groups `where` holds (a SQL condition), which are forgotten."""
        if not self.has_state:
            return pa.table({})
        chosen = f"(SELECT * FROM {STATE_TABLE} WHERE {where})"
        out = self.con.sql(projection(self.plan, chosen, order)).to_arrow_table()
        self.drop(where)
        return out

    def drop(self, where: str) -> None:
        """Forget the groups `where` holds, with their COUNT(DISTINCT) values."""
        if self.has_state:
            for name in self._tables:
                self.con.execute(f"DELETE FROM {name} WHERE {where}")

    def take_all(self, order: str) -> pa.Table | None:
        """The output for every group (EMIT FINAL, the source has ended); None if none."""
        if not self.has_state:
            return None
        out = self.con.sql(projection(self.plan, STATE_TABLE, order)).to_arrow_table()
        self.con.execute(f"DELETE FROM {STATE_TABLE}")
        return out

    # --- state --------------------------------------------------------------------

    def check_state(self, state: Mapping[str, Any]) -> None:
        """Raise StateIncompatibleError unless the state's tables have the plan's key and
        partial columns."""
        if not (state.get("has_state") and STATE_TABLE in state):
            return
        partials = [p.name for c in self.plan.aggregates for p in _partials(c, False)]
        check_columns("GROUP BY table", state[STATE_TABLE], [*self.key_cols, _SEEN, *partials])
        for call in self._distinct:
            check_columns(
                f"COUNT(DISTINCT) values of {describe(call)}",
                state.get(f"__dstate{call.index}"),
                [*self.key_cols, "v"],
            )
        for call in self._strings:
            table = state.get(f"__lstate{call.index}")
            if table is not None:
                check_columns(f"lengths of {describe(call)}", table, [*self.key_cols, "n"])

    def snapshot(self) -> dict[str, pa.Table]:
        """The tables, by name (none before the first merge)."""
        if not self.has_state:
            return {}
        return {
            name: self.con.sql(f"SELECT * FROM {name}").to_arrow_table() for name in self._tables
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Recreate the tables from a snapshot (dropping them if it has none)."""
        self.has_state = bool(state.get("has_state", False)) and STATE_TABLE in state
        for name in self._tables:
            table = state.get(name)
            if not self.has_state or table is None:
                self.con.execute(f"DROP TABLE IF EXISTS {name}")
                continue
            self.con.register("__restore", table)
            try:
                self.con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM __restore")
            finally:
                self.con.unregister("__restore")
