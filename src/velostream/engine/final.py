"""GROUP BY ... EMIT FINAL without a time window, on Arrow's hash aggregation.

Each batch is grouped by Arrow (`Table.group_by`, a few milliseconds for 100,000
rows) and its partials are merged into arrays indexed by group id (`GroupIndex`):
counts and sums add up, MIN and MAX keep the extreme. At the end the partials form a
table with the same columns as the DuckDB path's state (`__kN`, `__pN_c|s|n|m`), and
that path's projection (finals, HAVING, ORDER BY, LIMIT) runs on it.

Semantics follow DuckDB: NULLs are skipped (a group with no value gets NULL), NaN is
above every number (MAX is NaN once a NaN is seen; MIN skips NaN), integer sums are
exact (a batch whose sum could leave int64 is summed as DECIMAL(38,0), the state then
held as Python integers). Aggregates not listed in `supports_final` run on DuckDB.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from velostream.engine.core import check_columns
from velostream.engine.groups import GroupIndex, covers, group_by, numeric
from velostream.sql.planner import ARG, KEY, AggregateCall, QueryPlan

__all__ = ["FinalAggregates"]

_SAFE_SUM = float(2**62)


def supports_final(call: AggregateCall, arg_type: pa.DataType | None) -> bool:
    """Whether `call` over an argument of `arg_type` is grouped here."""
    match call.func:
        case "count_star" | "count":
            return True
        case "sum" | "avg":
            return arg_type is not None and numeric(arg_type)
        case "min" | "max":
            return arg_type is not None and (numeric(arg_type) or pa.types.is_timestamp(arg_type))
        case _:
            return False


def _numpy(values: pa.Array | pa.ChunkedArray, fill: Any, dtype: Any) -> np.ndarray:
    filled = pc.fill_null(values, pa.scalar(fill, values.type))
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=dtype)


class _Partials:
    """One aggregate's partials by group id: `n` (values counted), `s` (sum), `m` (extreme)."""

    def __init__(self, call: AggregateCall, arg_type: pa.DataType | None) -> None:
        self.call = call
        self.arg_type = arg_type
        self.is_float = arg_type is not None and pa.types.is_floating(arg_type)
        self.n = np.zeros(0, dtype=np.int64)
        self.s: np.ndarray | None = None
        self.m: np.ndarray | None = None
        if call.func in ("sum", "avg"):
            self.s = np.zeros(0, dtype=np.float64 if self.is_float else np.int64)
        elif call.func in ("min", "max"):
            self.m = np.zeros(0, dtype=np.float64 if self.is_float else np.int64)

    def _identity(self) -> Any:
        if self.is_float:
            return np.nan if self.call.func == "min" else -np.inf
        info = np.iinfo(np.int64)
        return info.max if self.call.func == "min" else info.min

    def grow(self, size: int) -> None:
        extra = size - len(self.n)
        if extra <= 0:
            return
        self.n = np.concatenate([self.n, np.zeros(extra, dtype=np.int64)])
        if self.s is not None:
            self.s = np.concatenate([self.s, np.zeros(extra, dtype=self.s.dtype)])
        if self.m is not None:
            self.m = np.concatenate([self.m, np.full(extra, self._identity(), self.m.dtype)])

    def requests(self) -> list[tuple[Any, str]]:
        """The Arrow aggregations this aggregate needs, over `pre`'s columns."""
        a = ARG.format(self.call.index)
        match self.call.func:
            case "count_star":
                return [([], "count_all")]
            case "count":
                return [(a, "count")]
            case "sum" | "avg":
                return [(a, "count"), (a, "sum")]
            case _:
                nan = self.is_float and self.call.func == "max"
                extra = [(f"__nan{self.call.index}", "any")] if nan else []
                return [(a, "count"), (a, self.call.func), *extra]

    def may_overflow(self, pre: pa.Table, column: str) -> bool:
        """Whether this batch's integer sums could leave int64 (then they run exact)."""
        assert self.s is not None
        values = pre.column(column)
        extremes = pc.min_max(values)
        low, high = extremes["min"].as_py(), extremes["max"].as_py()
        if low is None or self.s.dtype == object:
            return low is not None
        largest = float(max(abs(int(low)), abs(int(high))))
        carried = float(np.abs(self.s.astype(np.float64)).max()) if len(self.s) else 0.0
        return largest * len(values) + carried >= _SAFE_SUM

    def merge(self, results: list[pa.ChunkedArray], gids: np.ndarray) -> None:
        """Add one batch's grouped partials (the results of `requests`, in order)."""
        # Copies, never in place: a snapshot may hold the previous arrays.
        self.n = self.n.copy()
        np.add.at(self.n, gids, _numpy(results[0], 0, np.int64))
        if self.s is not None:
            sums = results[1]
            if self.is_float:
                self.s = self.s.copy()
                np.add.at(self.s, gids, _numpy(sums, 0.0, np.float64))
            else:
                self._add_integers(sums, gids)
        if self.m is not None:
            extreme = results[1]
            if not self.is_float:  # integers and timestamps: as int64
                extreme = pc.cast(extreme, pa.int64())
            values = _numpy(extreme, self._identity(), self.m.dtype)
            self.m = self.m.copy()
            with np.errstate(invalid="ignore"):  # NaN compares quietly
                if self.call.func == "min":  # Arrow's MIN skips NaN, as DuckDB's does
                    (np.fmin if self.is_float else np.minimum).at(self.m, gids, values)
                else:
                    if self.is_float:  # but Arrow's MAX skips it too: put it back
                        seen_nan = _numpy(results[2], False, bool)
                        values = np.where(seen_nan, np.nan, values)
                    np.maximum.at(self.m, gids, values)

    def _add_integers(self, sums: pa.ChunkedArray, gids: np.ndarray) -> None:
        assert self.s is not None
        if pa.types.is_decimal(sums.type) or self.s.dtype == object:
            values = np.empty(len(sums), dtype=object)
            values[:] = [0 if v is None else int(v) for v in sums.to_pylist()]
            state = self.s.astype(object)
            np.add.at(state, gids, values)
            self.s = state
            return
        self.s = self.s.copy()
        np.add.at(self.s, gids, _numpy(sums, 0, np.int64))

    def columns(self) -> dict[str, pa.Array]:
        """The partial columns of the DuckDB path's state, by name."""
        p = f"__p{self.call.index}_"
        present = self.n > 0
        match self.call.func:
            case "count_star" | "count":
                return {p + "c": pa.array(self.n, pa.int64())}
            case "sum" | "avg":
                assert self.s is not None
                out = {p + "s": _sum_array(self.s, present)}
                if self.call.func == "avg":
                    out[p + "n"] = pa.array(self.n, pa.int64())
                return out
            case _:
                assert self.m is not None and self.arg_type is not None
                extreme = pa.array(self.m, mask=~present)
                return {p + "m": extreme.cast(self.arg_type)}


