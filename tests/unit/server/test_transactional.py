"""Transactional mode in one process: an abort (a sink failing mid-batch, retried with
RetryWithBackoff) rewinds outputs and source, so each record is written exactly once;
simple mode settles its file sink to the last commit on an abort too, but writes in
place (a reader may see rows that are then cut). File outputs are read-committed in
transactional mode: a batch is staged beside the file and published after its
checkpoint, so a reader never sees rows that are rolled back, and a crash between the
checkpoint and the publish is rolled forward on restart."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pytest

from tests.helpers import ManagerFactory
from tests.jobserver import Harness, app_sql, read_jsonl, write_jsonl
from tests.unit.server.test_committers import ROWS, Crash, job_spec
from velostream.datasource import registry as connector_registry
from velostream.datasource.file.sink import FileSink
from velostream.datasource.file.source import FileSource
from velostream.datasource.traits import Sink
from velostream.dlq import MemoryDeadLetterQueue
from velostream.errors import SinkError
from velostream.server.checkpoint import CheckpointStore
from velostream.server.processors.processor import JobProcessor

N = 40


class PeekingFileSink(FileSink):
    """A `file_sink` that reads its output around every write and flush, as a reader
    would, next to what it last published; its `fail_at` writes (1-based, comma
    separated) write half their rows, then raise."""

    made: ClassVar[list[PeekingFileSink]] = []

    def __init__(self, name: str, properties: Mapping[str, str]) -> None:
        props = dict(properties)
        self.fail_at = {int(n) for n in props.pop("fail_at", "").split(",") if n}
        super().__init__(name, props)
        self.writes = 0
        self.published = b""
        self.peeks: list[tuple[bytes, bytes]] = []  # (what a reader sees, what is committed)
        PeekingFileSink.made.append(self)

    def output(self) -> bytes:
        return Path(self.path).read_bytes() if os.path.exists(self.path) else b""

    def _peek(self) -> None:
        self.peeks.append((self.output(), self.published))

    def begin_staging(self, committed: int) -> None:
        super().begin_staging(committed)
        self.published = self.output()

    def write(self, table: pa.Table) -> None:
        self.writes += 1
        self._peek()
        try:
            if self.writes in self.fail_at:
                super().write(table.slice(0, max(1, table.num_rows // 2)))
                raise SinkError(f"sink '{self.name}': connection reset mid-batch")
            super().write(table)
        finally:
            self._peek()

    def flush(self) -> None:
        super().flush()
        self._peek()

    def publish(self) -> None:
        super().publish()
        self.published = self.output()

    def assert_read_committed(self) -> None:
        assert self.peeks, "the sink was never written"
        for seen, committed in self.peeks:
            assert seen == committed, "a reader saw rows that were not committed"


@pytest.fixture
def peeking(faults: None, monkeypatch: pytest.MonkeyPatch) -> list[PeekingFileSink]:
    """Route `file_sink` to `PeekingFileSink`; the sinks it makes, in order."""
    monkeypatch.setattr(PeekingFileSink, "made", [])
    monkeypatch.setitem(connector_registry._extra_sinks, "file_sink", PeekingFileSink)
    return PeekingFileSink.made


def deploy(h: Harness, tmp_path: Path, mode: str, sink: Mapping[str, str], strategy: str) -> Path:
    """Deploy a copy of N JSON lines in batches of 7; return the output's path."""
    source = write_jsonl(
        tmp_path / "in.jsonl", [json.dumps({"id": i, "v": str(i)}) for i in range(N)]
    )
    out = tmp_path / "out.jsonl"
    h.deploy(
        app_sql(
            "out",
            select="SELECT id, v FROM src",
            source={"type": "file_source", "path": str(source), "format": "jsonl"},
            sink={"type": "file_sink", "path": str(out), "format": "jsonl", **sink},
            job={
                "failure_strategy": strategy,
                "max_retries": "5",
                "retry_backoff_ms": "1",
                "batch.size": "7",
            },
            mode=mode,
        )
    )
    return out


def run(h: Harness, tmp_path: Path, mode: str, *, fail_writes: int = 3) -> list[int]:
    out = deploy(h, tmp_path, mode, {"fail_writes": str(fail_writes)}, "RetryWithBackoff")
    status = h.wait_state("out", "completed", "failed")
    assert status["state"] == "completed", status["reason"]
    assert h.job_errors("out", "sink", "IOError") == fail_writes
    return [r["id"] for r in read_jsonl(out)]


