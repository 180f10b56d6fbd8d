"""DeploymentContext, ErrorEntry, ErrorStats and ErrorMessageBuffer: the seed's semantics."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import FakeClock
from velostream.observability import error_tracker
from velostream.observability.error_tracker import (
    DEFAULT_BUFFER_CAPACITY,
    DeploymentContext,
    ErrorEntry,
    ErrorMessageBuffer,
    ErrorStats,
)

FULL = DeploymentContext.with_all(
    "prod-trading-cluster-1", "Trading Analytics Platform", "eu-west-1", "2.5.0"
)
FULL_PREFIX = (
    "node_id=prod-trading-cluster-1, node_name=Trading Analytics Platform, "
    "region=eu-west-1, version=2.5.0"
)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(1_700_000_000.7)  # entries keep whole seconds
    monkeypatch.setattr(error_tracker, "time", fake)
    return fake


def entries(buffer: ErrorMessageBuffer) -> list[tuple[str, int]]:
    return [(e.message, e.count) for e in buffer.get_messages()]


# --- DeploymentContext ----------------------------------------------------------


def test_empty_context_has_nothing() -> None:
    ctx = DeploymentContext()
    assert (ctx.node_id, ctx.node_name, ctx.region, ctx.version) == (None, None, None, None)
    assert not ctx.has_any()
    assert ctx.parts() == []


@pytest.mark.parametrize("field", ["node_id", "node_name", "region", "version"])
def test_any_single_field_counts_for_has_any(field: str) -> None:
    assert DeploymentContext(**{field: "x"}).has_any()


def test_with_all_sets_every_field() -> None:
    assert (
        DeploymentContext(
            node_id="prod-trading-cluster-1",
            node_name="Trading Analytics Platform",
            region="eu-west-1",
            version="2.5.0",
        )
        == FULL
    )
    assert FULL.has_any()


def test_context_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        FULL.node_id = "other"  # type: ignore[misc]


def test_parts_keep_the_seed_order_and_skip_unset_fields() -> None:
    assert DeploymentContext(version="1", node_id="n").parts() == ["node_id=n", "version=1"]
    assert FULL.parts() == FULL_PREFIX.split(", ")


def test_as_dict() -> None:
    assert DeploymentContext(region="r").as_dict() == {
        "node_id": None,
        "node_name": None,
        "region": "r",
        "version": None,
    }


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"NODE_ID": "id", "HOSTNAME": "host", "POD_NAME": "pod"}, "id"),
        ({"HOSTNAME": "host", "POD_NAME": "pod"}, "host"),
        ({"POD_NAME": "pod"}, "pod"),
        ({"NODE_ID": "id", "POD_NAME": "pod"}, "id"),
        ({}, None),
    ],
)
def test_node_id_priority_is_node_id_then_hostname_then_pod_name(
    env: dict[str, str], expected: str | None
) -> None:
    assert DeploymentContext.from_env(env=env).node_id == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"NODE_NAME": "name", "SERVICE_NAME": "svc"}, "name"),
        ({"SERVICE_NAME": "svc"}, "svc"),
        ({}, None),
    ],
)
def test_node_name_priority_is_node_name_then_service_name(
    env: dict[str, str], expected: str | None
) -> None:
    assert DeploymentContext.from_env(env=env).node_name == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AWS_REGION": "aws", "REGION": "reg", "DEPLOYMENT_REGION": "dep"}, "aws"),
        ({"REGION": "reg", "DEPLOYMENT_REGION": "dep"}, "reg"),
        ({"DEPLOYMENT_REGION": "dep"}, "dep"),
        ({"AWS_REGION": "aws", "DEPLOYMENT_REGION": "dep"}, "aws"),
        ({}, None),
    ],
)
def test_region_priority_is_aws_region_then_region_then_deployment_region(
    env: dict[str, str], expected: str | None
) -> None:
    assert DeploymentContext.from_env(env=env).region == expected


@pytest.mark.parametrize(
    ("version", "env", "expected"),
    [
        ("1.2.0", {"APP_VERSION": "9.0"}, "1.2.0"),
        (None, {"APP_VERSION": "9.0"}, "9.0"),
        ("", {"APP_VERSION": "9.0"}, "9.0"),
        (None, {}, None),
        ("", {}, None),
    ],
)
def test_version_is_the_jobs_else_app_version(
    version: str | None, env: dict[str, str], expected: str | None
) -> None:
    assert DeploymentContext.from_env(version, env=env).version == expected


def test_an_empty_variable_counts_as_unset() -> None:
    ctx = DeploymentContext.from_env(env={"NODE_ID": "", "HOSTNAME": "host", "AWS_REGION": ""})
    assert ctx.node_id == "host"
    assert ctx.region is None


def test_from_env_reads_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (
        "NODE_ID",
        "HOSTNAME",
        "POD_NAME",
        "NODE_NAME",
        "SERVICE_NAME",
        "AWS_REGION",
        "REGION",
        "DEPLOYMENT_REGION",
        "APP_VERSION",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POD_NAME", "pod-7")
    monkeypatch.setenv("SERVICE_NAME", "svc")
    monkeypatch.setenv("DEPLOYMENT_REGION", "ap-south-1")
    monkeypatch.setenv("APP_VERSION", "3.1")
    assert DeploymentContext.from_env() == DeploymentContext("pod-7", "svc", "ap-south-1", "3.1")


# --- ErrorEntry -------------------------------------------------------------------


def test_new_entry_has_count_one_and_a_whole_second_timestamp(clock: FakeClock) -> None:
    entry = ErrorEntry("Test")
    assert (entry.message, entry.count, entry.timestamp) == ("Test", 1, 1_700_000_000)
    assert entry.node_id is None
    assert entry.deployment_context is None


def test_entry_str_without_context() -> None:
    assert str(ErrorEntry("Test error")) == "Test error (count: 1)"


def test_entry_str_with_node_only_uses_the_node_fallback() -> None:
    entry = ErrorEntry.with_node("Test error", "prod-node-1")
    assert str(entry) == "[node=prod-node-1] Test error (count: 1)"


def test_entry_str_with_full_context() -> None:
    entry = ErrorEntry.with_deployment_context("Database error", FULL)
    entry.count = 3
    assert str(entry) == f"[{FULL_PREFIX}] Database error (count: 3)"


def test_entry_str_with_partial_context() -> None:
    ctx = DeploymentContext(node_id="prod-node", region="us-east-1")
    entry = ErrorEntry.with_deployment_context("Error", ctx)
    assert str(entry) == "[node_id=prod-node, region=us-east-1] Error (count: 1)"


def test_entry_str_with_an_empty_context_ignores_the_node_fallback() -> None:
    # The seed only falls back to `node=` when there is no context at all.
    entry = ErrorEntry.with_node("Error", "n1")
    entry.set_deployment_context(DeploymentContext())
    assert entry.node_id == "n1"
    assert str(entry) == "Error (count: 1)"


def test_with_deployment_context_copies_the_node_id() -> None:
    entry = ErrorEntry.with_deployment_context("Database error", FULL)
    assert entry.node_id == "prod-trading-cluster-1"
    assert entry.deployment_context == FULL
    assert ErrorEntry.with_deployment_context("e", DeploymentContext(region="r")).node_id is None


def test_set_deployment_context_without_node_keeps_the_entrys_node() -> None:
    entry = ErrorEntry.with_node("e", "old-node")
    entry.set_deployment_context(DeploymentContext(region="r"))
    assert entry.node_id == "old-node"
    assert str(entry) == "[region=r] e (count: 1)"


def test_entry_as_dict(clock: FakeClock) -> None:
    entry = ErrorEntry.with_deployment_context("m", DeploymentContext(node_id="n"))
    assert entry.as_dict() == {
        "message": "m",
        "timestamp": 1_700_000_000,
        "count": 1,
        "node_id": "n",
        "deployment_context": {"node_id": "n", "node_name": None, "region": None, "version": None},
    }


# --- ErrorStats -------------------------------------------------------------------


def test_sorted_by_frequency_most_common_first() -> None:
    stats = ErrorStats(4, 2, 2, {"Rare error": 1, "Common error": 3})
    assert stats.get_sorted_by_frequency() == [("Common error", 3), ("Rare error", 1)]


def test_top_errors_seed_example() -> None:
    buffer = ErrorMessageBuffer()
    for i in range(5):
        for _ in range(i + 1):
            buffer.add_error(f"Error {i}")
    top = buffer.get_stats().get_top_errors(3)
    assert top == [("Error 4", 5), ("Error 3", 4), ("Error 2", 3)]


@pytest.mark.parametrize(
    "counts",
    [
        {"b": 2, "a": 2, "c": 1, "d": 2},
        {"d": 2, "c": 1, "b": 2, "a": 2},
        {"c": 1, "a": 2, "d": 2, "b": 2},
    ],
)
def test_top_errors_ties_are_broken_by_message_whatever_the_insertion_order(
    counts: dict[str, int],
) -> None:
    stats = ErrorStats(7, 4, 4, counts)
    assert stats.get_top_errors(10) == [("a", 2), ("b", 2), ("d", 2), ("c", 1)]
    assert stats.get_top_errors(2) == [("a", 2), ("b", 2)]


@pytest.mark.parametrize("limit", [0, -1])
def test_top_errors_with_no_room_is_empty(limit: int) -> None:
    assert ErrorStats(1, 1, 1, {"a": 1}).get_top_errors(limit) == []


def test_stats_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ErrorStats(1, 1, 1, {}).total_errors = 2  # type: ignore[misc]


# --- ErrorMessageBuffer: basics ---------------------------------------------------


def test_new_buffer_is_empty_with_the_seed_capacity() -> None:
    buffer = ErrorMessageBuffer()
    assert buffer.capacity == DEFAULT_BUFFER_CAPACITY == 10
    assert buffer.buffer_size() == 0
    assert buffer.total_errors == 0
    assert not buffer.is_full()
    assert buffer.get_messages() == []
    assert buffer.get_deployment_context() is None


@pytest.mark.parametrize("capacity", [0, -3])
def test_capacity_must_be_positive(capacity: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ErrorMessageBuffer(capacity)


def test_single_error() -> None:
    buffer = ErrorMessageBuffer()
    assert buffer.add_error("Test error") is None
    assert buffer.buffer_size() == 1
    assert buffer.total_errors == 1
    assert buffer.get_message_count("Test error") == 1
    assert buffer.get_message_count("never seen") == 0


def test_duplicates_increment_one_entry() -> None:
    buffer = ErrorMessageBuffer()
    for _ in range(3):
        buffer.add_error("Timeout")
    assert entries(buffer) == [("Timeout", 3)]
    assert buffer.total_errors == 3
    assert buffer.get_message_count("Timeout") == 3


def test_mixed_duplicate_and_unique_errors() -> None:
    buffer = ErrorMessageBuffer()
    for message in ["Timeout", "Invalid query", "Timeout", "Refused", "Timeout", "Invalid query"]:
        buffer.add_error(message)
    assert buffer.total_errors == 6
    assert entries(buffer) == [("Timeout", 3), ("Invalid query", 2), ("Refused", 1)]
    assert buffer.get_message_counts() == {"Timeout": 3, "Invalid query": 2, "Refused": 1}


def test_get_stats() -> None:
    buffer = ErrorMessageBuffer()
    for message in ["Error A", "Error A", "Error B"]:
        buffer.add_error(message)
    assert buffer.get_stats() == ErrorStats(
        total_errors=3,
        unique_errors=2,
        buffered_messages=2,
        message_counts={"Error A": 2, "Error B": 1},
    )


def test_duplicate_increments_in_place_without_moving(clock: FakeClock) -> None:
    buffer = ErrorMessageBuffer()
    for message in ["a", "b", "c"]:
        buffer.add_error(message)
    first_seen = buffer.get_messages()[0].timestamp
    clock.now += 120
    buffer.add_error("a")
    messages = buffer.get_messages()
    assert [(e.message, e.count) for e in messages] == [("a", 2), ("b", 1), ("c", 1)]
    assert messages[0].timestamp == first_seen == 1_700_000_000
    assert messages[1].timestamp == first_seen


def test_a_new_entry_gets_the_time_it_was_first_seen(clock: FakeClock) -> None:
    buffer = ErrorMessageBuffer()
    buffer.add_error("a")
    clock.now += 5
    buffer.add_error("b")
    assert [e.timestamp for e in buffer.get_messages()] == [1_700_000_000, 1_700_000_005]


def test_get_messages_and_counts_are_copies() -> None:
    buffer = ErrorMessageBuffer()
    buffer.add_error("a")
    buffer.get_messages()[0].count = 99
    buffer.get_message_counts()["a"] = 99
    buffer.get_stats().message_counts["a"] = 99
    assert entries(buffer) == [("a", 1)]
    assert buffer.get_message_count("a") == 1


# --- ErrorMessageBuffer: eviction -------------------------------------------------


def test_buffer_keeps_the_last_ten_unique_messages() -> None:
    buffer = ErrorMessageBuffer()
    for i in range(15):
        buffer.add_error(f"Error {i}")
    assert buffer.buffer_size() == 10
    assert buffer.total_errors == 15
    assert [e.message for e in buffer.get_messages()] == [f"Error {i}" for i in range(5, 15)]
    assert buffer.get_message_count("Error 0") == 0
    assert buffer.get_message_count("Error 4") == 0
    assert buffer.get_message_count("Error 5") == 1
    assert sum(buffer.get_message_counts().values()) == 10


def test_add_error_returns_the_evicted_message() -> None:
    buffer = ErrorMessageBuffer(2)
    assert buffer.add_error("a") is None
    assert buffer.add_error("b") is None
    assert buffer.add_error("a") is None
    assert buffer.add_error("c") == "a"
    assert buffer.add_error("d") == "b"


def test_eviction_subtracts_the_evicted_entrys_count() -> None:
    buffer = ErrorMessageBuffer(3)
    for message in ["a", "a", "a", "b", "c", "b"]:
        buffer.add_error(message)
    assert buffer.get_message_counts() == {"a": 3, "b": 2, "c": 1}
    buffer.add_error("d")
    assert buffer.get_message_counts() == {"b": 2, "c": 1, "d": 1}
    assert buffer.get_message_count("a") == 0
    stats = buffer.get_stats()
    assert (stats.total_errors, stats.unique_errors, stats.buffered_messages) == (7, 3, 3)


def test_eviction_is_by_first_insertion_not_by_last_use() -> None:
    buffer = ErrorMessageBuffer(2)
    for message in ["a", "b", "a", "a"]:
        buffer.add_error(message)
    assert buffer.add_error("c") == "a"
    assert entries(buffer) == [("b", 1), ("c", 1)]


def test_a_reappearing_evicted_message_restarts_at_one(clock: FakeClock) -> None:
    buffer = ErrorMessageBuffer(2)
    for message in ["a", "a", "a", "b", "c"]:
        buffer.add_error(message)
    assert buffer.get_message_count("a") == 0
    clock.now += 60
    assert buffer.add_error("a") == "b"
    assert entries(buffer) == [("c", 1), ("a", 1)]
    assert buffer.get_message_count("a") == 1
    assert buffer.get_messages()[-1].timestamp == 1_700_000_060
    assert buffer.total_errors == 6


def test_is_full_at_capacity() -> None:
    buffer = ErrorMessageBuffer()
    for i in range(10):
        assert not buffer.is_full()
        buffer.add_error(f"Error {i}")
    assert buffer.is_full()
    buffer.add_error("Error 10")
    assert buffer.is_full()
    assert buffer.buffer_size() == 10


def test_large_and_special_messages_are_kept_verbatim() -> None:
    buffer = ErrorMessageBuffer()
    long_message = "A" * 1000
    special = [
        "Error: Connection failed\n at line 42",
        "Error: \"Quoted\" and 'nested' strings \\ backslash",
        "Error: Unicode émojis 🚀 supported",
    ]
    for message in [long_message, long_message, *special]:
        buffer.add_error(message)
    assert buffer.get_message_count(long_message) == 2
    assert [e.message for e in buffer.get_messages()] == [long_message, *special]


# --- ErrorMessageBuffer: context and reset ----------------------------------------


def test_reset_clears_messages_counts_and_total() -> None:
    buffer = ErrorMessageBuffer()
    buffer.add_error("Error")
    buffer.add_error("Error")
    buffer.reset()
    assert buffer.total_errors == 0
    assert buffer.buffer_size() == 0
    assert buffer.get_message_count("Error") == 0
    assert buffer.get_stats() == ErrorStats(0, 0, 0, {})
    assert buffer.format_for_report() == "No errors recorded"


def test_reset_keeps_the_deployment_context_and_node() -> None:
    buffer = ErrorMessageBuffer()
    buffer.set_deployment_context(FULL)
    buffer.add_error("before")
    buffer.reset()
    assert buffer.get_deployment_context() == FULL
    buffer.add_error("after")
    (entry,) = buffer.get_messages()
    assert entry.deployment_context == FULL
    assert entry.node_id == "prod-trading-cluster-1"
    assert buffer.format_for_report().startswith(f"=== Error Report [{FULL_PREFIX}] ===\n")


def test_new_entries_carry_the_buffers_context() -> None:
    buffer = ErrorMessageBuffer()
    buffer.set_deployment_context(FULL)
    buffer.add_error("Market data error")
    buffer.add_error("Order execution error")
    for entry in buffer.get_messages():
        assert entry.deployment_context == FULL
        assert str(entry).startswith(f"[{FULL_PREFIX}] ")


def test_entries_keep_the_context_they_were_created_with() -> None:
    buffer = ErrorMessageBuffer()
    buffer.set_deployment_context(DeploymentContext(version="1"))
    buffer.add_error("old")
    buffer.set_deployment_context(DeploymentContext(version="2"))
    buffer.add_error("old")
    buffer.add_error("new")
    assert [str(e) for e in buffer.get_messages()] == [
        "[version=1] old (count: 2)",
        "[version=2] new (count: 1)",
    ]


def test_an_explicit_context_attributes_a_new_entry() -> None:
    buffer = ErrorMessageBuffer()
    buffer.set_deployment_context(FULL)
    job_ctx = DeploymentContext(node_id="n2", version="7")
    buffer.add_error("job error", job_ctx)
    buffer.add_error("job error", FULL)  # a duplicate keeps its first attribution
    buffer.add_error("server error")
    first, second = buffer.get_messages()
    assert first.deployment_context == job_ctx
    assert first.count == 2
    assert second.deployment_context == FULL
    assert buffer.get_deployment_context() == FULL


def test_set_node_id_without_context() -> None:
    buffer = ErrorMessageBuffer()
    buffer.set_node_id("prod-trading-node-1")
    buffer.add_error("Market data error")
    (entry,) = buffer.get_messages()
    assert entry.node_id == "prod-trading-node-1"
    assert entry.deployment_context is None
    assert str(entry) == "[node=prod-trading-node-1] Market data error (count: 1)"


def test_set_node_id_updates_the_context() -> None:
    buffer = ErrorMessageBuffer()
    buffer.set_deployment_context(FULL)
    buffer.set_node_id("other-node")
    assert buffer.get_deployment_context() == dataclasses.replace(FULL, node_id="other-node")
    buffer.set_node_id(None)
    ctx = buffer.get_deployment_context()
    assert ctx is not None
    assert ctx.node_id is None
    assert ctx.region == "eu-west-1"


def test_set_deployment_context_without_node_keeps_the_node_id() -> None:
    buffer = ErrorMessageBuffer()
    buffer.set_node_id("n1")
    buffer.set_deployment_context(DeploymentContext(region="r"))
    buffer.add_error("e")
    (entry,) = buffer.get_messages()
    assert entry.node_id == "n1"
    assert str(entry) == "[region=r] e (count: 1)"


# --- format_for_report --------------------------------------------------------------


def test_report_when_empty() -> None:
    assert ErrorMessageBuffer().format_for_report() == "No errors recorded"
    with_context = ErrorMessageBuffer()
    with_context.set_deployment_context(FULL)
    assert with_context.format_for_report() == "No errors recorded"


def test_report_without_context() -> None:
    buffer = ErrorMessageBuffer()
    for message in ["Connection timeout", "Invalid query", "Connection timeout"]:
        buffer.add_error(message)
    assert buffer.format_for_report() == (
        "=== Error Report ===\n"
        "Total Errors: 3\n"
        "Unique Errors: 2\n"
        "Buffered Messages: 2\n"
        "\n"
        "Recent Errors (most recent first):\n"
        "================================\n"
        "1. Invalid query (count: 1)\n"
        "2. Connection timeout (count: 2)\n"
    )


def test_report_with_node_only() -> None:
    buffer = ErrorMessageBuffer()
    buffer.set_node_id("prod-trading-node-1")
    buffer.add_error("Market data error")
    buffer.add_error("Order execution failed")
    assert buffer.format_for_report() == (
        "=== Error Report [Node: prod-trading-node-1] ===\n"
        "Total Errors: 2\n"
        "Unique Errors: 2\n"
        "Buffered Messages: 2\n"
        "\n"
        "Recent Errors (most recent first):\n"
        "================================\n"
        "1. [node=prod-trading-node-1] Order execution failed (count: 1)\n"
        "2. [node=prod-trading-node-1] Market data error (count: 1)\n"
    )


def test_report_with_full_context() -> None:
    buffer = ErrorMessageBuffer()
    buffer.set_deployment_context(FULL)
    buffer.add_error("Connection timeout")
    buffer.add_error("Query timeout")
    buffer.add_error("Query timeout")
    assert buffer.format_for_report() == (
        f"=== Error Report [{FULL_PREFIX}] ===\n"
        "Total Errors: 3\n"
        "Unique Errors: 2\n"
        "Buffered Messages: 2\n"
        "\n"
        "Recent Errors (most recent first):\n"
        "================================\n"
        f"1. [{FULL_PREFIX}] Query timeout (count: 2)\n"
        f"2. [{FULL_PREFIX}] Connection timeout (count: 1)\n"
    )


def test_report_with_an_empty_context_has_the_plain_header() -> None:
    buffer = ErrorMessageBuffer()
    buffer.set_node_id("n1")
    buffer.set_deployment_context(DeploymentContext())
    buffer.add_error("e")
    assert buffer.format_for_report().startswith("=== Error Report ===\n")


def test_report_after_evictions_counts_every_error_and_lists_only_the_buffer() -> None:
    buffer = ErrorMessageBuffer(3)
    for message in ["a", "a", "b", "c", "d", "e"]:
        buffer.add_error(message)
    assert buffer.format_for_report() == (
        "=== Error Report ===\n"
        "Total Errors: 6\n"
        "Unique Errors: 3\n"
        "Buffered Messages: 3\n"
        "\n"
        "Recent Errors (most recent first):\n"
        "================================\n"
        "1. e (count: 1)\n"
        "2. d (count: 1)\n"
        "3. c (count: 1)\n"
    )


# --- thread safety ---------------------------------------------------------------------


def test_concurrent_adds_are_all_counted() -> None:
    buffer = ErrorMessageBuffer(8)
    alphabet = [f"message {i}" for i in range(8)]
    threads_n, per_thread = 8, 5_000
    barrier = threading.Barrier(threads_n)

    def work(offset: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            buffer.add_error(alphabet[(i + offset) % len(alphabet)])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = threads_n * per_thread
    assert buffer.total_errors == total
    assert buffer.get_message_counts() == dict.fromkeys(alphabet, total // len(alphabet))
    assert sum(e.count for e in buffer.get_messages()) == total


# --- the buffer against a reference model -------------------------------------------------


class BufferModel:
    """The seed's ErrorMessageBuffer, written from its Rust source as plainly as possible."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.messages: list[list[str | int]] = []  # [message, count], oldest first
        self.counts: dict[str, int] = {}
        self.total = 0

    def add(self, message: str) -> str | None:
        self.total += 1
        self.counts[message] = self.counts.get(message, 0) + 1
        for entry in self.messages:
            if entry[0] == message:
                entry[1] = int(entry[1]) + 1
                return None
        self.messages.append([message, 1])
        if len(self.messages) > self.capacity:
            removed_message, removed_count = self.messages.pop(0)
            assert isinstance(removed_message, str)
            remaining = self.counts[removed_message] - int(removed_count)
            if remaining > 0:
                self.counts[removed_message] = remaining
            else:
                del self.counts[removed_message]
            return removed_message
        return None

    def reset(self) -> None:
        self.messages.clear()
        self.counts.clear()
        self.total = 0


