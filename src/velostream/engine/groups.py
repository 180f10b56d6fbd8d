"""Dense group ids for a stream's GROUP BY keys, and scans over each group's rows.

`GroupIndex` numbers keys in order of first appearance, batch after batch: a batch's
rows are grouped by Arrow (`dictionary_encode`, per key column) and only its distinct
keys are looked up, in a dict. `Segments` sorts a batch's rows by group, stably, and
`cumsum_exact` / `accumulate` scan each group's rows starting from a carried value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from velostream.sql.planner import ARG, KEY, AggregateCall, QueryPlan

__all__ = ["GroupIndex", "Segments", "accumulate", "cumsum_exact", "group_by"]

_NAN_KEY = object()  # every NaN is one group key, as in DuckDB


# -- group ids --------------------------------------------------------------------------


def _local_groups(keys: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(local group of each row, first row of each local group), groups by first row."""
    n = keys.num_rows
    codes: np.ndarray | None = None
    radix = 1
    for column in keys.columns:
        encoded = pc.dictionary_encode(column.combine_chunks(), null_encoding="encode")
        local = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        size = max(len(encoded.dictionary), 1)
        if codes is None:
            codes, radix = local, size
            continue
        if radix * size >= 2**62:  # renumber before the mixed radix could overflow
            _, codes = np.unique(codes, return_inverse=True)
            radix = int(codes.max()) + 1 if n else 1
        codes = codes + local * radix
        radix *= size
    if codes is None:
        codes = np.zeros(n, dtype=np.int64)
    elif keys.num_columns > 1:
        encoded = pc.dictionary_encode(pa.array(codes))
        codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    groups = int(codes.max()) + 1 if n else 0
    first = np.empty(groups, dtype=np.int64)
    first[codes[::-1]] = np.arange(n - 1, -1, -1, dtype=np.int64)
    return codes, first


def _python_keys(keys: pa.Table) -> list[Any]:
    """One hashable value per row: the key itself, or a tuple of a compound key's parts."""
    columns: list[list[Any]] = []
    for column in keys.columns:
        values: list[Any] = column.to_pylist()
        if pa.types.is_floating(column.type):
            values = [_NAN_KEY if v is not None and math.isnan(v) else v for v in values]
        columns.append(values)
    if len(columns) == 1:
        return columns[0]
    return list(zip(*columns, strict=True))


