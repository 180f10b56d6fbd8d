"""A job's table sides as its loop sees them: loaded at the start, reloaded on change.

The engine keeps the tables in the job's DuckDB (`velostream.engine.tables`); here their
loads meet the job's error path. A table's bad records go through the failure strategy
under the table's name, each counted as a record in and failed, and their dead letters
are made durable at once (a table is not part of a batch, so no batch abort undoes
them). A reload that fails is recorded and the table keeps its rows; a first load that
fails fails the job.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from velostream.engine.tables import TableSides
from velostream.errors import Stage
from velostream.observability.logging import bind_stage
from velostream.sql.duration import parse_duration_ms
from velostream.sql.model import JobSpec

if TYPE_CHECKING:
    from velostream.server.processors.processor import JobProcessor

__all__ = ["TableLoader", "reload_interval"]

_log = logging.getLogger("velostream.processor")


def reload_interval(job: JobSpec) -> float:
    """Seconds between checks of the tables' files (`table.reload.interval`; default 0:
    before every batch)."""
    raw = job.properties.get("table.reload.interval")
    return parse_duration_ms(raw) / 1000 if raw else 0.0


class TableLoader:
    """Loads one processor's table sides and hands their bad records to its strategy."""

    def __init__(self, processor: JobProcessor, memory_limit: int | None) -> None:
        self.processor = processor
        executor = processor.executor
        self.sides = TableSides(
            processor.job,
            executor.plan,
            executor.con,
            check_interval=reload_interval(processor.job),
            memory_limit=memory_limit,
        )

    def __bool__(self) -> bool:
        return bool(self.sides)

    def load(self, *, initial: bool = False) -> None:
        """Load every table (`initial`, the job starts) or reload those that changed."""
        if not self.sides:
            return
        processor = self.processor
        try:
            with bind_stage(Stage.SOURCE):
                loads = self.sides.load() if initial else self.sides.refresh()
        except Exception as exc:
            processor.errors.record(Stage.SOURCE, f"loading a table: {exc}", exc=exc)
            if initial:
                raise
            return
        for load in loads:
            _log.info("job %r: table %s loaded, %d rows", processor.job.name, load.name, load.rows)
            if load.bad:
                processor.counters.records_in += len(load.bad)
                processor.handle_bad(load.bad, source=load.name)
                processor.flush_dead_letters()
