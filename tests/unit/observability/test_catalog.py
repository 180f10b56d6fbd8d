"""ErrorCatalog: normalisation, fingerprints, grouping, the LRU bound and filters."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velostream.errors import ErrorKind, Severity, Stage
from velostream.observability import catalog as catalog_module
from velostream.observability.catalog import (
    DEFAULT_CATALOG_CAPACITY,
    ErrorCatalog,
    ErrorGroup,
    fingerprint,
    normalize_message,
)
from velostream.observability.error_tracker import DeploymentContext

CTX = DeploymentContext.with_all("node-1", "Node One", "eu-west-1", "1.0")


def record(
    catalog: ErrorCatalog,
    message: str,
    *,
    job: str = "job",
    stage: Stage = Stage.PROCESS,
    kind: ErrorKind = ErrorKind.EXECUTION,
    now: float = 1000.0,
) -> str:
    return catalog.record(job, stage, kind, message, now=now).fingerprint


# --- normalisation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "normalized"),
    [
        # numbers: integers, decimals, signs, exponents, digits glued to a name
        ("row 17 failed", "row <num> failed"),
        ("value 3.14 and -2 and 1e5 and +7", "value <num> and <num> and <num> and <num>"),
        ("x=5,y=6", "x=<num>,y=<num>"),
        ("partition7 offset 42", "partition<num> offset <num>"),
        ("timestamp 1700000000", "timestamp <num>"),
        # UUIDs, either case
        ("id 550e8400-e29b-41d4-a716-446655440000 gone", "id <uuid> gone"),
        ("id 550E8400-E29B-41D4-A716-446655440000 gone", "id <uuid> gone"),
        # hex: 0x-prefixed, or long runs with a digit
        ("addr 0xDEADBEEF bad", "addr <hex> bad"),
        ("hash deadbeefcafe1234 x", "hash <hex> x"),
        ("hash deadbeef x", "hash deadbeef x"),  # a short all-letter word stays a word
        # IP addresses, with and without ports
        ("connect 10.0.0.1:9092 refused", "connect <ip> refused"),
        ("host 192.168.1.20 down", "host <ip> down"),
        ("fe80::1 unreachable", "<ip> unreachable"),
        ("2001:db8::ff00:42:8329 down", "<ip> down"),
        ("broker [::1]:9092 down", "broker <ip> down"),
        # quoted literals, single or double, with escapes
        ("column 'price' not found", "column <str> not found"),
        ('column "price" not found', "column <str> not found"),
        ("bad 'it\\'s' here", "bad <str> here"),
        ("in 'row 42 of 550e8400-e29b-41d4-a716-446655440000'", "in <str>"),
        # timestamps and dates
        ("at 2024-01-02T03:04:05Z bad", "at <ts> bad"),
        ("at 2024-01-02 03:04:05.123+01:00 bad", "at <ts> bad"),
        ("on 2024-01-02 bad", "on <date> bad"),
        # first line only, trimmed
        ("line one 17\nline two 99", "line one <num>"),
        ("  padded 5  \n", "padded <num>"),
        ("plain words stay", "plain words stay"),
        ("café 42 ünïcødé", "café <num> ünïcødé"),
        ("", ""),
    ],
)
def test_normalize_message(message: str, normalized: str) -> None:
    assert normalize_message(message) == normalized


@settings(max_examples=200, deadline=None)
@given(
    a=st.integers(min_value=-(10**11) + 1, max_value=10**11 - 1),
    b=st.floats(min_value=-1e10, max_value=1e10).map(lambda x: round(x, 3)),
    c=st.uuids(),
    d=st.ip_addresses(v=4),
    e=st.text(alphabet=st.characters(blacklist_characters="'\\\n\r"), max_size=20),
    tail=st.text(max_size=30),
)
def test_variable_parts_do_not_change_the_fingerprint(
    a: int, b: float, c: object, d: object, e: str, tail: str
) -> None:
    message = f"row {a} value {b} id {c} from {d} column '{e}' failed\n{tail}"
    template = "row <num> value <num> id <uuid> from <ip> column <str> failed"
    assert normalize_message(message) == template
    assert fingerprint(ErrorKind.PARSE, Stage.DESERIALIZE, normalize_message(message)) == (
        fingerprint(ErrorKind.PARSE, Stage.DESERIALIZE, template)
    )


@given(st.text())
def test_normalized_text_is_one_trimmed_line(message: str) -> None:
    normalized = normalize_message(message)
    assert "\n" not in normalized
    assert normalized == normalized.strip()


# Grouping gaps: each pair should be one group, and is not (see the report).
def test_numbers_with_a_unit_suffix_are_normalised() -> None:
    assert normalize_message("timed out after 15ms") == normalize_message("timed out after 250ms")


def test_quoted_literal_after_an_apostrophe_is_normalised() -> None:
    assert normalize_message("can't open file 'a.csv'") == normalize_message(
        "can't open file 'b.csv'"
    )


@pytest.mark.parametrize(
    ("message", "same_group_as"),
    [
        ("offset 1700000000000 failed", "offset 42 failed"),
        ("value 0.30000000000000004 out of range", "value 0.5 out of range"),
    ],
)
def test_long_decimal_numbers_are_numbers(message: str, same_group_as: str) -> None:
    assert normalize_message(message) == normalize_message(same_group_as)


# --- fingerprints ---------------------------------------------------------------------


def test_fingerprint_is_stable_across_processes_and_releases() -> None:
    # Dashboards, DLQ records and alerts refer to fingerprints: they must not drift.
    assert fingerprint(ErrorKind.PARSE, Stage.DESERIALIZE, "row <num> failed") == (
        "7e4c8e74c475a8d9"
    )
    assert fingerprint("ParseError", "deserialize", "row <num> failed") == "7e4c8e74c475a8d9"


def test_fingerprint_depends_on_kind_stage_and_text() -> None:
    base = fingerprint(ErrorKind.PARSE, Stage.DESERIALIZE, "m")
    assert fingerprint(ErrorKind.TYPE, Stage.DESERIALIZE, "m") != base
    assert fingerprint(ErrorKind.PARSE, Stage.PROCESS, "m") != base
    assert fingerprint(ErrorKind.PARSE, Stage.DESERIALIZE, "n") != base


def test_fingerprint_of_matches_record() -> None:
    catalog = ErrorCatalog()
    fp, normalized = catalog.fingerprint_of(ErrorKind.IO, Stage.SINK, "write 3 failed")
    assert normalized == "write <num> failed"
    assert fp == fingerprint(ErrorKind.IO, Stage.SINK, normalized)
    assert catalog.record("j", Stage.SINK, ErrorKind.IO, "write 9 failed").fingerprint == fp


def test_a_repeated_message_is_normalised_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real: Callable[[str], str] = catalog_module.normalize_message

    def counting(message: str) -> str:
        calls.append(message)
        return real(message)

    monkeypatch.setattr(catalog_module, "normalize_message", counting)
    catalog = ErrorCatalog()
    for _ in range(100):
        record(catalog, "row 17 failed")
        catalog.fingerprint_of(ErrorKind.EXECUTION, Stage.PROCESS, "row 17 failed")
    assert calls == ["row 17 failed"]
    record(catalog, "row 18 failed")
    assert calls == ["row 17 failed", "row 18 failed"]


# --- grouping ---------------------------------------------------------------------------


def test_a_new_group_records_everything() -> None:
    catalog = ErrorCatalog()
    outcome = catalog.record(
        "orders",
        Stage.DESERIALIZE,
        ErrorKind.PARSE,
        "bad line 17",
        context=CTX,
        record_ref="orders.csv:18",
        now=1000.0,
    )
    assert outcome.new_group
    assert not outcome.evicted
    group = catalog.get("orders", outcome.fingerprint)
    assert group is not None
    assert group.fingerprint == outcome.fingerprint
    assert (group.job, group.stage, group.kind) == ("orders", Stage.DESERIALIZE, ErrorKind.PARSE)
    assert group.severity is Severity.USER
    assert group.normalized == "bad line <num>"
    assert group.sample_message == "bad line 17"
    assert (group.count, group.first_seen, group.last_seen) == (1, 1000.0, 1000.0)
    assert group.deployment_context == CTX
    assert group.last_record_ref == "orders.csv:18"
    assert len(catalog) == 1
    assert catalog.groups_created == 1


def test_messages_differing_only_in_variables_are_one_group() -> None:
    catalog = ErrorCatalog()
    first = catalog.record(
        "j", Stage.SINK, ErrorKind.IO, "write 1 to 10.0.0.1 failed", record_ref="p:1", now=10.0
    )
    second = catalog.record("j", Stage.SINK, ErrorKind.IO, "write 2 to 10.0.0.2 failed", now=20.0)
    assert first.fingerprint == second.fingerprint
    assert not second.new_group
    (group,) = catalog.groups()
    assert group.count == 2
    assert (group.first_seen, group.last_seen) == (10.0, 20.0)
    assert group.sample_message == "write 2 to 10.0.0.2 failed"  # the latest sample
    assert group.last_record_ref == "p:1"  # kept when the repeat has none
    assert group.severity is Severity.SYSTEM
    catalog.record("j", Stage.SINK, ErrorKind.IO, "write 3 to 10.0.0.3 failed", record_ref="p:3")
    assert catalog.groups()[0].last_record_ref == "p:3"


def test_a_repeat_updates_the_context_only_when_given() -> None:
    catalog = ErrorCatalog()
    fp = record(catalog, "e")
    catalog.record("job", Stage.PROCESS, ErrorKind.EXECUTION, "e", context=CTX)
    catalog.record("job", Stage.PROCESS, ErrorKind.EXECUTION, "e")
    group = catalog.get("job", fp)
    assert group is not None
    assert group.deployment_context == CTX
    assert group.count == 3


def test_severity_defaults_from_the_kind_and_can_be_overridden() -> None:
    catalog = ErrorCatalog()
    catalog.record("j", Stage.SOURCE, ErrorKind.CONNECTION, "down", severity=Severity.USER)
    catalog.record("j", Stage.PROCESS, ErrorKind.TYPE, "bad type")
    by_kind = {g.kind: g.severity for g in catalog.groups()}
    assert by_kind == {ErrorKind.CONNECTION: Severity.USER, ErrorKind.TYPE: Severity.USER}
    catalog.record("j", Stage.SOURCE, ErrorKind.TIMEOUT, "slow")
    assert catalog.groups()[0].severity is Severity.SYSTEM


def test_stage_kind_and_job_each_separate_groups() -> None:
    catalog = ErrorCatalog()
    base = record(catalog, "boom 1")
    assert record(catalog, "boom 2", stage=Stage.SINK) != base
    assert record(catalog, "boom 3", kind=ErrorKind.TYPE) != base
    # The same fingerprint in another job is another group.
    assert record(catalog, "boom 4", job="other") == base
    assert len(catalog) == 4
    assert {(g.job, g.count) for g in catalog.groups() if g.fingerprint == base} == {
        ("job", 1),
        ("other", 1),
    }


def test_the_sample_message_is_capped() -> None:
    catalog = ErrorCatalog()
    fp = record(catalog, "x" * 5000)
    group = catalog.get("job", fp)
    assert group is not None
    assert group.sample_message == "x" * 2000


# --- the bound -------------------------------------------------------------------------------


def test_default_capacity() -> None:
    assert ErrorCatalog().capacity == DEFAULT_CATALOG_CAPACITY == 1000


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_must_be_positive(capacity: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ErrorCatalog(capacity)


def test_least_recently_seen_group_is_evicted_and_counted() -> None:
    catalog = ErrorCatalog(2)
    a = record(catalog, "error a")
    b = record(catalog, "error b")
    record(catalog, "error a")  # a is now the most recently seen
    outcome = catalog.record("job", Stage.PROCESS, ErrorKind.EXECUTION, "error c")
    assert outcome.new_group
    assert outcome.evicted
    assert catalog.get("job", b) is None
    assert catalog.get("job", a) is not None
    assert len(catalog) == 2
    assert catalog.evictions == 1
    assert catalog.groups_created == 3


def test_an_evicted_group_comes_back_as_a_new_group() -> None:
    catalog = ErrorCatalog(1)
    for _ in range(3):
        record(catalog, "error a")
    record(catalog, "error b")
    outcome = catalog.record("job", Stage.PROCESS, ErrorKind.EXECUTION, "error a")
    assert outcome.new_group
    assert catalog.groups()[0].count == 1
    assert catalog.evictions == 2


def test_many_groups_never_exceed_the_bound() -> None:
    catalog = ErrorCatalog(50)
    words = [f"{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}{chr(97 + i // 676)}" for i in range(5000)]
    for word in words:
        record(catalog, f"unknown column {word}")
    assert len(catalog) == 50
    assert catalog.evictions == 4950
    assert catalog.groups_created == 5000


# --- reading ----------------------------------------------------------------------------------


@pytest.fixture
def filled() -> ErrorCatalog:
    catalog = ErrorCatalog()
    record(catalog, "a", job="orders", stage=Stage.SOURCE, now=10.0)
    record(catalog, "b", job="orders", stage=Stage.SINK, now=20.0)
    record(catalog, "c", job="trades", stage=Stage.SINK, now=30.0)
    record(catalog, "d", job="trades", stage=Stage.PROCESS, now=40.0)
    return catalog


def messages(groups: Sequence[ErrorGroup]) -> list[str]:
    return [g.sample_message for g in groups]


def test_groups_most_recently_seen_first(filled: ErrorCatalog) -> None:
    assert messages(filled.groups()) == ["d", "c", "b", "a"]
    record(filled, "a", job="orders", stage=Stage.SOURCE, now=50.0)
    assert messages(filled.groups()) == ["a", "d", "c", "b"]


def test_groups_filters(filled: ErrorCatalog) -> None:
    assert messages(filled.groups(job="orders")) == ["b", "a"]
    assert messages(filled.groups(stage=Stage.SINK)) == ["c", "b"]
    assert messages(filled.groups(stage="sink")) == ["c", "b"]
    assert messages(filled.groups(job="trades", stage="sink")) == ["c"]
    assert messages(filled.groups(since=25.0)) == ["d", "c"]
    assert messages(filled.groups(limit=3)) == ["d", "c", "b"]
    assert filled.groups(limit=0) == []
    assert filled.groups(limit=-5) == []
    assert filled.groups(job="nobody") == []


def test_groups_after_a_sequence_number(filled: ErrorCatalog) -> None:
    cursor = max(g.seq for g in filled.groups())
    assert filled.groups(after_seq=cursor) == []
    record(filled, "b", job="orders", stage=Stage.SINK)
    record(filled, "e", job="new")
    assert messages(filled.groups(after_seq=cursor)) == ["e", "b"]


def test_groups_are_snapshots(filled: ErrorCatalog) -> None:
    group = filled.groups()[0]
    group.count = 1000
    assert filled.groups()[0].count == 1


def test_remove_job_forgets_only_that_job(filled: ErrorCatalog) -> None:
    assert filled.remove_job("orders") == 2
    assert messages(filled.groups()) == ["d", "c"]
    assert filled.remove_job("orders") == 0
    assert filled.evictions == 0


def test_reset_forgets_every_group(filled: ErrorCatalog) -> None:
    filled.reset()
    assert len(filled) == 0
    assert filled.groups() == []


def test_group_as_dict() -> None:
    catalog = ErrorCatalog()
    fp = catalog.record(
        "j", Stage.SINK, ErrorKind.IO, "disk 3 full", context=CTX, record_ref="r", now=5.0
    ).fingerprint
    group = catalog.get("j", fp)
    assert group is not None
    assert group.as_dict() == {
        "fingerprint": fp,
        "job": "j",
        "stage": "sink",
        "kind": "IOError",
        "severity": "system",
        "message": "disk 3 full",
        "normalized": "disk <num> full",
        "count": 1,
        "first_seen": 5.0,
        "last_seen": 5.0,
        "node_id": "node-1",
        "node_name": "Node One",
        "region": "eu-west-1",
        "version": "1.0",
        "last_record_ref": "r",
        "seq": group.seq,
    }


def test_concurrent_records_are_all_counted() -> None:
    catalog = ErrorCatalog()
    threads_n, per_thread = 8, 3_000
    barrier = threading.Barrier(threads_n)

    def work(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            record(catalog, f"row {i} failed in step {i % 4}", job=f"job-{t % 2}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    groups = catalog.groups()
    assert len(groups) == 2  # digits normalise away: one group per job
    assert {g.job: g.count for g in groups} == {
        "job-0": threads_n // 2 * per_thread,
        "job-1": threads_n // 2 * per_thread,
    }


# --- property: the bound and the LRU order against a model -----------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["j1", "j2"]), st.sampled_from(list("abcdefgh"))),
        st.tuples(st.sampled_from(["j1", "j2"]), st.none()),  # remove_job
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(min_value=1, max_value=5), operations=OPS)
def test_catalog_never_exceeds_its_bound(
    capacity: int, operations: Sequence[tuple[str, str | None]]
) -> None:
    catalog = ErrorCatalog(capacity)
    model: OrderedDict[tuple[str, str], int] = OrderedDict()
    evictions = 0
    for job, word in operations:
        if word is None:
            removed = [k for k in model if k[0] == job]
            for key in removed:
                del model[key]
            assert catalog.remove_job(job) == len(removed)
        else:
            message = f"error {word} at row 1"
            fp = catalog.record(job, Stage.PROCESS, ErrorKind.EXECUTION, message).fingerprint
            key = (job, fp)
            model[key] = model.pop(key, 0) + 1
            if len(model) > capacity:
                model.popitem(last=False)
                evictions += 1
        assert len(catalog) <= capacity
        assert [((g.job, g.fingerprint), g.count) for g in catalog.groups()] == list(
            reversed(model.items())
        )
        assert catalog.evictions == evictions
