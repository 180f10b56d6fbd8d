"""Micro-batch execution on a sandboxed DuckDB connection, and row-error isolation.

A batch runs as one DuckDB query over the Arrow table. When a row makes the query
fail (a CAST that cannot convert, say), the failing rows are found without giving up
the batch: first vectorised (every CAST of the query re-run as TRY_CAST to flag the
rows that fail), then, if the failure is of another kind, by bisecting the batch. The
bad rows become `BadRecord`s for the failure strategy; the good rows go on.
"""

from __future__ import annotations

import itertools
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import Any, ClassVar, cast

import duckdb
import numpy as np
import pyarrow as pa

from velostream.datasource.traits import BadRecord, RecordRefs, SourceBatch
from velostream.engine.headers import with_headers
from velostream.errors import (
    ErrorKind,
    QueryExecutionError,
    ResourceExhaustedError,
    Stage,
    StateIncompatibleError,
    classify,
)
from velostream.sql.planner import BATCH, ROW, SYSTEM_COLUMNS, QueryPlan

__all__ = [
    "SYSTEM_COLUMNS",
    "BatchOutput",
    "Executor",
    "RowRefs",
    "StatelessExecutor",
    "check_columns",
    "isolate_rows",
    "kind_of_state",
    "opening_connection",
    "record_rows",
    "sandboxed_connection",
]

# DuckDB errors caused by a row's data; anything else is the query's own fault.
_ROW_ERRORS = (
    duckdb.ConversionException,
    duckdb.OutOfRangeException,
    duckdb.InvalidInputException,
    duckdb.DataError,
)
_BISECT_LEAF = 1


