"""Job state machine, failure policy, checkpoints and the file dead-letter queue."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from velostream.datasource.traits import BadRecord
from velostream.errors import DeadLetterError, ErrorKind, JobStateError, Stage
from velostream.observability.error_tracker import DeploymentContext
from velostream.server.checkpoint import Checkpoint, CheckpointStore
from velostream.server.jobs import JobState, StateMachine
from velostream.server.processors.dlq import DeadLetter, FileDeadLetterQueue, dead_letter
from velostream.server.processors.failure import MAX_BACKOFF_SECONDS, FailurePolicy
from velostream.sql.model import FailureStrategy

LEGAL = [
    (JobState.STARTING, JobState.RUNNING),
    (JobState.STARTING, JobState.FAILED),
    (JobState.STARTING, JobState.STOPPED),
    (JobState.RUNNING, JobState.PAUSED),
    (JobState.RUNNING, JobState.COMPLETED),
    (JobState.RUNNING, JobState.STOPPED),
    (JobState.RUNNING, JobState.FAILED),
    (JobState.PAUSED, JobState.RUNNING),
    (JobState.PAUSED, JobState.STOPPED),
    (JobState.PAUSED, JobState.FAILED),
    (JobState.COMPLETED, JobState.STARTING),
    (JobState.STOPPED, JobState.STARTING),
    (JobState.FAILED, JobState.STARTING),
]


def _machine_in(state: JobState) -> StateMachine:
    machine = StateMachine("j")
    path = {
        JobState.STARTING: [],
        JobState.RUNNING: [JobState.RUNNING],
        JobState.PAUSED: [JobState.RUNNING, JobState.PAUSED],
        JobState.COMPLETED: [JobState.RUNNING, JobState.COMPLETED],
        JobState.STOPPED: [JobState.STOPPED],
        JobState.FAILED: [JobState.FAILED],
    }[state]
    for step in path:
        machine.move(step)
    return machine


@pytest.mark.parametrize(("start", "target"), LEGAL)
def test_legal_transitions_are_recorded_with_time_and_reason(
    start: JobState, target: JobState
) -> None:
    machine = _machine_in(start)
    change = machine.move(target, "because")
    assert machine.state == target
    assert machine.reason == "because"
    assert change.at >= machine.history[0].at


@pytest.mark.parametrize(
    ("start", "target"),
    [(s, t) for s in JobState for t in JobState if (s, t) not in LEGAL],
)
def test_illegal_transitions_name_both_states(start: JobState, target: JobState) -> None:
    machine = _machine_in(start)
    with pytest.raises(JobStateError, match=f"cannot go from {start} to {target}"):
        machine.move(target)
    assert machine.state == start


def test_backoff_doubles_from_the_initial_delay_and_is_capped() -> None:
    policy = FailurePolicy(
        strategy=FailureStrategy.RETRY_WITH_BACKOFF, max_retries=20, retry_backoff_ms=500
    )
    assert [policy.backoff_seconds(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert policy.backoff_seconds(20) == MAX_BACKOFF_SECONDS
    assert policy.retries and not policy.dead_letters and not policy.skips_bad_records


@pytest.mark.parametrize(
    ("strategy", "skips", "dlq"),
    [
        (FailureStrategy.LOG_AND_CONTINUE, True, False),
        (FailureStrategy.SEND_TO_DLQ, True, True),
        (FailureStrategy.FAIL_BATCH, False, False),
        (FailureStrategy.RETRY_WITH_BACKOFF, False, False),
    ],
)
def test_each_strategy_says_what_happens_to_bad_records(
    strategy: FailureStrategy, skips: bool, dlq: bool
) -> None:
    policy = FailurePolicy(strategy=strategy)
    assert (policy.skips_bad_records, policy.dead_letters) == (skips, dlq)


def test_checkpoint_round_trip_with_state_tables(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    state = {"emitted": 3, "state": pa.table({"k": ["a", "b"], "n": [1, 2]})}
    store.save("job", Checkpoint(position=[0, 10, 2], sink_offsets={"out": 42}, state=state))
    loaded = store.load("job")
    assert loaded is not None
    assert loaded.position == [0, 10, 2]
    assert loaded.sink_offsets == {"out": 42}
    assert loaded.state is not None
    assert loaded.state["emitted"] == 3
    assert loaded.state["state"].to_pylist() == [{"k": "a", "n": 1}, {"k": "b", "n": 2}]
    # a second save replaces the state directory of the first
    store.save("job", Checkpoint(position=[0, 20, 4], batches=1, state=state))
    assert len(list(tmp_path.glob("job.state-*"))) == 1
    assert store.load("missing") is None


def _bad(i: int, raw: bytes = b"1,x") -> BadRecord:
    return BadRecord(raw=raw, ref=f"f.csv:{i}", message="bad", kind=ErrorKind.TYPE)


def test_file_dlq_keeps_the_original_record_and_context(tmp_path: Path) -> None:
    dlq = FileDeadLetterQueue(tmp_path / "dlq" / "j.jsonl")
    ctx = DeploymentContext(node_id="n1", node_name="N", region="r", version="2")
    letters = [
        dead_letter(
            _bad(i, raw),
            job="j",
            app="a",
            version="2",
            source="src",
            fingerprint="fp",
            context=ctx,
        )
        for i, raw in enumerate([b"1,x", b"\xff\xfe"])
    ]
    dlq.write(letters)
    assert dlq.read() == ([], None)  # nothing durable before flush
    offset = dlq.flush()
    assert offset == (tmp_path / "dlq" / "j.jsonl").stat().st_size
    page, nxt = dlq.read()
    assert nxt is None
    assert [d.payload for d in page] == [b"1,x", b"\xff\xfe"]
    first = page[0].doc
    assert first["payload"] == "1,x" and "payload_base64" in page[1].doc
    for key, value in {
        "job": "j",
        "app": "a",
        "version": "2",
        "stage": Stage.DESERIALIZE.value,
        "kind": "TypeError",
        "message": "bad",
        "fingerprint": "fp",
        "source": "src",
        "position": "f.csv:0",
        "node_id": "n1",
        "node_name": "N",
        "region": "r",
        "replayed": False,
    }.items():
        assert first[key] == value, key
    dlq.mark_replayed([page[0].id])
    assert [d.doc["replayed"] for d in dlq.read()[0]] == [True, False]


def test_file_dlq_truncates_to_a_committed_offset_and_pages(tmp_path: Path) -> None:
    dlq = FileDeadLetterQueue(tmp_path / "j.jsonl")
    ctx = DeploymentContext()
    make = [
        dead_letter(
            _bad(i), job="j", app=None, version=None, source="s", fingerprint=None, context=ctx
        )
        for i in range(5)
    ]
    dlq.write(make[:2])
    committed = dlq.flush()
    dlq.write(make[2:])
    dlq.flush()
    dlq.truncate(committed)
    assert [d.doc["position"] for d in dlq.read()[0]] == ["f.csv:0", "f.csv:1"]
    dlq.write(make[2:])
    dlq.flush()
    page, nxt = dlq.read(0, 2)
    assert len(page) == 2 and nxt == 2
    page, nxt = dlq.read(nxt, 2)
    assert [d.doc["position"] for d in page] == ["f.csv:2", "f.csv:3"] and nxt == 4


def _letters(first: int, n: int = 1) -> list[DeadLetter]:
    ctx = DeploymentContext()
    return [
        dead_letter(
            _bad(i), job="j", app=None, version=None, source="s", fingerprint=None, context=ctx
        )
        for i in range(first, first + n)
    ]


def _positions(dlq: FileDeadLetterQueue) -> list[str]:
    return [d.doc["position"] for d in dlq.read(0, 1000)[0]]


def test_file_dlq_rolls_into_segments_named_by_offset_and_reads_everything(
    tmp_path: Path,
) -> None:
    dlq = FileDeadLetterQueue(tmp_path / "j.jsonl", max_bytes=200, backups=10)
    offsets = []
    for i in range(6):
        dlq.write(_letters(i))
        offsets.append(dlq.flush())
    segments = sorted(p.name for p in tmp_path.glob("j.jsonl.0*"))
    assert segments, "no roll"
    # A segment's name is its base offset: the bytes of every letter before it.
    sizes = [(tmp_path / name).stat().st_size for name in segments]
    assert [int(n.rsplit(".", 1)[1]) for n in segments] == [
        sum(sizes[:k]) for k in range(len(sizes))
    ]
    # Offsets count the whole log, so they only grow, across rolls.
    assert (
        offsets == sorted(offsets)
        and offsets[-1] == sum(sizes) + (tmp_path / "j.jsonl").stat().st_size
    )
    assert _positions(dlq) == [f"f.csv:{i}" for i in range(6)]


def test_rolling_back_past_a_roll_reopens_the_segment_holding_the_offset(tmp_path: Path) -> None:
    """An abort (or a restart) after a batch whose flush rolled the file: the committed
    offset lies in the sealed segment, which becomes live again, cut at the offset."""
    dlq = FileDeadLetterQueue(tmp_path / "j.jsonl", max_bytes=200, backups=10)
    dlq.write(_letters(0, 1))
    dlq.flush()
    dlq.write(_letters(1, 1))
    committed = dlq.flush()  # inside the first segment once the next flush rolls
    assert committed >= 200
    dlq.write(_letters(2, 2))
    assert dlq.flush() > committed
    assert list(tmp_path.glob("j.jsonl.0*")), "the uncommitted batch went to a new live file"
    dlq.truncate(committed)
    assert _positions(dlq) == ["f.csv:0", "f.csv:1"]
    kept = [*tmp_path.glob("j.jsonl.0*"), tmp_path / "j.jsonl"]
    assert sum(p.stat().st_size for p in kept if p.exists()) == committed
    # The retried batch is written once; offsets go on from the committed one.
    dlq.write(_letters(2, 2))
    after = dlq.flush()
    assert after > committed
    assert _positions(dlq) == [f"f.csv:{i}" for i in range(4)]
    # A torn tail inside the live file is cut back too (a crash mid-append).
    with open(tmp_path / "j.jsonl", "ab") as out:
        out.write(b'{"torn": ')
    dlq.truncate(after)
    assert _positions(dlq) == [f"f.csv:{i}" for i in range(4)]


def test_old_segments_beyond_the_backups_are_deleted_and_offsets_stay_global(
    tmp_path: Path,
) -> None:
    dlq = FileDeadLetterQueue(tmp_path / "j.jsonl", max_bytes=1, backups=2)
    offsets = []
    for i in range(6):
        dlq.write(_letters(i))
        offsets.append(dlq.flush())
    assert len(list(tmp_path.glob("j.jsonl.0*"))) == 2
    assert _positions(dlq) == ["f.csv:3", "f.csv:4", "f.csv:5"]
    assert offsets == sorted(offsets)
    dlq.truncate(offsets[4])  # the last commit: rolled back across the last roll
    assert _positions(dlq) == ["f.csv:3", "f.csv:4"]
    with pytest.raises(DeadLetterError, match="deleted"):
        dlq.truncate(offsets[0])  # long gone: said, not guessed


def test_a_dlq_write_failure_is_an_error_not_a_loss(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    dlq = FileDeadLetterQueue(blocker / "j.jsonl")
    dlq.write(
        [
            dead_letter(
                _bad(0),
                job="j",
                app=None,
                version=None,
                source="s",
                fingerprint=None,
                context=DeploymentContext(),
            )
        ]
    )
    with pytest.raises(DeadLetterError, match="cannot write dead letters"):
        dlq.flush()
