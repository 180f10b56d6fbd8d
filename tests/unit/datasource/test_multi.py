"""The multi-source reader: a fair interleave, one position per source, rewinds."""

from __future__ import annotations

from typing import Any

import pytest

from velostream.datasource.memory import MemorySource
from velostream.datasource.multi import MultiSource, sources_of
from velostream.datasource.traits import SourceBatch, TransactionCapability
from velostream.errors import ConfigurationError


def rows(start: int, stop: int) -> list[dict[str, Any]]:
    return [{"id": i} for i in range(start, stop)]


def ids(batch: SourceBatch | None) -> list[int]:
    assert batch is not None
    return [int(v) for v in batch.table.column("id").to_pylist()]


def drain(source: MultiSource, size: int) -> list[tuple[str | None, list[int]]]:
    out = []
    while (batch := source.read_batch(size)) is not None:
        if batch.num_records:
            out.append((batch.source, ids(batch)))
    return out


def two(a: int = 6, b: int = 2, **kw: Any) -> MultiSource:
    return MultiSource(
        [
            MemorySource("a", data=[rows(0, a)], **kw),
            MemorySource("b", data=[rows(100, 100 + b)], **kw),
        ]
    )


def test_batches_alternate_between_sources_and_each_bounded_source_ends_on_its_own() -> None:
    source = two(a=6, b=2)
    source.open()
    assert drain(source, 2) == [
        ("a", [0, 1]),
        ("b", [100, 101]),
        ("a", [2, 3]),
        ("a", [4, 5]),  # b has ended: a goes on alone
    ]
    assert source.read_batch(2) is None  # every source has ended
    assert source.bounded


def test_one_unbounded_source_makes_the_job_unbounded_and_an_idle_one_gives_its_turn() -> None:
    idle = MemorySource("idle", bounded=False)
    busy = MemorySource("busy", data=[rows(0, 4)])
    source = MultiSource([idle, busy])
    assert not source.bounded
    first = source.read_batch(2)
    assert first is not None and first.source == "busy" and ids(first) == [0, 1]
    assert ids(source.read_batch(2)) == [2, 3]
    last = source.read_batch(2)  # busy has ended, idle has nothing: an empty batch
    assert last is not None and last.num_records == 0 and last.source == "idle"


def test_a_batch_position_holds_every_source_position_after_its_last_batch() -> None:
    source = two(a=4, b=4)
    first = source.read_batch(2)
    second = source.read_batch(2)
    third = source.read_batch(2)
    assert first is not None and second is not None and third is not None
    assert set(first.position) == {"a"}  # b not read yet: read from its start
    assert second.position == {"a": first.position["a"], "b": second.position["b"]}
    assert third.position["b"] == second.position["b"]
    assert third.position["a"] != first.position["a"]


def test_seek_rewinds_every_source_and_rereads_the_batch_in_flight_from_its_source() -> None:
    source = two(a=6, b=6)
    a1 = source.read_batch(2)
    b1 = source.read_batch(2)
    assert a1 is not None and b1 is not None
    source.commit(b1.position)  # a: [0, 1] and b: [100, 101] committed
    assert source.read_batch(2) is not None  # a: [2, 3], in flight
    source.seek(None)  # the batch failed: back to the last commit
    again = source.read_batch(2)
    assert again is not None and again.source == "a" and ids(again) == [2, 3]
    assert ids(source.read_batch(2)) == [102, 103]


def test_commit_hands_each_source_its_own_position() -> None:
    source = two(a=4, b=4)
    source.read_batch(2)
    b1 = source.read_batch(2)
    assert b1 is not None
    source.commit(b1.position)
    fresh = two(a=4, b=4)
    fresh.commit(b1.position)
    fresh.seek(b1.position)  # a restart from this checkpoint position
    assert drain(fresh, 2) == [("a", [2, 3]), ("b", [102, 103])]


def test_the_name_is_the_source_in_focus() -> None:
    source = two()
    source.read_batch(2)
    assert source.name == "a"
    source.read_batch(2)
    assert source.name == "b"
    assert source.names == ["a", "b"]
    assert [s.name for s in sources_of(source)] == ["a", "b"]


def test_sources_must_agree_on_how_their_positions_commit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = two()
    assert source.capability() is TransactionCapability.CHECKPOINT
    monkeypatch.setattr(
        source.sources[1], "transaction_capability", TransactionCapability.KAFKA_OFFSETS
    )
    with pytest.raises(ConfigurationError, match=r"a \(checkpoint\), b \(kafka_offsets\)"):
        source.capability()


def test_a_multi_source_needs_two_distinct_sources() -> None:
    with pytest.raises(ConfigurationError, match="at least two"):
        MultiSource([MemorySource("a")])
    with pytest.raises(ConfigurationError, match="distinct names"):
        MultiSource([MemorySource("a"), MemorySource("a")])


def test_dead_letters_are_decoded_by_the_source_they_name() -> None:
    source = two()
    source.read_batch(10)  # a's schema is known
    batch = source.decode_for("a", [b'{"id": 7}'])
    assert batch.source == "a" and ids(batch) == [7]
    with pytest.raises(ConfigurationError, match="the job reads a, b"):
        source.decode_for("c", [b"{}"])
    with pytest.raises(NotImplementedError):
        source.decode_records([b"{}"])


class FailingOnce(MemorySource):
    def __init__(self, name: str, data: list[dict[str, Any]]) -> None:
        super().__init__(name, data=[data])
        self.failures = 1

    def read_batch(self, max_records: int) -> SourceBatch | None:
        if self.failures:
            self.failures -= 1
            raise OSError(f"{self.name}: connection reset")
        return super().read_batch(max_records)


def test_a_failed_read_keeps_the_turn_so_its_retry_reads_the_same_source() -> None:
    source = MultiSource([MemorySource("a", data=[rows(0, 4)]), FailingOnce("b", rows(100, 104))])
    assert ids(source.read_batch(2)) == [0, 1]
    with pytest.raises(OSError, match="b: connection reset"):
        source.read_batch(2)
    assert source.name == "b"  # the error names the source it came from
    again = source.read_batch(2)
    assert again is not None and again.source == "b" and ids(again) == [100, 101]


def test_a_message_is_looked_up_in_the_source_that_knows_it() -> None:
    class Known(MemorySource):
        def message(self, ref: str) -> tuple[bytes, list[tuple[str, bytes]]] | None:
            return (b"key", []) if ref == "t/0/5" else None

    source = MultiSource([MemorySource("a"), Known("b")])
    assert source.message("t/0/5") == (b"key", [])
    assert source.message("t/0/6") is None
