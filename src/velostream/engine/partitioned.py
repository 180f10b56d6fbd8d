"""State kept per input partition, so that a partition's state can move with it.

A job whose state is partitioned (`'state.partitioned' = 'true'`) reads a topic keyed
by its grouping key: every row of a group comes from one partition. It then keeps one
executor, with its own DuckDB, per partition it holds. A batch is split by its
`_partition` column, each partition's rows go to that partition's executor, and the
outputs are put together in partition order. When the consumer group moves a
partition to another server, its executor is dropped here and rebuilt there from the
partition's changelog (see `datasource.kafka.changelog`); nothing else holds it.

Each partition's executor keeps its own watermark (its stream time), as a Kafka
Streams task does, so a window closes on its partition's own progress. The outputs are
the same whichever server holds a partition and however many servers share them.

A snapshot is flat, as checkpoints store it (a table's key names its file): the
sub-executor's keys are prefixed with `p<partition>.`, next to the partitions held and
the input offset each one's state covers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from velostream.datasource.traits import SourceBatch
from velostream.engine.core import BatchOutput, Executor, RowRefs
from velostream.errors import ConfigurationError, StateIncompatibleError

__all__ = ["PARTITION_COLUMN", "PartitionedExecutor", "part_of", "with_part"]

PARTITION_COLUMN = "_partition"


def with_part(partition: int, state: Mapping[str, Any]) -> dict[str, Any]:
    """A sub-executor's snapshot as keys of the partitioned one."""
    return {f"p{partition}.{key}": value for key, value in state.items()}


def part_of(partition: int, state: Mapping[str, Any]) -> dict[str, Any]:
    """Partition `partition`'s sub-snapshot out of a partitioned snapshot."""
    prefix = f"p{partition}."
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


