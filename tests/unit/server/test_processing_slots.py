"""Processing slots: at most `processing_slots` jobs process a batch at the same time.

With many busy jobs, every job thread competes for the GIL, and so does the API's; the
slots bound the competition. A sink that records how many writes overlap shows it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping

import pyarrow as pa
import pytest

from tests.jobserver import Harness, rows_json
from velostream.datasource import registry as connector_registry
from velostream.datasource.memory import MemorySink
from velostream.server.stream_job_server import StreamJobServer

JOBS = 4
ROWS = 12


class OverlapSink(MemorySink):
    """`memory_sink` that holds each write a moment and records the most at once."""

    lock = threading.Lock()
    active = 0
    most = 0

    def __init__(self, name: str, properties: Mapping[str, str] | None = None) -> None:
        super().__init__(name, properties)

    def write(self, table: pa.Table) -> None:
        cls = type(self)
        with cls.lock:
            cls.active += 1
            cls.most = max(cls.most, cls.active)
        time.sleep(0.02)
        with cls.lock:
            cls.active -= 1
        super().write(table)


def application() -> str:
    rows = rows_json([{"id": i} for i in range(ROWS)]).replace("'", "''")
    statements = ["-- @app: slots\n-- @version: 1\n-- @batch_size: 2\n"]
    for i in range(JOBS):
        statements.append(
            f"CREATE STREAM slot_{i} AS SELECT id FROM src EMIT CHANGES\n"
            f"WITH ('src.type' = 'memory_source', 'src.rows' = '{rows}',\n"
            f"      'slot_{i}.type' = 'memory_sink');\n"
        )
    return "\n".join(statements)


def most_at_once(harness: Harness, slots: int, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setitem(connector_registry._extra_sinks, "memory_sink", OverlapSink)
    OverlapSink.active = OverlapSink.most = 0
    server = StreamJobServer(
        harness.manager, harness.data_dir / f"slots{slots}", processing_slots=slots
    )
    try:
        names = server.deploy(application())
        assert server.wait_idle(timeout=30)
        for name in names:
            status = server.get_job_status(name)
            assert (status["state"], status["records_out"]) == ("completed", ROWS), status
    finally:
        server.shutdown(10.0)
    return OverlapSink.most


def test_one_slot_means_one_batch_at_a_time(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert most_at_once(harness, 1, monkeypatch) == 1


def test_more_slots_let_jobs_overlap(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    assert 2 <= most_at_once(harness, JOBS, monkeypatch) <= JOBS


def test_the_default_is_the_cpu_count(harness: Harness) -> None:
    server = StreamJobServer(harness.manager, harness.data_dir / "default")
    assert server.processing_slots == max(1, os.cpu_count() or 2)
