"""State kept per input partition: the same answers as one whole state, per key.

A topic keyed by the GROUP BY column puts every row of a key in one partition; a
PartitionedExecutor holding some of the partitions, fed their rows in any batches,
must give each key exactly the final values one whole executor gives. A partition's
state survives being moved (snapshot → changelog bytes → another executor), and an
abort after a partition came goes back to the state it came with.
"""

from __future__ import annotations

import random
import zlib
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.engine.harness import LineRefs, make_job
from velostream.datasource.kafka.changelog import CHUNK_BYTES, _chunks, decode_state, encode_state
from velostream.datasource.traits import SourceBatch
from velostream.engine import Executor, build_executor, sandboxed_connection
from velostream.engine.partitioned import PartitionedExecutor, part_of
from velostream.errors import ConfigurationError, SourceError, StateIncompatibleError
from velostream.sql.model import EmitMode
from velostream.sql.planner import plan_job

PARTITIONS = 4
SQL = "SELECT symbol, COUNT(*) AS n, SUM(qty) AS total, MAX(price) AS high FROM t GROUP BY symbol"


def _job() -> Any:
    return make_job(SQL, emit=EmitMode.CHANGES)


def _whole() -> Executor:
    job = _job()
    return build_executor(plan_job(job), job, sandboxed_connection())


def _partitioned(partitions: range | list[int] = range(PARTITIONS)) -> PartitionedExecutor:
    job = _job()
    plan = plan_job(job)
    executor = PartitionedExecutor(
        lambda: build_executor(plan, job, sandboxed_connection()), sandboxed_connection()
    )
    for p in partitions:
        executor.assign(p, None, None)
    return executor


def _partition(symbol: str) -> int:
    return zlib.crc32(symbol.encode()) % PARTITIONS


def _rows(n: int, seed: int) -> pa.Table:
    rng = random.Random(seed)
    symbols = [rng.choice([f"S{i}" for i in range(12)]) for _ in range(n)]
    return pa.table(
        {
            "symbol": symbols,
            "qty": [rng.randint(-5, 100) for _ in range(n)],
            "price": [rng.choice([None, round(rng.uniform(1, 50), 2)]) for _ in range(n)],
            "_partition": pa.array([_partition(s) for s in symbols], pa.int32()),
        }
    )


def _feed(executor: Executor, table: pa.Table, size: int) -> dict[str, dict[str, Any]]:
    final: dict[str, dict[str, Any]] = {}
    for start in range(0, table.num_rows, size):
        part = table.slice(start, size)
        output = executor.process(SourceBatch(part, LineRefs(start), [], None))
        assert not output.bad
        for row in output.table.to_pylist():
            final[row["symbol"]] = row
    return final


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 400), size=st.sampled_from([1, 7, 64, 1000]), seed=st.integers(0, 99))
def test_per_partition_state_gives_each_key_the_whole_states_answer(
    n: int, size: int, seed: int
) -> None:
    table = _rows(n, seed)
    assert _feed(_partitioned(), table, size) == _feed(_whole(), table, size)


def test_servers_holding_some_partitions_each_answer_for_their_keys() -> None:
    """Two executors splitting the partitions give, together, the one-server answers."""
    table = _rows(600, 1)
    parts = table.column("_partition").to_pylist()
    a, b = _partitioned([0, 1]), _partitioned([2, 3])
    mask_a = pa.array([p in (0, 1) for p in parts])
    together = {
        **_feed(a, table.filter(mask_a), 50),
        **_feed(b, table.filter(pa.compute.invert(mask_a)), 50),
    }
    assert together == _feed(_whole(), table, 50)


def test_a_partition_moves_through_its_changelog_bytes() -> None:
    """Half the rows on one server; its partition 2 moves; the rest on another server."""
    table = _rows(800, 2)
    first, rest = table.slice(0, 400), table.slice(400)
    old = _partitioned()
    _feed(old, first, 100)
    moved = decode_state(encode_state(old.partition_state(2)))
    new = _partitioned([0, 1, 3])
    new.assign(2, moved, 400)
    only_2 = rest.filter(pa.compute.equal(rest.column("_partition"), 2))
    answers = _feed(new, only_2, 100)
    truth = _feed(_whole(), table, 100)
    assert answers == {s: r for s, r in truth.items() if _partition(s) == 2}
    assert new.input_offsets[2] == 400


def test_an_abort_after_a_partition_came_goes_back_to_the_state_it_came_with() -> None:
    table = _rows(300, 3)
    executor = _partitioned([0, 1])
    _feed(executor, table.filter(pa.compute.less(table.column("_partition"), 2)), 100)
    committed = executor.snapshot()
    executor.assign(3, None, None)
    came_with = executor.partition_state(3)
    rows_3 = table.filter(pa.compute.equal(table.column("_partition"), 3))
    _feed(executor, rows_3, 1000)
    assert executor.partition_state(3) != came_with
    executor.restore(committed)  # the batch aborts: back to the last commit's snapshot
    assert _frames(executor.partition_state(3)) == _frames(came_with)
    assert _frames(part_of(0, committed)) == _frames(executor.partition_state(0))


def _frames(state: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.to_pylist() if isinstance(v, pa.Table) else v) for k, v in state.items()}


def test_rows_of_a_partition_not_held_are_refused() -> None:
    executor = _partitioned([0])
    table = _rows(50, 4)
    with pytest.raises(ConfigurationError, match="whose state this job does not hold"):
        executor.process(SourceBatch(table, LineRefs(0), [], None))


def test_a_whole_state_is_refused_by_a_partitioned_job() -> None:
    whole = _whole()
    whole.process(SourceBatch(_rows(10, 5), LineRefs(0), [], None))
    with pytest.raises(StateIncompatibleError, match=r"'state\.partitioned' changed"):
        _partitioned().restore(whole.snapshot())


def test_a_checkpoint_keeps_partitions_not_held_as_a_cache() -> None:
    old = _partitioned()
    _feed(old, _rows(100, 6), 100)
    for p in range(PARTITIONS):
        old.input_offsets[p] = 10 + p
    fresh = _partitioned([])
    fresh.restore(old.snapshot())
    assert sorted(fresh.cache) == list(range(PARTITIONS))
    assert fresh.cache[2][0] == 12
    assert _frames(fresh.cache[2][1]) == _frames(old.partition_state(2))


def test_state_bytes_round_trip_and_chunk() -> None:
    state = {
        "emitted": 3,
        "shape": {"kind": "aggregate", "group_by": ["symbol"]},
        "groups": pa.table({"k": ["a" * 1000] * 2000, "v": list(range(2000))}),
        "empty": pa.table({"x": pa.array([], pa.int64())}),
    }
    data = encode_state(state)
    back = decode_state(data)
    assert back["emitted"] == 3 and back["shape"] == state["shape"]
    assert back["groups"].equals(state["groups"]) and back["empty"].equals(state["empty"])
    chunks = _chunks(data, 42)
    assert len(chunks) == -(-len(data) // CHUNK_BYTES) > 1
    assert b"".join(value for _, value, _ in chunks) == data
    assert [key for key, _, _ in chunks] == [f"chunk-{i}".encode() for i in range(len(chunks))]
    with pytest.raises(SourceError, match="unreadable"):
        decode_state(data[: len(data) // 2])