def sandboxed_connection(
    threads: int = 2, memory_limit: int | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that cannot read or write files, the network or its settings.

    `memory_limit` (bytes) bounds what DuckDB's buffer manager holds (hash tables,
    sorts, aggregate states); nothing spills to disk, so going over it raises
    `duckdb.OutOfMemoryException`. Default: DuckDB's own (80% of the machine).
    """
    limit = {} if memory_limit is None else {"memory_limit": f"{memory_limit}B"}
    con = duckdb.connect(
        config={
            **limit,
            "enable_external_access": False,
            # No spilling (no files): only accepted after enable_external_access.
            "temp_directory": "",
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
            "threads": threads,
            "preserve_insertion_order": True,
        }
    )
    con.execute("SET lock_configuration = true")
    return con


class _Opening:
    """A DuckDB connection opened on another thread; its first use waits for it."""

    def __init__(self, future: Future[duckdb.DuckDBPyConnection]) -> None:
        self._future = future

    def __getattr__(self, name: str) -> Any:
        return getattr(self._future.result(), name)

    def interrupt(self) -> None:
        """Interrupt the query in flight; none runs on a database still opening, so the
        watchdog (which asks again each tick) never waits for one to open."""
        if self._future.done() and self._future.exception() is None:
            self._future.result().interrupt()


def _open_sandboxed(memory_limit: int | None) -> duckdb.DuckDBPyConnection:
    try:
        return sandboxed_connection(memory_limit=memory_limit)
    except duckdb.Error as exc:  # not a row's fault: never bisected as one
        raise ResourceExhaustedError(f"cannot open the job's DuckDB database: {exc}") from exc


@cache
def _opener() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(1, thread_name_prefix="duckdb-open")


def opening_connection(memory_limit: int | None = None) -> duckdb.DuckDBPyConnection:
    """`sandboxed_connection`, opened on another thread while the caller goes on.

    Opening a DuckDB takes ~20 ms, most of a deployment's; a job's first read of its
    source (a file read and parsed, mostly outside the GIL) hides it, where the first
    batch then finds it open. An error opening it is raised at its first use, as a
    ResourceExhaustedError (DuckDB's own errors there would read as a row's).
    """
    future = _opener().submit(_open_sandboxed, memory_limit)
    return cast(duckdb.DuckDBPyConnection, _Opening(future))


@dataclass(slots=True)
class BatchOutput:
    """What one micro-batch produced: output rows, rows that failed in the query, late
    rows to dead-letter, and how many late rows were dropped (`late.data.strategy`)."""

    table: pa.Table
    bad: list[BadRecord] = field(default_factory=list)
    late: list[BadRecord] = field(default_factory=list)
    late_dropped: int = 0


class Executor(ABC):
    """Runs one job's plan over micro-batches, keeping whatever state it needs."""

    #: The kind of state this executor keeps: a state of another kind is refused.
    state_kind: ClassVar[str] = "stateless"
    #: What a late row is, in the error recorded for late rows dropped.
    late_message: ClassVar[str] = "late record: its window closed before it arrived"

    def __init__(self, plan: QueryPlan, con: duckdb.DuckDBPyConnection | None = None) -> None:
        self.plan = plan
        self.con = con if con is not None else sandboxed_connection()
        self._lock = threading.Lock()
        self._emitted = 0

    @abstractmethod
    def process(self, batch: SourceBatch) -> BatchOutput:
        """Run one batch; return its output rows and the rows that failed."""

    def finish(self) -> pa.Table | None:
        """The rows due when a bounded source ends (EMIT FINAL, open windows, LEAD)."""
        return None

    def prime(self, columns: pa.Schema) -> None:  # noqa: B027 - optional hook
        """Learn the input's column names from its source, before `finish`, when no row
        brought them (it had none, or only bad ones)."""

    def _apply_limit(self, table: pa.Table) -> pa.Table:
        table = with_headers(normalize_output(table), self.plan.set_headers, self.con)
        limit = self.plan.limit
        if limit is None:
            return table
        room = max(limit - self._emitted, 0)
        if table.num_rows > room:
            table = table.slice(0, room)
        self._emitted += table.num_rows
        return table

    @cached_property
    def shape(self) -> dict[str, Any]:
        """What the layout of the state depends on (JSON values): kept in each snapshot,
        so that a state restored into another version of the query is checked."""
        return {"kind": self.state_kind}

    def snapshot(self) -> dict[str, Any]:
        """The executor's state: plain values and Arrow tables, enough to `restore`."""
        return {"emitted": self._emitted, "shape": self.shape}

    def check_state(self, state: Mapping[str, Any]) -> None:
        """Raise StateIncompatibleError unless `state` fits this plan.

        The base compares the state's kind and `shape` (a state from before shapes were
        kept has its kind told by its keys); subclasses add what their tables must hold.
        """
        kind = kind_of_state(state)
        if kind != self.state_kind:
            raise StateIncompatibleError(
                f"the state was kept by a {_KIND_NAMES.get(kind, kind)}; "
                f"this is a {_KIND_NAMES.get(self.state_kind, self.state_kind)}"
            )
        stored = state.get("shape")
        if not isinstance(stored, Mapping):
            return
        differences = [
            f"{_LABELS.get(key, key)}: {_show(stored.get(key))} in the state, "
            f"{_show(self.shape.get(key))} in the query"
            for key in sorted(set(stored) | set(self.shape), key=str)
            if _plain(stored.get(key)) != _plain(self.shape.get(key))
        ]
        if differences:
            raise StateIncompatibleError(
                "the state does not fit the query (" + "; ".join(differences) + ")"
            )

    def restore(self, state: dict[str, Any]) -> None:
        """Return to a `snapshot` (after an abort, or from a checkpoint at restart).

        A state that does not fit the plan (`check_state`) raises StateIncompatibleError
        and leaves the executor as it was.
        """
        self.check_state(state)
        self._emitted = int(state.get("emitted", 0))

    @property
    def limit_reached(self) -> bool:
        return self.plan.limit is not None and self._emitted >= self.plan.limit

    def interrupt(self) -> None:
        """Interrupt the query in flight (from another thread)."""
        self.con.interrupt()

    def sql(self, query: str) -> pa.Table:
        """Run `query`, translating DuckDB errors that are not row errors."""
        return self.con.sql(query).to_arrow_table()


# How a shape's keys read in an error message.
_LABELS = {"group_by": "GROUP BY", "emit": "EMIT", "windows": "window functions"}
_KIND_NAMES = {
    "stateless": "stateless query",
    "aggregate": "GROUP BY query",
    "row_window": "row-window query",
    "distinct": "SELECT DISTINCT query",
    "stream_join": "stream–stream join query",
}