OPERATIONS = st.lists(
    st.one_of(st.sampled_from("abcdefg"), st.just(None)),  # None = reset
    max_size=80,
)


def check_against(buffer: ErrorMessageBuffer, model: BufferModel) -> None:
    assert entries(buffer) == [(m, c) for m, c in model.messages]
    assert buffer.get_message_counts() == model.counts
    assert buffer.total_errors == model.total
    assert buffer.buffer_size() == len(model.messages)
    assert buffer.is_full() == (len(model.messages) >= model.capacity)
    assert buffer.get_stats() == ErrorStats(
        model.total, len(model.counts), len(model.messages), model.counts
    )


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(min_value=1, max_value=5), operations=OPERATIONS)
def test_buffer_matches_the_reference_model(
    capacity: int, operations: Sequence[str | None]
) -> None:
    buffer = ErrorMessageBuffer(capacity)
    buffer.set_deployment_context(DeploymentContext(node_id="n"))
    model = BufferModel(capacity)
    for op in operations:
        if op is None:
            buffer.reset()
            model.reset()
        else:
            assert buffer.add_error(op) == model.add(op)
        check_against(buffer, model)
    assert buffer.get_deployment_context() == DeploymentContext(node_id="n")
    report = buffer.format_for_report()
    if model.messages:
        newest_first = reversed(model.messages)
        listed = [f"{n}. [node_id=n] {m} (count: {c})" for n, (m, c) in enumerate(newest_first, 1)]
        assert report.splitlines()[-len(listed) :] == listed
        assert f"Total Errors: {model.total}\n" in report
    else:
        assert report == "No errors recorded"