class GroupIndex:
    """Dense ids for group keys in order of first appearance; the keys kept in id order.

    Keys are looked up once per distinct key of a batch (not per row), in a dict.
    """

    def __init__(self) -> None:
        self._ids: dict[Any, int] = {}
        self._chunks: list[pa.Table] = []

    @property
    def size(self) -> int:
        return len(self._ids)

    def keys(self) -> pa.Table | None:
        """The key rows in id order (None before the first key)."""
        return pa.concat_tables(self._chunks) if self._chunks else None

    def ids(self, keys: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """(local group of each row, group id of each local group); new keys get ids."""
        local, first = _local_groups(keys)
        firsts = keys.take(pa.array(first))
        python_keys = _python_keys(firsts)
        ids = self._ids
        get = ids.get
        gid_of_local = np.fromiter(
            (get(k, -1) for k in python_keys), dtype=np.int64, count=len(python_keys)
        )
        new = np.flatnonzero(gid_of_local < 0)
        if new.size:
            added = []
            for position in new.tolist():
                key = python_keys[position]
                gid = ids.get(key)
                if gid is None:  # (0.0 and -0.0 are two local groups but one key)
                    gid = ids[key] = len(ids)
                    added.append(position)
                gid_of_local[position] = gid
            self._chunks.append(firsts.take(pa.array(added, pa.int64())))
        if any(pa.types.is_floating(c.type) for c in keys.columns):
            # 0.0 and -0.0 (and NaNs) are one key but may be two local groups: merge them.
            unique, inverse = np.unique(gid_of_local, return_inverse=True)
            if len(unique) < len(gid_of_local):
                return inverse[local], unique
        return local, gid_of_local

    def snapshot(self) -> tuple[pa.Table, ...]:
        if len(self._chunks) > 32:  # one chunk per batch that brought new keys: compact
            self._chunks = [pa.concat_tables(self._chunks).combine_chunks()]
        return tuple(self._chunks)

    def restore(self, chunks: tuple[pa.Table, ...]) -> None:
        """Back to a snapshot: forget the ids given since, or rebuild the lookup."""
        size = sum(c.num_rows for c in chunks)
        current = self._chunks
        same_line = len(current) >= len(chunks) and all(
            a is b for a, b in zip(current, chunks, strict=False)
        )
        self._chunks = list(chunks)
        if same_line and len(self._ids) >= size:
            while len(self._ids) > size:
                self._ids.popitem()  # ids were given in insertion order
            return
        self._ids = {}
        for chunk in chunks:
            for key in _python_keys(chunk):
                self._ids.setdefault(key, len(self._ids))


def group_by(table: pa.Table, keys: list[str], requests: list[tuple[Any, str]]) -> pa.Table:
    """`table.group_by(keys, use_threads=False).aggregate(requests)` (`keys` not empty),
    on Acero's own nodes: `Table.group_by` imports `pyarrow.acero`, which loads
    `pyarrow.dataset` and Parquet for a scan node no grouping uses (~25 ms of a run)."""
    try:
        from pyarrow._acero import AggregateNodeOptions, Declaration, TableSourceNodeOptions
    except ImportError:  # an Arrow built otherwise: its own way
        return table.group_by(keys, use_threads=False).aggregate(requests)
    aggregates = []
    for target, func in requests:  # named as `TableGroupBy.aggregate` names them
        columns = list(target) if isinstance(target, list | tuple) else [target]
        name = "_".join([*columns, func]) if columns else func
        aggregates.append((columns, f"hash_{func}", None, name))
    plan = Declaration.from_sequence(
        [
            Declaration("table_source", TableSourceNodeOptions(table)),
            Declaration("aggregate", AggregateNodeOptions(aggregates, keys=keys)),
        ]
    )
    return plan.to_table(use_threads=False)


# -- segmented scans --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segments:
    """A batch's rows sorted by local group: `order`, and each group's start and length."""

    order: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    ends: np.ndarray  # last sorted position of each group
    offset_in_group: np.ndarray  # per sorted row: its index within its group

    @classmethod
    def of(cls, local: np.ndarray, groups: int) -> Segments:
        n = len(local)
        # A stable sort keeps arrival order within each group; radix sort for small ids.
        small = local.astype(np.uint16) if groups <= 1 << 16 else local
        order = np.argsort(small, kind="stable")
        lengths = np.bincount(local, minlength=groups).astype(np.int64)
        ends = np.cumsum(lengths) - 1
        starts = ends - lengths + 1
        offset = np.arange(n, dtype=np.int64) - np.repeat(starts, lengths)
        return cls(order, starts, lengths, ends, offset)


def cumsum_exact(sorted_values: np.ndarray, seg: Segments, init: np.ndarray) -> np.ndarray:
    """Per-group running sum of int64 values plus `init` per group (exact, no overflow)."""
    total = np.cumsum(sorted_values)
    before = total[seg.starts] - sorted_values[seg.starts]
    running: np.ndarray = total + np.repeat(init - before, seg.lengths)
    return running


def accumulate(
    ufunc: np.ufunc, sorted_values: np.ndarray, seg: Segments, init: np.ndarray
) -> np.ndarray:
    """`ufunc.accumulate` over each group's rows, `init` (its state) first.

    Groups are padded to a power-of-two width and scanned as rows of a matrix, one
    matrix per width: the padding costs at most twice the rows.
    """
    n = len(sorted_values)
    out = np.empty(n, dtype=sorted_values.dtype)
    if n == 0:
        return out
    widths = np.ceil(np.log2(np.maximum(seg.lengths, 1))).astype(np.int64)
    for width_log in np.unique(widths[seg.lengths > 0]):
        chosen = np.flatnonzero((widths == width_log) & (seg.lengths > 0))
        width = 1 << int(width_log)
        columns = np.arange(width, dtype=np.int64)
        index = seg.starts[chosen, None] + columns
        valid = columns < seg.lengths[chosen, None]
        np.minimum(index, n - 1, out=index)
        matrix = np.empty((len(chosen), width + 1), dtype=sorted_values.dtype)
        matrix[:, 0] = init[chosen]
        matrix[:, 1:] = sorted_values[index]
        scanned = ufunc.accumulate(matrix, axis=1)[:, 1:]
        out[index[valid]] = scanned[valid]
    return out


def groupable(t: pa.DataType) -> bool:
    """Whether a key column of type `t` is grouped by `GroupIndex`."""
    return bool(
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_timestamp(t)
        or pa.types.is_date(t)
        or pa.types.is_time(t)
        or pa.types.is_decimal(t)
        or pa.types.is_null(t)
    )


def numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t))


def covers(
    plan: QueryPlan,
    schema: pa.Schema,
    supports: Callable[[AggregateCall, pa.DataType | None], bool],
) -> bool:
    """Whether every key of `plan` is groupable and `supports` every aggregate, over
    pre-query rows of `schema`."""
    if not all(groupable(schema.field(KEY.format(i)).type) for i in range(len(plan.keys or ["0"]))):
        return False
    return all(
        supports(call, schema.field(ARG.format(call.index)).type if call.arg is not None else None)
        for call in plan.aggregates
    )