def kind_of_state(state: Mapping[str, Any]) -> str:
    """The kind of executor a snapshot is from (told by its keys if it has no shape)."""
    shape = state.get("shape")
    if isinstance(shape, Mapping) and isinstance(shape.get("kind"), str):
        return str(shape["kind"])
    if "has_state" in state:
        return "aggregate"
    if "seq" in state:
        return "row_window"
    return "stateless"


def _plain(value: Any) -> Any:
    """A shape value as JSON gives it back (tuples are lists)."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def check_columns(what: str, table: Any, expected: Iterable[str]) -> None:
    """Raise StateIncompatibleError unless state `table` has exactly the `expected` columns."""
    if not isinstance(table, pa.Table):
        raise StateIncompatibleError(f"the state's {what} is not a table")
    have, want = set(table.column_names), set(expected)
    if have == want:
        return
    parts = []
    if want - have:
        parts.append(f"missing {', '.join(sorted(want - have))}")
    if have - want:
        parts.append(f"not in the query: {', '.join(sorted(have - want))}")
    raise StateIncompatibleError(f"the state's {what} does not fit the query ({'; '.join(parts)})")


def normalize_output(table: pa.Table) -> pa.Table:
    """Integer sums come back from DuckDB as DECIMAL(38,0): give them back as int64.

    A sum beyond the int64 range stays DECIMAL(38,0): exact beats a uniform type.
    """
    for i, f in enumerate(table.schema):
        if pa.types.is_decimal(f.type) and f.type.scale == 0:
            try:
                column = table.column(i).cast(pa.int64())
            except pa.ArrowInvalid:
                continue
            table = table.set_column(i, pa.field(f.name, pa.int64(), f.nullable), column)
    return table


def with_row_numbers(table: pa.Table) -> pa.Table:
    """The batch with `__rn`, each row's index in its batch."""
    return table.append_column(ROW, pa.array(np.arange(table.num_rows, dtype=np.int64)))


class RowRefs(RecordRefs):
    """Row `i`'s reference is that of row `rows[i]` of another batch (the stream row a
    joined row came from, a partition's row in the whole batch)."""

    def __init__(self, refs: RecordRefs, rows: np.ndarray) -> None:
        self._refs, self._rows = refs, rows

    def ref(self, index: int) -> str:
        return self._refs.ref(int(self._rows[index]))

    def raw(self, index: int) -> bytes:
        return self._refs.raw(int(self._rows[index]))

    def origins(self, rows: np.ndarray) -> np.ndarray:
        """The rows of the other batch that rows `rows` of this one came from."""
        origins: np.ndarray = self._rows[rows]
        return origins


def record_rows(refs: RecordRefs, rows: np.ndarray) -> np.ndarray:
    """Of batch rows `rows`, the first of each source record: a stream row that matched N
    table rows gave N joined rows, but is one record to count or dead-letter."""
    if not isinstance(refs, RowRefs) or rows.size < 2:
        return rows
    _, first = np.unique(refs.origins(rows), return_index=True)
    return rows[np.sort(first)]


def stream_order(table: pa.Table, column: int) -> pa.Table:
    """`table` sorted (stably) by its row numbers in `column`, unless they are in order.

    DuckDB gives a join's rows in no set order: each of its threads hands over its rows
    in order, in runs that only need putting in order (no copy) when they do not
    interleave (the batch was one chunk: `StatelessExecutor.process`); the rows are
    sorted when they do.
    """
    rows = table.column(column).to_numpy()
    if rows.size < 2 or bool(np.all(rows[1:] >= rows[:-1])):
        return table
    runs = _ordered_runs(table, column)
    if runs is not None:
        return pa.Table.from_batches(runs, table.schema)
    return table.take(pa.array(np.argsort(rows, kind="stable")))