class PartitionedExecutor(Executor):
    """One executor per input partition held; see the module docstring."""

    def __init__(self, make: Callable[[], Executor], con: duckdb.DuckDBPyConnection) -> None:
        """`make` builds one partition's executor (with its own DuckDB); `con` is for
        what is not a partition's (the job's metric conditions)."""
        self._make = make
        first = make()
        super().__init__(first.plan, con)
        self.state_kind = first.state_kind  # type: ignore[misc]
        self.late_message = first.late_message  # type: ignore[misc]
        self._inner_shape = first.shape
        self._spare: Executor | None = first  # used by the first partition to come
        self.executors: dict[int, Executor] = {}
        #: Each partition's state as it was when it came (restored from its changelog):
        #: what an abort goes back to when the last commit's snapshot predates it.
        self._base: dict[int, tuple[dict[str, Any], int | None]] = {}
        #: Each partition's snapshot since its state last changed: a batch's changelog
        #: write and the commit's snapshot of the whole take it once.
        self._snapshots: dict[int, dict[str, Any]] = {}
        #: The input offset each partition's state covers (its next offset to read).
        self.input_offsets: dict[int, int] = {}
        #: Partitions a local checkpoint holds that are not held now: `{p: (input
        #: offset, state)}`. Used when a partition comes, if its offset is the group's.
        self.cache: dict[int, tuple[int, dict[str, Any]]] = {}
        #: Partitions whose state the last `process` touched.
        self.touched: set[int] = set()

    # -- partitions coming and going ------------------------------------------------

    def _executor(self, partition: int) -> Executor:
        executor = self.executors.get(partition)
        if executor is None:
            executor, self._spare = (self._spare or self._make()), None
            self.executors[partition] = executor
        return executor

    def assign(
        self, partition: int, state: Mapping[str, Any] | None, input_offset: int | None
    ) -> None:
        """Hold `partition` from now on, with `state` covering its input up to
        `input_offset` (None: it has none yet)."""
        executor = self._executor(partition)
        self.cache.pop(partition, None)
        self._snapshots.pop(partition, None)
        if state is not None:
            executor.restore(dict(state))
        if input_offset is not None:
            self.input_offsets[partition] = input_offset
        self._base[partition] = (self.partition_state(partition), input_offset)

    def revoke(self, partition: int) -> None:
        """Forget `partition`: its next holder rebuilds it from its changelog."""
        executor = self.executors.pop(partition, None)
        self._base.pop(partition, None)
        self._snapshots.pop(partition, None)
        self.input_offsets.pop(partition, None)
        self.touched.discard(partition)
        if executor is not None:
            executor.con.close()

    @property
    def partitions(self) -> list[int]:
        return sorted(self.executors)

    def partition_state(self, partition: int) -> dict[str, Any]:
        """One partition's snapshot, as its changelog keeps it (taken once per change)."""
        state = self._snapshots.get(partition)
        if state is None:
            state = self._snapshots[partition] = self._executor(partition).snapshot()
        return state

    # -- running --------------------------------------------------------------------

    def process(self, batch: SourceBatch) -> BatchOutput:
        table = batch.table
        self.touched = set()
        if not table.num_rows:
            return BatchOutput(table.slice(0, 0))
        column = table.column(PARTITION_COLUMN).to_numpy(zero_copy_only=False)
        outputs: list[BatchOutput] = []
        for partition in np.unique(column).tolist():
            rows = np.flatnonzero(column == partition)
            part = SourceBatch(
                table.take(pa.array(rows)),
                RowRefs(batch.refs, rows),
                [],
                batch.position,
                batch.source,
            )
            executor = self.executors.get(int(partition))
            if executor is None:
                raise ConfigurationError(
                    f"rows of partition {partition}, whose state this job does not hold "
                    "(dead letters cannot be replayed into a job whose state is "
                    "partitioned yet)"
                )
            self._snapshots.pop(int(partition), None)
            outputs.append(executor.process(part))
            self.touched.add(int(partition))
        return _combine(outputs)

    def finish(self) -> pa.Table | None:
        self._snapshots.clear()
        tables = [t for p in self.partitions if (t := self.executors[p].finish()) is not None]
        return _concat(tables) if tables else None

    def interrupt(self) -> None:
        for executor in list(self.executors.values()):
            executor.con.interrupt()
        self.con.interrupt()

    # -- state ----------------------------------------------------------------------

    @cached_property
    def shape(self) -> dict[str, Any]:
        return {**self._inner_shape, "partitioned": True}

    def snapshot(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "shape": self.shape,
            "partitions": self.partitions,
            "input_offsets": {str(p): o for p, o in self.input_offsets.items()},
        }
        for partition in self.partitions:
            state.update(with_part(partition, self.partition_state(partition)))
        return state

    def check_state(self, state: Mapping[str, Any]) -> None:
        shape = state.get("shape")
        if not isinstance(shape, Mapping) or not shape.get("partitioned"):
            raise StateIncompatibleError(
                "the state was kept whole, and this job keeps it per partition "
                "('state.partitioned' changed)"
            )
        super().check_state(state)

    def restore(self, state: dict[str, Any]) -> None:
        """Go back to `state` for the partitions held now (a partition that came after
        it goes back to the state it came with); keep the others as `cache`."""
        self.check_state(state)
        self._snapshots.clear()
        offsets = {int(p): int(o) for p, o in (state.get("input_offsets") or {}).items()}
        kept = {int(p) for p in state.get("partitions", [])}
        for partition in kept - set(self.executors):
            if partition in offsets:
                self.cache[partition] = (offsets[partition], part_of(partition, state))
        for partition, executor in self.executors.items():
            if partition in kept:
                executor.restore(part_of(partition, state))
                if partition in offsets:
                    self.input_offsets[partition] = offsets[partition]
            elif partition in self._base:
                base, offset = self._base[partition]
                executor.restore(dict(base))
                if offset is None:
                    self.input_offsets.pop(partition, None)
                else:
                    self.input_offsets[partition] = offset

    @property
    def limit_reached(self) -> bool:
        return False


def _concat(tables: Iterable[pa.Table]) -> pa.Table:
    return pa.concat_tables(list(tables), promote_options="permissive")


def _combine(outputs: list[BatchOutput]) -> BatchOutput:
    if len(outputs) == 1:
        return outputs[0]
    return BatchOutput(
        _concat(o.table for o in outputs),
        [bad for o in outputs for bad in o.bad],
        [late for o in outputs for late in o.late],
        sum(o.late_dropped for o in outputs),
    )
