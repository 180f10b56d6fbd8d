"""Job state machine, failure policy and checkpoints."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from velostream.errors import JobStateError
from velostream.server.checkpoint import Checkpoint, CheckpointStore
from velostream.server.jobs import JobState, StateMachine
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
