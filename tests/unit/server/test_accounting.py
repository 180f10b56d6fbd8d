"""Every input record is accounted for: in = out or filtered + failed + late.

A property test over generated JSON-lines inputs (malformed lines, values no CAST can
read, rows a WHERE filters, events out of order) and batch sizes, run through the same
in-process server as `velo-sql run`. Each count is checked against a model of the input,
so a record counted twice (a late row also counted as failed) or not at all (a dropped
late row) fails.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from rich.console import Console

from tests.jobserver import app_sql, read_jsonl
from velostream.cli.run import JobRun, run_application
from velostream.datasource.registry import connector_catalog
from velostream.observability.manager import ObservabilityManager, StreamingConfig
from velostream.sql import parse_application

WINDOW_MS = 10
# A row: (kind, event time); kinds: good, filtered (WHERE), bad_cast, malformed.
KINDS = st.sampled_from(["good", "good", "good", "filtered", "bad_cast", "malformed"])
# At least one row is JSON: the file source infers the columns from the records.
ROWS = st.lists(st.tuples(KINDS, st.integers(0, 100)), min_size=1, max_size=60).filter(
    lambda rows: any(kind != "malformed" for kind, _ in rows)
)


def _line(i: int, kind: str, ts: int) -> str:
    if kind == "malformed":
        return '{"id": ' + str(i) + ', "v": '
    value = {"good": str(i), "filtered": str(-1 - i), "bad_cast": "n/a"}[kind]
    return json.dumps({"id": i, "k": "all", "v": value, "ts": ts})


def _run(rows: list[tuple[str, int]], select: str, batch: int) -> tuple[JobRun, list[Any], Any]:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        source = tmp / "in.jsonl"
        source.write_text("".join(_line(i, k, ts) + "\n" for i, (k, ts) in enumerate(rows)))
        sql = app_sql(
            "out",
            select=select,
            source={"type": "file_source", "path": str(source), "format": "jsonl"},
            sink={"type": "file_sink", "path": str(tmp / "out.jsonl"), "format": "jsonl"},
            job={"batch.size": str(batch)},
            emit="EMIT FINAL" if "WINDOW" in select else "EMIT CHANGES",
        )
        app = parse_application(
            sql, connectors=connector_catalog(), base_dir=tmp, source_name="accounting.sql"
        )
        config = StreamingConfig(log_throttle_seconds=0.0, process_metrics=False)
        manager = ObservabilityManager.from_streaming_config(config, CollectorRegistry())
        manager.initialize()
        try:
            [run] = run_application(app, manager, Console(file=None, quiet=True), tmp / "data")
            out = read_jsonl(tmp / "out.jsonl") if (tmp / "out.jsonl").exists() else []
            groups = [g.as_dict() for g in manager.require_metrics().catalog.groups(job="out")]
        finally:
            manager.shutdown()
    return run, out, groups


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=ROWS, batch=st.integers(1, 25))
def test_a_stateless_job_accounts_for_every_record(rows: list[tuple[str, int]], batch: int) -> None:
    select = "SELECT id, CAST(v AS INTEGER) AS n FROM src WHERE CAST(v AS INTEGER) >= 0"
    run, out, _ = _run(rows, select, batch)
    kinds = [kind for kind, _ in rows]
    stats = run.stats
    assert run.state == "completed", run.error
    assert stats.records_in == len(rows)
    assert stats.records_failed == kinds.count("bad_cast") + kinds.count("malformed")
    assert stats.records_out == kinds.count("good") == len(out)
    assert stats.late_records == 0
    filtered = kinds.count("filtered")
    assert stats.records_in == stats.records_out + filtered + stats.records_failed


def _late_model(rows: list[tuple[str, int]]) -> tuple[int, int]:
    """(late rows, rows counted in windows): a row is late when its window ended at or
    before the highest event time of the rows that reached the window before it."""
    highest: int | None = None
    late = counted = 0
    for kind, ts in rows:
        if kind in ("bad_cast", "malformed"):
            continue
        end = (ts // WINDOW_MS + 1) * WINDOW_MS
        if highest is not None and end <= highest:
            late += 1
            continue
        counted += 1
        highest = ts if highest is None else max(highest, ts)
    return late, counted


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=ROWS, batch=st.integers(1, 25))
def test_a_windowed_job_accounts_for_every_record_late_ones_included(
    rows: list[tuple[str, int]], batch: int
) -> None:
    select = (
        "SELECT k, COUNT(*) AS c, SUM(CAST(v AS INTEGER)) AS s FROM src "
        f"GROUP BY k WINDOW TUMBLING(ts, {WINDOW_MS}ms)"
    )
    run, out, groups = _run(rows, select, batch)
    kinds = [kind for kind, _ in rows]
    late, counted = _late_model(rows)
    stats = run.stats
    assert run.state == "completed", run.error
    assert stats.records_in == len(rows)
    assert stats.records_failed == kinds.count("bad_cast") + kinds.count("malformed")
    assert stats.late_records == late
    assert sum(row["c"] for row in out) == counted  # every other row is in a window
    assert stats.records_in == counted + stats.records_failed + stats.late_records
    dropped = [g for g in groups if g["message"].startswith("late records dropped")]
    if late:  # recorded, with every occurrence counted, under the default strategy
        assert (
            len(dropped) == 1 and dropped[0]["count"] == late and dropped[0]["stage"] == "process"
        )
    else:
        assert dropped == []
