"""Running GROUP BY values (EMIT CHANGES) computed with numpy, one batch at a time.

Each input row gets its group's value over every row of the group so far. DuckDB's
window functions do this at about half a million rows a second; here a batch is
sorted by group once (a stable sort, so arrival order holds within a group) and each
running value is a segmented scan over the sorted rows, started from the group's
carried state:

- counts and integer sums: a cumulative sum, less the sum before each group's first
  row (exact in int64; sums that could leave int64 run on Python integers instead);
- float sums, MIN and MAX: `ufunc.accumulate` over each group's rows with its state
  in front, so a float sum is the same left-to-right sum however the stream is cut
  into batches;
- FIRST_VALUE: the group's first value ever; LAST_VALUE: the row's own value.

Groups get dense ids in order of first appearance (`GroupIndex`); the state is one
array per partial, indexed by id, replaced (never changed in place) by each batch, so
a snapshot is a reference. Aggregates or types this module does not cover
(`supports`) run on DuckDB instead (see `duckdb_aggregates`).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from velostream.engine.core import check_columns
from velostream.engine.groups import (
    GroupIndex,
    Segments,
    accumulate,
    covers,
    cumsum_exact,
    numeric,
)
from velostream.sql.planner import AGG, ARG, KEY, AggregateCall, QueryPlan

__all__ = ["RunningAggregates", "supports"]

_SAFE_SUM = float(2**62)  # an int64 running sum below this bound cannot overflow


def supports(call: AggregateCall, arg_type: pa.DataType | None) -> bool:
    """Whether `call` over an argument of `arg_type` runs here."""
    match call.func:
        case "count_star" | "count" | "first_value" | "last_value":
            return True
        case "sum" | "avg":
            return arg_type is not None and numeric(arg_type)
        case "min" | "max":
            return arg_type is not None and (numeric(arg_type) or pa.types.is_timestamp(arg_type))
        case _:
            return False


# -- aggregates -------------------------------------------------------------------------


def _to_int64(values: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(values, 0).to_numpy(zero_copy_only=False), dtype=np.int64)


def _valid(values: pa.Array) -> np.ndarray:
    if values.null_count == 0:
        return np.ones(len(values), dtype=bool)
    return np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _int_array(values: np.ndarray, valid: np.ndarray) -> pa.Array:
    """Integer sums as int64 when they fit, else DECIMAL(38,0) (as DuckDB's HUGEINT sums)."""
    if values.dtype != object:
        return pa.array(values, pa.int64(), mask=~valid)
    items = [int(v) if ok else None for v, ok in zip(values.tolist(), valid.tolist(), strict=True)]
    try:
        return pa.array(items, pa.int64())
    except (OverflowError, pa.ArrowInvalid):
        return pa.array([None if v is None else Decimal(v) for v in items], pa.decimal128(38, 0))


def _unsort(sorted_values: np.ndarray, order: np.ndarray) -> np.ndarray:
    out = np.empty(len(order), dtype=sorted_values.dtype)
    out[order] = sorted_values
    return out


def _replaced(state: np.ndarray, seg_gid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A copy of `state` with each group's new value (a snapshot may hold the old one)."""
    out = state.copy()
    out[seg_gid] = values
    return out


def _as_float(arg: pa.Array, fill: float) -> np.ndarray:
    filled = pc.fill_null(pc.cast(arg, pa.float64()), fill)
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=np.float64)


class _Agg:
    """One aggregate's partials: an array per partial, indexed by group id."""

    def __init__(self, call: AggregateCall, arg_type: pa.DataType | None) -> None:
        self.call = call
        self.arg_type = arg_type
        self.is_float = arg_type is not None and pa.types.is_floating(arg_type)
        self.state: dict[str, Any] = {}

    @property
    def partials(self) -> list[str]:
        match self.call.func:
            case "count_star" | "count":
                return ["n"]
            case "sum" | "avg":
                return ["n", "s"]
            case "min" | "max":
                return ["n", "m"]
            case "first_value":
                return ["first"]
            case _:
                return []

    def _initial(self, name: str, size: int) -> Any:
        if name == "first":
            return pa.nulls(size, self.arg_type)
        if name == "n":
            return np.zeros(size, dtype=np.int64)
        if name == "s":
            return np.zeros(size, dtype=np.float64 if self.is_float else np.int64)
        is_min = self.call.func == "min"
        if self.is_float:
            return np.full(size, np.nan if is_min else -np.inf, dtype=np.float64)
        info = np.iinfo(np.int64)
        return np.full(size, info.max if is_min else info.min, dtype=np.int64)

    def grow(self, size: int) -> None:
        """Room for `size` groups (new groups start from the aggregate's identity)."""
        for name in self.partials:
            if name == "first":
                self.state.setdefault(name, pa.nulls(0, self.arg_type))
                continue
            old = self.state.get(name)
            have = 0 if old is None else len(old)
            if have < size:
                extra = self._initial(name, size - have)
                self.state[name] = (
                    extra if old is None else np.concatenate([old, extra.astype(old.dtype)])
                )

    def run(
        self, arg: pa.Array | None, gids: np.ndarray, seg: Segments, seg_gid: np.ndarray, old: int
    ) -> pa.Array:
        """Every row's running value (in batch order); replaces the state."""
        func = self.call.func
        if func == "last_value":  # over the rows so far: the row's own value
            assert arg is not None
            return arg
        if func == "first_value":
            assert arg is not None
            return self._first(arg, gids, seg, seg_gid, old)
        order = seg.order
        counted = self.state["n"][seg_gid]
        if func == "count_star":
            running = seg.offset_in_group + 1 + np.repeat(counted, seg.lengths)
        else:
            assert arg is not None
            present = _valid(arg)[order].astype(np.int64)
            running = cumsum_exact(present, seg, counted)
        self.state["n"] = _replaced(self.state["n"], seg_gid, running[seg.ends])
        if func in ("count_star", "count"):
            return pa.array(_unsort(running, order), pa.int64())
        assert arg is not None
        has_value = _unsort(running > 0, order)
        if func in ("min", "max"):
            return self._extreme(arg, seg, seg_gid, has_value)
        sums = _unsort(self._sum(arg, seg, seg_gid), order)
        if func == "avg":
            counts = np.maximum(_unsort(running, order), 1)
            return pa.array(sums.astype(np.float64) / counts, pa.float64(), mask=~has_value)
        if self.is_float:
            return pa.array(sums, pa.float64(), mask=~has_value)
        return _int_array(sums, has_value)

    def _sum(self, arg: pa.Array, seg: Segments, seg_gid: np.ndarray) -> np.ndarray:
        state = self.state["s"]
        order = seg.order
        if self.is_float:
            sums = accumulate(np.add, _as_float(arg, 0.0)[order], seg, state[seg_gid])
        else:
            fits = arg.type != pa.uint64() or (pc.max(arg).as_py() or 0) < 2**63
            values = _to_int64(pc.cast(arg, pa.int64())) if fits else None
            if values is not None and state.dtype != object:
                bound = float(np.abs(values.astype(np.float64)).sum())
                bound += float(np.abs(state.astype(np.float64)).max()) if len(state) else 0.0
                if bound < _SAFE_SUM:
                    sums = cumsum_exact(values[order], seg, state[seg_gid])
                    self.state["s"] = _replaced(state, seg_gid, sums[seg.ends])
                    return sums
            # A sum that could leave int64 goes on in Python integers (exact, as
            # DuckDB's HUGEINT); rare, and slower.
            state = state.astype(object)
            objects = np.empty(len(arg), dtype=object)
            objects[:] = pc.fill_null(arg, 0).to_pylist()
            sums = accumulate(np.add, objects[order], seg, state[seg_gid])
        self.state["s"] = _replaced(state, seg_gid, sums[seg.ends])
        return sums

    def _extreme(
        self, arg: pa.Array, seg: Segments, seg_gid: np.ndarray, has_value: np.ndarray
    ) -> pa.Array:
        is_min = self.call.func == "min"
        state = self.state["m"]
        if self.is_float:
            # NaN is above every number in DuckDB: MIN skips it (fmin), MAX keeps it.
            values = _as_float(arg, np.nan if is_min else -np.inf)[seg.order]
            ufunc: np.ufunc = np.fmin if is_min else np.maximum
        else:
            info = np.iinfo(np.int64)
            values = _to_int64_filled(arg, info.max if is_min else info.min)[seg.order]
            ufunc = np.minimum if is_min else np.maximum
        scanned = accumulate(ufunc, values, seg, state[seg_gid])
        self.state["m"] = _replaced(state, seg_gid, scanned[seg.ends])
        out = pa.array(_unsort(scanned, seg.order), mask=~has_value)
        assert self.arg_type is not None
        return out if out.type == self.arg_type else out.cast(self.arg_type)

    def _first(
        self, arg: pa.Array, gids: np.ndarray, seg: Segments, seg_gid: np.ndarray, old: int
    ) -> pa.Array:
        """FIRST_VALUE: each group's first value ever (NULL included), kept by id."""
        state: pa.Array = self.state["first"]
        if state.type != arg.type:
            state = state.cast(arg.type)
        new = np.flatnonzero(seg_gid >= old)
        if new.size:
            # one value per new id, in id order (two local groups may share an id)
            new_ids, where = np.unique(seg_gid[new], return_index=True)
            first_rows = seg.order[seg.starts[new[where]]]
            assert len(new_ids) == 0 or new_ids[0] == len(state)
            state = pa.concat_arrays([state, arg.take(pa.array(first_rows))])
        self.state["first"] = state
        return state.take(pa.array(gids))


def _to_int64_filled(arg: pa.Array, fill: int) -> np.ndarray:
    ints = pc.cast(arg, pa.int64())
    return np.asarray(pc.fill_null(ints, fill).to_numpy(zero_copy_only=False), dtype=np.int64)


class RunningAggregates:
    """The running values of a GROUP BY's aggregates (EMIT CHANGES, no time window)."""

    def __init__(self, plan: QueryPlan, schema: pa.Schema) -> None:
        self.plan = plan
        self._keys = [KEY.format(i) for i in range(len(plan.keys or ["0"]))]
        self._aggs = [
            _Agg(c, schema.field(ARG.format(c.index)).type if c.arg is not None else None)
            for c in plan.aggregates
        ]
        self.schema = schema
        self.index = GroupIndex()
        self._snapshot: tuple[pa.Table | None, tuple[pa.Table, ...]] = (None, ())

    @classmethod
    def build(cls, plan: QueryPlan, schema: pa.Schema) -> RunningAggregates | None:
        """The running aggregates of `plan` over pre-query rows of `schema`, if covered."""
        return cls(plan, schema) if covers(plan, schema, supports) else None

    def process(self, pre: pa.Table) -> pa.Table:
        """The key columns and each aggregate's running value (`__aggN`), row for row."""
        if pre.schema != self.schema:
            pre = pre.cast(self.schema)
        keys = pre.select(self._keys)
        old = self.index.size
        local, gid_of_local = self.index.ids(keys)
        gids = gid_of_local[local]
        seg = Segments.of(local, len(gid_of_local))
        seg_gid = gid_of_local
        size = self.index.size
        columns = {k: pre.column(k) for k in self._keys}
        for agg in self._aggs:
            agg.grow(size)
            arg = None
            if agg.call.arg is not None:
                arg = pre.column(ARG.format(agg.call.index)).combine_chunks()
            columns[AGG.format(agg.call.index)] = agg.run(arg, gids, seg, seg_gid, old)
        return pa.table(columns)

    # --- state ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        chunks = self.index.snapshot()
        keys = self.index.keys()
        if keys is None:
            return {}
        columns: dict[str, pa.Array] = {}
        for agg in self._aggs:
            for name in agg.partials:
                value = agg.state[name]
                column = f"{name}{agg.call.index}"
                if isinstance(value, pa.Array):
                    columns[column] = value
                elif value.dtype == object:
                    columns[column] = pa.array(
                        [Decimal(int(v)) for v in value], pa.decimal128(38, 0)
                    )
                else:
                    columns[column] = pa.array(value)
        self._snapshot = (keys, chunks)
        return {"running_keys": keys, "running_state": pa.table(columns)}

    @classmethod
    def check_state(cls, plan: QueryPlan, state: Mapping[str, Any]) -> None:
        """Raise StateIncompatibleError unless the state's keys and partials are `plan`'s."""
        keys = state.get("running_keys")
        if keys is None:
            return
        names = [KEY.format(i) for i in range(len(plan.keys or ["0"]))]
        check_columns("GROUP BY keys", keys, names)
        partials = [f"{p}{c.index}" for c in plan.aggregates for p in _Agg(c, None).partials]
        check_columns("running aggregates", state.get("running_state"), partials)

    def restore(self, state: dict[str, Any]) -> None:
        """Return to a `snapshot`; a state of another plan raises StateIncompatibleError."""
        self.check_state(self.plan, state)
        keys = state.get("running_keys")
        if keys is None:
            self.index.restore(())
            for agg in self._aggs:
                agg.state = {}
            return
        cached_keys, chunks = self._snapshot
        self.index.restore(chunks if cached_keys is keys else (keys,))
        table: pa.Table = state["running_state"]
        for agg in self._aggs:
            agg.state = {}
            for name in agg.partials:
                column = table.column(f"{name}{agg.call.index}").combine_chunks()
                if name == "first":
                    agg.state[name] = column
                elif pa.types.is_decimal(column.type):
                    values = np.empty(len(column), dtype=object)
                    values[:] = [int(v) for v in column.to_pylist()]
                    agg.state[name] = values
                else:
                    agg.state[name] = np.asarray(column.to_numpy(zero_copy_only=False))