def _ordered_runs(table: pa.Table, column: int) -> list[pa.RecordBatch] | None:
    """`table`'s record batches in the order a stable sort by `column` puts their rows,
    if each is in order and none interleaves another; else None."""
    found: list[tuple[int, int, int, pa.RecordBatch]] = []
    for index, batch in enumerate(table.to_batches()):
        if batch.num_rows == 0:
            continue
        rows = batch.column(column).to_numpy()
        if not bool(np.all(rows[1:] >= rows[:-1])):
            return None
        found.append((int(rows[0]), index, int(rows[-1]), batch))
    found.sort(key=lambda run: run[:2])
    for (_, before, last, _), (first, after, _, _) in itertools.pairwise(found):
        # Equal numbers across two runs keep the runs' order in `table`, as a stable sort.
        if last > first or (last == first and before > after):
            return None
    return [run[3] for run in found]


def joined_rows(table: pa.Table, refs: RecordRefs) -> tuple[pa.Table, RecordRefs]:
    """A join's rows in input order and numbered afresh (`__rn`: a stream row matching
    N table rows gave N rows with its number), with references that lead back to the
    stream rows."""
    table = stream_order(table, table.column_names.index(ROW))
    rows = table.column(ROW).to_numpy()
    index = table.column_names.index(ROW)
    renumbered = pa.array(np.arange(table.num_rows, dtype=np.int64))
    return table.set_column(index, ROW, renumbered), RowRefs(refs, rows)


def isolate_rows(
    executor: Executor,
    table: pa.Table,
    query: str,
    refs: RecordRefs,
) -> tuple[pa.Table, list[BadRecord], pa.Table]:
    """Run `query` over `table` (registered as the batch), isolating rows that fail.

    Returns (result, bad records, the input rows that remain). `table` must carry `__rn`.
    """
    con = executor.con
    con.register(BATCH, table)
    try:
        return con.sql(query).to_arrow_table(), [], table
    except _ROW_ERRORS as first_error:
        bad_rows = _cast_failures(executor, table)
        if not bad_rows:
            bad_rows = {}
        remaining = _drop_rows(table, bad_rows)
        try:
            con.register(BATCH, remaining)
            result = con.sql(query).to_arrow_table()
        except _ROW_ERRORS:
            more = _bisect(executor, remaining, query)
            bad_rows.update(more)
            remaining = _drop_rows(table, bad_rows)
            con.register(BATCH, remaining)
            result = con.sql(query).to_arrow_table()
        if not bad_rows:
            raise QueryExecutionError(f"query failed: {first_error}") from first_error
        bad = [
            BadRecord(
                raw=refs.raw(rn),
                ref=refs.ref(rn),
                message=message,
                kind=kind,
                stage=Stage.PROCESS,
            )
            for rn, (message, kind) in sorted(bad_rows.items())
        ]
        return result, bad, remaining
    except duckdb.Error as exc:
        raise QueryExecutionError(f"query failed: {exc}") from exc
    finally:
        con.unregister(BATCH)


def _drop_rows(table: pa.Table, bad_rows: dict[int, tuple[str, ErrorKind]]) -> pa.Table:
    if not bad_rows:
        return table
    rn = table.column(ROW).to_numpy()
    keep = ~np.isin(rn, np.fromiter(bad_rows, dtype=np.int64))
    return table.filter(pa.array(keep))


def _cast_failures(executor: Executor, table: pa.Table) -> dict[int, tuple[str, ErrorKind]]:
    """Rows where some CAST of the query cannot convert its argument (vectorised)."""
    casts = executor.plan.casts
    if not casts:
        return {}
    where = executor.plan.where_sql
    conditions = []
    for cast_sql, arg_sql, type_sql, in_where, context_sql in casts:
        # The CAST cannot convert, and the expression around it really fails: a CAST
        # that a CASE guards from this value is not this row's failure.
        fails = (
            f"(({arg_sql}) IS NOT NULL AND TRY_CAST(({arg_sql}) AS {type_sql}) IS NULL "
            f"AND TRY(({context_sql}) IS NULL) IS NULL)"
        )
        if not in_where and where:
            fails = f"({fails} AND COALESCE(TRY(({where})), FALSE))"
        conditions.append((fails, arg_sql, type_sql, cast_sql))
    flags = ", ".join(
        f"{c[0]} AS __f{i}, CAST(({c[1]}) AS VARCHAR) AS __v{i}" for i, c in enumerate(conditions)
    )
    any_fail = " OR ".join(c[0] for c in conditions)
    try:
        found = executor.con.sql(
            f"SELECT {ROW}, {flags} FROM {executor.plan.from_sql} WHERE {any_fail}"
        ).fetchall()
    except duckdb.Error:
        return {}
    out: dict[int, tuple[str, ErrorKind]] = {}
    for row in found:
        for i, (_, arg_sql, type_sql, _cast_sql) in enumerate(conditions):
            if row[1 + 2 * i]:
                value = row[2 + 2 * i]
                out[int(row[0])] = (
                    f"cannot CAST {arg_sql} = {value!r} to {type_sql}",
                    ErrorKind.TYPE,
                )
                break
    return out