def test_an_abort_rewinds_so_each_record_is_written_exactly_once(
    harness: Harness, faults: None, tmp_path: Path
) -> None:
    h = harness
    ids = run(h, tmp_path, "transactional")
    assert ids == list(range(N))
    status = h.status("out")
    assert status["records_in"] == status["records_out"] == N
    assert h.sample("velo_job_records_out_total", job="out") == N
    checkpoint = h.server.checkpoints.load("out")
    assert checkpoint is not None
    assert checkpoint.sink_offsets["out"] == (tmp_path / "out.jsonl").stat().st_size


def test_simple_mode_cuts_the_half_written_batch_before_its_retry(
    harness: Harness, faults: None, tmp_path: Path
) -> None:
    ids = run(harness, tmp_path, "simple")
    assert ids == list(range(N))  # nothing lost, nothing twice
    checkpoint = harness.server.checkpoints.load("out")
    assert checkpoint is not None
    assert checkpoint.sink_offsets["out"] == (tmp_path / "out.jsonl").stat().st_size


def test_a_transactional_restart_resumes_exactly_once(
    harness: Harness, faults: None, tmp_path: Path
) -> None:
    h = harness
    run(h, tmp_path, "transactional", fail_writes=1)
    h.server.restart("out")
    h.wait_state("out", "completed")
    assert [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")] == list(range(N))


@pytest.mark.parametrize(
    ("strategy", "fail_at", "state", "committed_batches"),
    [("RetryWithBackoff", "2,3,5", "completed", 6), ("FailBatch", "3", "failed", 2)],
)
def test_a_reader_of_the_output_never_sees_uncommitted_rows(
    harness: Harness,
    peeking: list[PeekingFileSink],
    tmp_path: Path,
    strategy: str,
    fail_at: str,
    state: str,
    committed_batches: int,
) -> None:
    h = harness
    out = deploy(h, tmp_path, "transactional", {"fail_at": fail_at}, strategy)
    status = h.wait_state("out", "completed", "failed")
    assert status["state"] == state, status["reason"]
    (sink,) = peeking
    sink.assert_read_committed()  # also right after each half-written batch and its abort
    ids = [r["id"] for r in read_jsonl(out)]
    assert ids == list(range(min(N, 7 * committed_batches)))
    checkpoint = h.server.checkpoints.load("out")
    assert checkpoint is not None and checkpoint.sink_offsets["out"] == out.stat().st_size
    assert not os.path.exists(sink.staging_path)


def two_sinks(tmp_path: Path, fail_at: str = "") -> list[Sink]:
    props = {"path": str(tmp_path / "out.csv")}
    return [
        PeekingFileSink("out", props),
        PeekingFileSink("copy", {"path": str(tmp_path / "copy.csv"), "fail_at": fail_at}),
    ]


def processor(
    tmp_path: Path, store: CheckpointStore, make_manager: ManagerFactory, sinks: list[Sink]
) -> JobProcessor:
    job = job_spec(tmp_path, "transactional")  # ROWS rows in batches of 10
    source = FileSource(job.sources[0].name, job.sources[0].properties)
    dlq = MemoryDeadLetterQueue()
    return JobProcessor(job, source, sinks, make_manager(), checkpoints=store, dlq=dlq)


def csv_ids(path: Path) -> list[int]:
    lines = path.read_text().splitlines()
    assert lines[0] == "id,name"
    return [int(line.split(",")[0]) for line in lines[1:]]


def test_a_second_sink_failing_leaves_the_first_output_byte_identical(
    tmp_path: Path, make_manager: ManagerFactory
) -> None:
    store = CheckpointStore(tmp_path / "checkpoints")
    first, second = sinks = two_sinks(tmp_path, fail_at="4")
    with pytest.raises(SinkError, match="connection reset mid-batch"):
        processor(tmp_path, store, make_manager, sinks).run()
    assert isinstance(first, PeekingFileSink) and isinstance(second, PeekingFileSink)
    first.assert_read_committed()  # it had written the fourth batch when the second failed
    second.assert_read_committed()
    assert first.writes == 4
    out = tmp_path / "out.csv"
    assert out.read_bytes() == first.published  # the abort left it byte-identical
    assert csv_ids(out) == csv_ids(tmp_path / "copy.csv") == list(range(30))
    checkpoint = store.load("out")
    assert checkpoint is not None
    assert checkpoint.sink_offsets == {"out": out.stat().st_size, "copy": out.stat().st_size}

    stats = processor(tmp_path, store, make_manager, two_sinks(tmp_path)).run()
    assert stats.records_in == ROWS - 30
    assert csv_ids(out) == csv_ids(tmp_path / "copy.csv") == list(range(ROWS))


class CrashingPublish(FileSink):
    """The process 'dies' in its `crash_at`-th publish, after the checkpoint is saved:
    before moving anything, or (`torn`) halfway through appending the staged bytes."""

    def __init__(self, name: str, properties: Mapping[str, str], crash_at: int, torn: bool):
        super().__init__(name, properties)
        self.crash_at, self.torn = crash_at, torn
        self.publishes = 0

    def publish(self) -> None:
        self.publishes += 1
        if self.publishes == self.crash_at:
            if self.torn:
                staged = Path(self.staging_path).read_bytes()
                with open(self.path, "ab") as out:
                    out.write(staged[: len(staged) // 2])
            raise Crash()
        super().publish()


@pytest.mark.parametrize(
    ("crash_at", "torn"),
    [pytest.param(1, False, id="first-batch"), pytest.param(3, False, id="later-batch"),
     pytest.param(3, True, id="torn-append")],
)  # fmt: skip
def test_a_crash_between_checkpoint_and_publish_is_rolled_forward(
    tmp_path: Path, make_manager: ManagerFactory, crash_at: int, torn: bool
) -> None:
    store = CheckpointStore(tmp_path / "checkpoints")
    props = {"path": str(tmp_path / "out.csv")}
    crashing = CrashingPublish("out", props, crash_at, torn)
    with pytest.raises(Crash):
        processor(tmp_path, store, make_manager, [crashing]).run()
    checkpoint = store.load("out")
    assert checkpoint is not None
    assert checkpoint.position["line"] == 1 + 10 * crash_at, "the batch is committed"
    out, staging = tmp_path / "out.csv", Path(crashing.staging_path)
    committed = checkpoint.sink_offsets["out"]
    batch = [f"{i},n{i}" for i in range(10 * (crash_at - 1), 10 * crash_at)]
    assert staging.read_text().splitlines()[-10:] == batch, "the batch waits in the staging file"
    before = committed - staging.stat().st_size  # what the file held before the batch
    assert out.stat().st_size == before + (staging.stat().st_size // 2 if torn else 0)

    stats = processor(tmp_path, store, make_manager, [FileSink("out", props)]).run()
    assert stats.records_in == ROWS - 10 * crash_at, "resumed after the committed batch"
    assert csv_ids(out) == list(range(ROWS)), "published exactly once"
    assert not staging.exists()


class PublishFailsOnce(FileSink):
    """Its `fail_at`-th publish fails (the checkpoint is saved); the next one works."""

    def __init__(self, name: str, properties: Mapping[str, str], fail_at: int) -> None:
        super().__init__(name, properties)
        self.fail_at, self.publishes = fail_at, 0

    def publish(self) -> None:
        self.publishes += 1
        if self.publishes == self.fail_at:
            raise SinkError("the disk blinked")
        super().publish()


def test_a_batch_the_abort_publishes_after_all_is_counted_out(
    tmp_path: Path, make_manager: ManagerFactory
) -> None:
    """The checkpoint holds the batch, so the abort rolls it forward: its rows are out."""
    store = CheckpointStore(tmp_path / "checkpoints")
    sink = PublishFailsOnce("out", {"path": str(tmp_path / "out.csv")}, fail_at=3)
    job_processor = processor(tmp_path, store, make_manager, [sink])
    with pytest.raises(SinkError):  # LogAndContinue: a sink error fails the job
        job_processor.run()
    assert csv_ids(tmp_path / "out.csv") == list(range(30)), "three batches published"
    stats = job_processor.stats
    assert (stats.records_in, stats.records_out) == (30, 30)
