"""KafkaSource over a scripted consumer: batches, positions, commits, rebalances."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from tests.unit.datasource.kafka.conftest import FakeConsumer, message
from velostream.datasource.kafka.codec import HEADERS_TYPE
from velostream.datasource.kafka.source import KafkaSource, parse_position
from velostream.datasource.traits import SourceBatch
from velostream.errors import BrokerConnectionError, ConfigurationError, ErrorKind, SourceError

MakeSource = Callable[..., KafkaSource]


def test_batch_has_values_system_columns_refs_and_position(
    make_source: MakeSource, consumer: FakeConsumer
) -> None:
    consumer.results = [
        [
            message(b'{"id": 1}', partition=0, offset=10, key=b"a", headers=[("h", b"1")]),
            message(b"oops", partition=1, offset=4, key=b"b"),
            message(b'{"id": 3}', partition=0, offset=11, timestamp=5),
        ]
    ]
    batch = make_source().read_batch(100)
    assert batch is not None
    assert batch.table.schema == pa.schema(
        [
            ("id", pa.int64()),
            ("_key", pa.string()),
            ("_partition", pa.int32()),
            ("_offset", pa.int64()),
            ("_timestamp", pa.timestamp("ms")),
            ("_headers", HEADERS_TYPE),
        ]
    )
    rows = batch.table.to_pylist()
    assert [(r["id"], r["_key"], r["_partition"], r["_offset"]) for r in rows] == [
        (1, "a", 0, 10),
        (3, None, 0, 11),
    ]
    assert rows[0]["_headers"] == [{"key": "h", "value": b"1"}]
    assert [batch.refs.ref(i) for i in range(2)] == ["t/0/10", "t/0/11"]
    assert batch.refs.raw(1) == b'{"id": 3}'
    assert [(b.raw, b.ref, b.kind) for b in batch.bad] == [(b"oops", "t/1/4", ErrorKind.PARSE)]
    assert batch.position == {"t-0": 12, "t-1": 5}
    assert batch.num_records == 3


def test_value_field_named_like_a_system_column_wins(
    make_source: MakeSource, consumer: FakeConsumer
) -> None:
    consumer.results = [[message(b'{"_key": "inside", "x": 1}', key=b"outside")]]
    batch = make_source().read_batch(10)
    assert batch is not None and batch.table.column("_key").to_pylist() == ["inside"]


def test_nothing_new_is_an_empty_batch_with_the_position(
    make_source: MakeSource, consumer: FakeConsumer
) -> None:
    source = make_source()
    consumer.results = [[message(b'{"a": 1}', offset=3)], []]
    source.read_batch(10)
    empty = source.read_batch(10)
    assert empty is not None and empty.num_records == 0
    assert empty.table.column_names[0] == "a"
    assert empty.position == {"t-0": 4}


def test_client_errors_are_raised_when_nothing_arrives(
    make_source: MakeSource, consumer: FakeConsumer
) -> None:
    source = make_source()
    source._errors.callback()(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    consumer.results = [[]]
    with pytest.raises(BrokerConnectionError, match="brokers are down") as info:
        source.read_batch(10)
    assert info.value.stage == "source"
    # The source stays usable: the next read carries on.
    consumer.results = [[message(b'{"a": 1}')]]
    batch = source.read_batch(10)
    assert batch is not None and batch.num_records == 1


def test_error_events_in_a_consume_are_kept_apart_from_data(
    make_source: MakeSource, consumer: FakeConsumer
) -> None:
    source = make_source()
    auth = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "not allowed")
    consumer.results = [[message(None, error=auth)]]
    with pytest.raises(ConfigurationError, match="not allowed"):
        source.read_batch(10)


def test_commit_is_synchronous_and_only_for_owned_partitions(
    make_source: MakeSource, consumer: FakeConsumer
) -> None:
    source = make_source(partitions={0})
    source.commit({"t-0": 7, "t-1": 9, "other-0": 3})
    assert consumer.commits == [{0: 7}]
    source.commit({"t-0": 7})  # already acknowledged: nothing to send
    assert consumer.commits == [{0: 7}]


def test_a_commit_refused_during_a_rebalance_waits_for_the_revocation(
    make_source: MakeSource, consumer: FakeConsumer
) -> None:
    source = make_source()
    consumer.commit_error = KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
    source.commit({"t-0": 5, "t-1": 6})
    assert consumer.commits == []
    consumer.commit_error = None
    source._on_revoke(consumer, [TopicPartition("t", 0), TopicPartition("t", 1)])  # type: ignore[arg-type]
    assert consumer.commits == [{0: 5, 1: 6}]
    assert source.assignment == set()


def test_other_commit_failures_are_raised(make_source: MakeSource, consumer: FakeConsumer) -> None:
    source = make_source()
    consumer.commit_error = KafkaException(KafkaError(KafkaError._TRANSPORT, "gone"))
    with pytest.raises(BrokerConnectionError, match="gone") as info:
        source.commit({"t-0": 5})
    assert info.value.stage == "commit"


def _refs(batch: SourceBatch | None) -> list[str]:
    assert batch is not None
    return [batch.refs.ref(i) for i in range(batch.table.num_rows)]


def _rebalance(
    source: KafkaSource, consumer: FakeConsumer, fetched: list[Any]
) -> Callable[[], list[Any]]:
    """A `consume` call during which partitions 0 and 1 are revoked and 0 alone comes
    back (fetched again from its committed offset); it returns `fetched`."""

    def rebalance() -> list[Any]:
        source._on_revoke(consumer, [TopicPartition("t", 0), TopicPartition("t", 1)])  # type: ignore[arg-type]
        source._on_assign(consumer, [TopicPartition("t", 0)])  # type: ignore[arg-type]
        return fetched

    return rebalance


def test_messages_of_partitions_revoked_in_the_same_consume_are_dropped(
    make_source: MakeSource, consumer: FakeConsumer
) -> None:
    source = make_source()
    source.commit({"t-0": 10, "t-1": 20})

    # Fetched before the revocation, then partition 0 again from its committed offset.
    fetched = [
        message(b'{"a": 1}', partition=0, offset=10),
        message(b'{"a": 2}', partition=1, offset=20),
        message(b'{"a": 1}', partition=0, offset=11),
        message(b'{"a": 1}', partition=0, offset=10),
        message(b'{"a": 1}', partition=0, offset=11),
    ]
    consumer.results = [_rebalance(source, consumer, fetched)]
    batch = source.read_batch(10)
    assert _refs(batch) == ["t/0/10", "t/0/11"]
    assert batch is not None and batch.position == {"t-0": 12}


def test_messages_read_before_a_rebalance_in_a_later_consume_are_not_read_twice(
    make_source: MakeSource, consumer: FakeConsumer
) -> None:
    """A read is several `consume` calls. Partition 0's messages came in the first; it
    was revoked and given back in the second, and the consumer then fetches it again
    from its committed offset: the first call's messages of it are left out, or they
    would be processed twice (once in this batch, once when they come again)."""
    source = make_source()
    source.commit({"t-0": 10, "t-1": 20})

    consumer.results = [
        [
            message(b'{"a": 1}', partition=0, offset=10),
            message(b'{"a": 2}', partition=1, offset=20),
        ],
        [message(b'{"a": 1}', partition=0, offset=11)],
        _rebalance(source, consumer, []),
    ]
    assert _refs(source.read_batch(100)) == []
    consumer.results = [[message(b'{"a": 1}', partition=0, offset=o) for o in (10, 11, 12)]]
    again = source.read_batch(100)
    assert _refs(again) == ["t/0/10", "t/0/11", "t/0/12"]
    assert again is not None and again.position == {"t-0": 13}


def test_messages_of_a_partition_given_back_are_kept_from_the_rebalance_on(
    make_source: MakeSource, consumer: FakeConsumer
) -> None:
    source = make_source()
    source.commit({"t-0": 10, "t-1": 20})

    consumer.results = [
        [
            message(b'{"a": 1}', partition=0, offset=10),
            message(b'{"a": 2}', partition=1, offset=20),
        ],
        _rebalance(source, consumer, [message(b'{"a": 1}', partition=0, offset=10)]),
        [message(b'{"a": 1}', partition=0, offset=11)],
    ]
    batch = source.read_batch(100)
    assert _refs(batch) == ["t/0/10", "t/0/11"]
    assert batch is not None and batch.position == {"t-0": 12}


def test_seek_rewinds_what_was_read_since_the_position(
    make_source: MakeSource, consumer: FakeConsumer
) -> None:
    source = make_source()
    consumer.results = [[message(b'{"a": 1}', partition=0, offset=i) for i in range(5, 8)]]
    source.read_batch(10)
    consumer.results = [[message(b'{"a": 1}', partition=1, offset=i) for i in range(0, 3)]]
    source.read_batch(10)
    source.seek({"t-0": 6})  # partition 1 was not read at that position: back to its start
    assert sorted(consumer.seeks) == [(0, 6), (1, 0)]
    assert source.position == {"t-0": 6, "t-1": 0}
    consumer.seeks.clear()
    source.commit({"t-0": 6, "t-1": 0})
    consumer.results = [[message(b'{"a": 1}', partition=0, offset=6)]]
    source.read_batch(10)
    source.seek(None)  # the last commit
    assert consumer.seeks == [(0, 6)]


def test_dead_letter_lookup_and_replay_decoding(
    make_source: MakeSource, consumer: FakeConsumer
) -> None:
    source = make_source()
    consumer.results = [[message(b"bad", offset=3, key=b"k", headers=[("h", b"v")])]]
    source.read_batch(10)
    assert source.message("t/0/3") == (b"k", [("h", b"v")])
    assert source.message("t/0/4") is None and source.message("x/0/3") is None
    replay = source.decode_records([b'{"a": 2}', b"nope"])
    assert replay.table.column("a").to_pylist() == [2]
    assert [b.ref for b in replay.bad] == ["replay:2"]


def test_close_closes_the_consumer(make_source: MakeSource, consumer: FakeConsumer) -> None:
    make_source().close()
    assert consumer.closed


def test_positions_parse_only_their_topic() -> None:
    assert parse_position({"my-topic-3": 9, "other-1": 2}, "my-topic") == {3: 9}
    assert parse_position(None, "t") == {}
    with pytest.raises(SourceError):
        parse_position([1, 2], "t")


def test_commits_rewinds_and_rebalances_are_logged_at_debug(
    make_source: MakeSource, consumer: FakeConsumer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(5, logger="velostream.kafka")  # 5: TRACE, below debug
    source = make_source()
    consumer.results = [[message(b'{"a": 1}', partition=0, offset=3)]]
    source.read_batch(10)
    source.commit({"t-0": 4, "t-1": 6})
    source.seek({"t-0": 2})
    source._on_revoke(consumer, [TopicPartition("t", 1)])  # type: ignore[arg-type]
    source._on_assign(consumer, [TopicPartition("t", 1)])  # type: ignore[arg-type]
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (5, "kafka 'src': consumed 1 messages") in lines
    for line in (
        "kafka 'src': committed {0: 4, 1: 6}",
        "kafka 'src': partition 0 rewound to 2",
        "kafka 'src': assignment after revocation [0]",
        "kafka 'src': assignment now [0, 1]",
    ):
        assert (logging.DEBUG, line) in lines, lines


def _values(n: int, start: int = 0) -> list[object]:
    return [message(b'{"id": %d}' % i, offset=i) for i in range(start, start + n)]


def test_a_read_gathers_while_messages_come_and_goes_on_after_a_quiet_gap(
    make_source: MakeSource, consumer: FakeConsumer
) -> None:
    """As a Kafka poll: what came, once a gap of `fetch.wait.max.ms` brought nothing."""
    consumer.results = [_values(3), _values(2, 3), [], _values(4, 5)]
    source = make_source(**{"polling_interval": "30s", "fetch.wait.max.ms": "40"})
    batch = source.read_batch(100)
    assert batch is not None and batch.table.column("id").to_pylist() == [0, 1, 2, 3, 4]
    assert consumer.calls == [(100, 0.04), (97, 0.04), (95, 0.04)]  # no wait for 30 s
    batch = source.read_batch(100)  # the next burst is the next batch
    assert batch is not None and batch.table.column("id").to_pylist() == [5, 6, 7, 8]


def test_a_full_batch_goes_on_at_once(make_source: MakeSource, consumer: FakeConsumer) -> None:
    consumer.results = [_values(3), _values(2, 3), _values(1, 5)]
    batch = make_source().read_batch(5)
    assert batch is not None and batch.num_records == 5
    assert consumer.calls == [(5, 0.1), (2, 0.1)]  # the default gap: fetch.wait.max.ms 100


def test_nothing_new_waits_the_polling_interval_and_a_wake_ends_the_wait(
    make_source: MakeSource, consumer: FakeConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer.use_clock(monkeypatch)  # a sleep on a busy machine lasts longer than asked
    source = make_source(polling_interval="150ms")
    batch = source.read_batch(10)  # an empty topic: gaps until the interval is over
    assert batch is not None and batch.num_records == 0
    assert [t for _, t in consumer.calls] == pytest.approx([0.1, 0.05])  # the default gap

    consumer.calls.clear()
    source = make_source(polling_interval="1h")
    source.wake()  # a stop, asked while the read waits
    batch = source.read_batch(10)
    assert batch is not None and batch.num_records == 0
    assert len(consumer.calls) == 1  # one gap, not an hour


def test_the_gap_is_never_longer_than_the_polling_interval(
    make_source: MakeSource, consumer: FakeConsumer
) -> None:
    source = make_source(**{"polling_interval": "20ms", "fetch.wait.max.ms": "500"})
    assert source.config.quiet_gap == pytest.approx(0.02)