def _bisect(executor: Executor, table: pa.Table, query: str) -> dict[int, tuple[str, ErrorKind]]:
    """Find failing rows by splitting the batch; only failing halves are split further."""
    con = executor.con
    out: dict[int, tuple[str, ErrorKind]] = {}
    pending = [table]
    while pending:
        part = pending.pop()
        con.register(BATCH, part)
        try:
            con.sql(query).to_arrow_table()
            continue
        except _ROW_ERRORS as exc:
            if part.num_rows <= _BISECT_LEAF:
                rn = int(part.column(ROW)[0].as_py())
                message = str(exc).split("\n", 1)[0]
                out[rn] = (message, classify(exc))
                continue
        half = part.num_rows // 2
        pending.append(part.slice(half))
        pending.append(part.slice(0, half))
    return out


class StatelessExecutor(Executor):
    """Projection and WHERE, batch by batch; rows keep their input order."""

    def __init__(self, plan: QueryPlan, con: duckdb.DuckDBPyConnection | None = None) -> None:
        super().__init__(plan, con)
        self._queries: dict[tuple[str, ...], str] = {}

    def query(self, columns: list[str]) -> str:
        """The query over a batch of `columns` (a `*` is made for them: `Star.sql`)."""
        key = tuple(columns)
        query = self._queries.get(key)
        if query is None:
            where = f" WHERE {self.plan.where_sql}" if self.plan.where_sql else ""
            items = self.plan.select_list(columns, (ROW,))
            # preserve_insertion_order (on) keeps input order without a sort; a join's
            # output comes in no set order, so it ends with each row's number, by which
            # its rows are put back in input order (`in_stream_order`).
            rows = f", {ROW}" if self.plan.tables else ""
            query = f"SELECT {items}{rows} FROM {self.plan.from_sql}{where}"
            self._queries[key] = query
        return query

    def in_stream_order(self, result: pa.Table) -> pa.Table:
        """A join's result in input order, without the row numbers it ends with."""
        if not self.plan.tables:
            return result
        return stream_order(result, result.num_columns - 1).remove_column(result.num_columns - 1)

    def process(self, batch: SourceBatch) -> BatchOutput:
        if self.limit_reached or batch.table.num_rows == 0:
            return BatchOutput(_empty_like(self, batch.table))
        table = with_row_numbers(batch.table)
        if self.plan.tables:
            # Over one chunk DuckDB's threads join contiguous ranges of rows: their runs
            # come back apart, not interleaved, and are put in order without a copy.
            table = table.combine_chunks()
        result, bad, _ = isolate_rows(self, table, self.query(table.column_names), batch.refs)
        return BatchOutput(self._apply_limit(self.in_stream_order(result)), bad)


def _empty_like(executor: Executor, table: pa.Table) -> pa.Table:
    """An empty output with the right columns (run the query on zero rows)."""
    empty = with_row_numbers(table.slice(0, 0))
    executor.con.register(BATCH, empty)
    try:
        if isinstance(executor, StatelessExecutor):
            result = executor.con.sql(executor.query(empty.column_names)).to_arrow_table()
            return executor.in_stream_order(result)
        return pa.table({})
    finally:
        executor.con.unregister(BATCH)
