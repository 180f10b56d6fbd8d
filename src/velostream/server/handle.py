"""`JobHandle`: one deployed job as the server holds it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from velostream.server.jobs import JobState, StateMachine
from velostream.server.processors.processor import JobProcessor
from velostream.sql.model import Application, JobSpec
from velostream.sql.plan_union import stream_sources

__all__ = ["JobHandle"]


@dataclass(slots=True)
class JobHandle:
    """A deployed job: its spec, state machine, processor and thread."""

    spec: JobSpec
    app: Application
    sql: str
    machine: StateMachine
    processor: JobProcessor | None = None
    thread: threading.Thread | None = None
    deployed_at: float = field(default_factory=time.time)
    #: The reason to park the job once it runs, before its first read: it was paused
    #: when the server went down (`StreamJobServer.restore`).
    start_paused: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def state(self) -> JobState:
        return self.machine.state

    def describe(self) -> dict[str, Any]:
        stats = self.processor.stats if self.processor is not None else None
        history = list(self.machine.history)
        return {
            "name": self.name,
            "app": self.app.name,
            "version": self.spec.version,
            "state": history[-1].state.value,
            "reason": history[-1].reason,
            "state_since": history[-1].at,
            "mode": self.spec.job_mode.value,
            "failure_strategy": self.spec.failure_strategy.value,
            "deployed_at": self.deployed_at,
            "source": self.spec.sources[0].name if self.spec.sources else None,
            "sources": [s.name for s in stream_sources(self.spec)],
            "per_source": {
                name: counts.as_dict()
                for name, counts in (self.processor.source_counts if self.processor else {}).items()
            },
            "sinks": [s.name for s in self.spec.sinks],
            "records_in": stats.records_in if stats else 0,
            "records_out": stats.records_out if stats else 0,
            "records_failed": stats.records_failed if stats else 0,
            "dead_letters": stats.dead_letters if stats else 0,
            "late_records": stats.late_records if stats else 0,
            "batches": stats.batches if stats else 0,
            "partitioned_state": self._partitioned_state(),
            "history": [{"state": c.state.value, "at": c.at, "reason": c.reason} for c in history],
            "sql": self.spec.text,
        }

    def _partitioned_state(self) -> dict[str, Any] | None:
        """A job whose state is partitioned: the partitions this node holds now."""
        processor = self.processor
        if processor is None or processor.partitions is None:
            return None
        context = processor.observability.deployment_context_for_job(self.name)
        return {"node": context.node_id, **processor.partitions.describe()}