def _sum_array(values: np.ndarray, present: np.ndarray) -> pa.Array:
    if values.dtype != object:
        return pa.array(values, mask=~present)
    items = [
        int(v) if ok else None for v, ok in zip(values.tolist(), present.tolist(), strict=True)
    ]
    return pa.array([None if v is None else Decimal(v) for v in items], pa.decimal128(38, 0))


class FinalAggregates:
    """The partials of a GROUP BY's aggregates (EMIT FINAL, no time window), by group."""

    def __init__(self, plan: QueryPlan, schema: pa.Schema) -> None:
        self.keys = [KEY.format(i) for i in range(len(plan.keys or ["0"]))]
        self.schema = schema
        self._partials = [
            _Partials(c, schema.field(ARG.format(c.index)).type if c.arg is not None else None)
            for c in plan.aggregates
        ]
        self.index = GroupIndex()

    @classmethod
    def build(cls, plan: QueryPlan, schema: pa.Schema) -> FinalAggregates | None:
        """The grouped partials of `plan` over pre-query rows of `schema`, if covered."""
        return cls(plan, schema) if covers(plan, schema, supports_final) else None

    def add(self, pre: pa.Table) -> None:
        """Group one batch's rows and merge their partials into the state."""
        if pre.num_rows == 0:
            return
        if pre.schema != self.schema:
            pre = pre.cast(self.schema)
        requests: list[tuple[Any, str]] = []
        for partial in self._partials:
            a = ARG.format(partial.call.index)
            if partial.is_float and partial.call.func == "max":
                pre = pre.append_column(f"__nan{partial.call.index}", pc.is_nan(pre.column(a)))
            if partial.s is not None and not partial.is_float and partial.may_overflow(pre, a):
                exact = pc.cast(pre.column(a), pa.decimal128(38, 0))
                pre = pre.set_column(pre.schema.get_field_index(a), a, exact)
            requests += partial.requests()
        grouped = group_by(pre, self.keys, requests)
        # The result holds the keys and one column per request, in order; by position,
        # since two requests may share a name.
        names = grouped.column_names
        first = len(self.keys) if names[: len(self.keys)] == self.keys else 0
        results = [grouped.column(first + i) for i in range(len(requests))]
        local, gid_of_local = self.index.ids(grouped.select(self.keys))
        gids = gid_of_local[local]
        size = self.index.size
        at = 0
        for partial in self._partials:
            count = len(partial.requests())
            partial.grow(size)
            partial.merge(results[at : at + count], gids)
            at += count

    def table(self) -> pa.Table:
        """The state as the DuckDB path's state table: keys, then each partial."""
        keys = self.index.keys()
        if keys is None:
            return pa.table({})
        columns = {k: keys.column(k) for k in self.keys}
        for partial in self._partials:
            partial.grow(self.index.size)
            columns.update(partial.columns())
        return pa.table(columns)

    def snapshot(self) -> dict[str, Any]:
        self.index.snapshot()
        keys = self.index.keys()
        return {} if keys is None else {"final_keys": keys, "final_state": self.table()}

    @classmethod
    def check_state(cls, plan: QueryPlan, state: Mapping[str, Any]) -> None:
        """Raise StateIncompatibleError unless the state's keys and partials are `plan`'s."""
        keys = [KEY.format(i) for i in range(len(plan.keys or ["0"]))]
        _check_state(keys, plan.aggregates, state)

    def restore(self, state: dict[str, Any]) -> None:
        """Return to a `snapshot`; a state of another plan raises StateIncompatibleError."""
        _check_state(self.keys, [partial.call for partial in self._partials], state)
        keys: pa.Table | None = state.get("final_keys")
        self.index.restore(() if keys is None else (keys,))
        table: pa.Table | None = state.get("final_state")
        for partial in self._partials:
            p = f"__p{partial.call.index}_"
            size = 0 if table is None else table.num_rows
            partial.n = np.zeros(0, dtype=np.int64)
            if partial.s is not None:
                partial.s = np.zeros(0, dtype=partial.s.dtype if partial.is_float else np.int64)
            if partial.m is not None:
                partial.m = np.zeros(0, dtype=partial.m.dtype)
            partial.grow(size)
            if table is None or not size:
                continue
            partial.n = _restored_counts(table, p, partial)
            if partial.s is not None:
                column = table.column(p + "s").combine_chunks()
                if pa.types.is_decimal(column.type):
                    values = np.empty(size, dtype=object)
                    values[:] = [0 if v is None else int(v) for v in column.to_pylist()]
                    partial.s = values
                else:
                    partial.s = _numpy(column, 0, partial.s.dtype)
            if partial.m is not None:
                column = table.column(p + "m").combine_chunks()
                if not partial.is_float:
                    column = pc.cast(column, pa.int64())
                partial.m = _numpy(column, partial._identity(), partial.m.dtype)


