"""Job states and their legal transitions, with a timestamped history."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum

from velostream.errors import JobStateError

__all__ = ["JobState", "StateChange", "StateMachine"]


class JobState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def active(self) -> bool:
        return self in (JobState.STARTING, JobState.RUNNING, JobState.PAUSED)


_ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.STARTING: frozenset({JobState.RUNNING, JobState.FAILED, JobState.STOPPED}),
    JobState.RUNNING: frozenset(
        {JobState.PAUSED, JobState.COMPLETED, JobState.STOPPED, JobState.FAILED}
    ),
    JobState.PAUSED: frozenset({JobState.RUNNING, JobState.STOPPED, JobState.FAILED}),
    JobState.COMPLETED: frozenset({JobState.STARTING}),
    JobState.STOPPED: frozenset({JobState.STARTING}),
    JobState.FAILED: frozenset({JobState.STARTING}),
}


@dataclass(frozen=True, slots=True)
class StateChange:
    state: JobState
    at: float
    reason: str | None = None


@dataclass(slots=True)
class StateMachine:
    """A job's state; an illegal transition raises JobStateError naming both states."""

    job: str
    history: list[StateChange] = field(default_factory=list)
    #: Held (re-entrantly) by whoever checks the state and then moves it.
    lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        if not self.history:
            self.history.append(StateChange(JobState.STARTING, time.time()))

    @property
    def state(self) -> JobState:
        return self.history[-1].state

    @property
    def reason(self) -> str | None:
        return self.history[-1].reason

    def can(self, target: JobState) -> bool:
        return target in _ALLOWED[self.state]

    def move(self, target: JobState, reason: str | None = None) -> StateChange:
        with self.lock:
            current = self.state
            if target not in _ALLOWED[current]:
                raise JobStateError(
                    f"job {self.job!r} cannot go from {current} to {target}", job=self.job
                )
            change = StateChange(target, time.time(), reason)
            self.history.append(change)
            return change