def _check_state(keys: list[str], calls: list[AggregateCall], state: Mapping[str, Any]) -> None:
    if state.get("final_keys") is None:
        return
    check_columns("GROUP BY keys", state["final_keys"], keys)
    partials = [name for call in calls for name in _partial_columns(call)]
    check_columns("grouped aggregates", state.get("final_state"), [*keys, *partials])


def _partial_columns(call: AggregateCall) -> list[str]:
    """The state columns of `call` (as `_Partials.columns` names them)."""
    p = f"__p{call.index}_"
    match call.func:
        case "count_star" | "count":
            return [p + "c"]
        case "sum":
            return [p + "s"]
        case "avg":
            return [p + "s", p + "n"]
        case _:
            return [p + "m"]


def _restored_counts(table: pa.Table, p: str, partial: _Partials) -> np.ndarray:
    """`n` from the state table: the count column, or (SUM, MIN, MAX) 1 where valid."""
    if p + "c" in table.column_names:
        return _numpy(table.column(p + "c"), 0, np.int64)
    if p + "n" in table.column_names:
        return _numpy(table.column(p + "n"), 0, np.int64)
    name = p + ("s" if partial.s is not None else "m")
    return np.asarray(table.column(name).is_valid().to_numpy(zero_copy_only=False), np.int64)
