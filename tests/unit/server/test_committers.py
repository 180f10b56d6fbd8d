"""Simple and transactional commits over real files: a job that dies mid-batch resumes
from its checkpoint with its output cut back to the committed length (no torn line,
nothing lost, in transactional mode nothing twice), and the checkpoint store keeps one
state directory per job.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pytest

from tests.helpers import ManagerFactory
from velostream.datasource.file.sink import FileSink
from velostream.datasource.file.source import FileSource
from velostream.datasource.registry import connector_catalog
from velostream.dlq import MemoryDeadLetterQueue
from velostream.server.checkpoint import Checkpoint, CheckpointStore
from velostream.server.processors.processor import JobProcessor
from velostream.sql.model import JobSpec
from velostream.sql.parser import parse_application

ROWS = 100


class Crash(BaseException):
    """The process dying: no `except Exception` handles it."""


class CrashingSink(FileSink):
    """Writes half of its `crash_at`-th table and a torn line, then the process 'dies'."""

    def __init__(self, name: str, properties: Mapping[str, str], crash_at: int) -> None:
        super().__init__(name, properties)
        self.crash_at = crash_at
        self.writes = 0

    def write(self, table: pa.Table) -> None:
        self.writes += 1
        if self.writes == self.crash_at:
            super().write(table.slice(0, table.num_rows // 2))
            self._put([b"99999,torn"])
            raise Crash()
        super().write(table)


def job_spec(tmp_path: Path, mode: str) -> JobSpec:
    source = tmp_path / "in.csv"
    source.write_text("id,name\n" + "".join(f"{i},n{i}\n" for i in range(ROWS)))
    app = parse_application(
        f"""-- @app: committers
-- @version: 1
-- @job_mode: {mode}
-- @batch_size: 10
CREATE STREAM out AS SELECT id, name FROM src EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{source}',
      'out.type' = 'file_sink', 'out.path' = '{tmp_path / "out.csv"}');
""",
        connectors=connector_catalog(),
        base_dir=tmp_path,
        source_name="committers.sql",
    )
    return app.jobs[0]


def processor(
    job: JobSpec, store: CheckpointStore, make_manager: ManagerFactory, sink: FileSink
) -> JobProcessor:
    source = FileSource(job.sources[0].name, job.sources[0].properties)
    return JobProcessor(
        job,
        source,
        [sink],
        make_manager(),
        checkpoints=store,
        dlq=MemoryDeadLetterQueue(),
    )


def output_lines(tmp_path: Path) -> list[str]:
    return (tmp_path / "out.csv").read_text().splitlines()


@pytest.mark.parametrize("mode", ["simple", "transactional"])
def test_a_job_that_dies_mid_batch_resumes_from_its_checkpoint(
    mode: str, tmp_path: Path, make_manager: ManagerFactory
) -> None:
    job = job_spec(tmp_path, mode)
    store = CheckpointStore(tmp_path / "checkpoints")
    props = job.sinks[0].properties

    crashing = CrashingSink("out", props, crash_at=4)
    with pytest.raises(Crash):
        processor(job, store, make_manager, crashing).run()
    checkpoint = store.load(job.name)
    assert checkpoint is not None and checkpoint.position["line"] == 1 + 30  # header + 3 batches
    # Simple mode wrote the torn line into the output; transactional mode staged it aside.
    torn = "99999,torn" if mode == "simple" else "29,n29"
    assert output_lines(tmp_path)[-1] == torn

    resumed = processor(job, store, make_manager, FileSink("out", props))
    stats = resumed.run()
    assert stats.records_in == ROWS - 30, "resumed at the checkpoint, not from the start"
    assert output_lines(tmp_path) == ["id,name", *(f"{i},n{i}" for i in range(ROWS))]


@pytest.mark.parametrize("mode", ["simple", "transactional"])
def test_without_a_checkpoint_the_output_starts_afresh(
    mode: str, tmp_path: Path, make_manager: ManagerFactory
) -> None:
    job = job_spec(tmp_path, mode)
    (tmp_path / "out.csv").write_text("left,over\nfrom,before\n")
    store = CheckpointStore(tmp_path / "checkpoints")
    processor(job, store, make_manager, FileSink("out", job.sinks[0].properties)).run()
    assert output_lines(tmp_path) == ["id,name", *(f"{i},n{i}" for i in range(ROWS))]


def test_a_finished_job_deployed_again_writes_nothing_more(
    tmp_path: Path, make_manager: ManagerFactory
) -> None:
    job = job_spec(tmp_path, "simple")
    store = CheckpointStore(tmp_path / "checkpoints")
    props = job.sinks[0].properties
    processor(job, store, make_manager, FileSink("out", props)).run()
    before = output_lines(tmp_path)
    stats = processor(job, store, make_manager, FileSink("out", props)).run()
    assert stats.records_in == 0
    assert output_lines(tmp_path) == before


def test_the_store_keeps_one_state_directory_per_job(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    leftover = tmp_path / "job.state-99"  # from a process that died before naming it
    leftover.mkdir()
    other = tmp_path / "job_b.state-1"
    other.mkdir()
    table = pa.table({"k": [1, 2]})
    for batches in (1, 2, 3):
        store.save(
            "job",
            Checkpoint(
                position=[0, batches, batches], batches=batches, state={"t": table, "n": batches}
            ),
        )
        assert sorted(p.name for p in tmp_path.glob("job.state-*")) == [f"job.state-{batches}"]
    assert other.exists(), "another job's state is not touched"
    loaded = store.load("job")
    assert loaded is not None and loaded.state is not None
    assert loaded.state["n"] == 3 and loaded.state["t"].equals(table)

    store.save("job", Checkpoint(position=[0, 9, 9], batches=4, state={"n": 4}))
    assert list(tmp_path.glob("job.state-*")) == []
    store.delete("job")
    assert store.load("job") is None


@pytest.mark.parametrize("mode", ["simple", "transactional"])
def test_each_commit_is_logged_at_debug(
    mode: str, tmp_path: Path, make_manager: ManagerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="velostream.processor")
    job = job_spec(tmp_path, mode)
    store = CheckpointStore(tmp_path / "checkpoints")
    processor(job, store, make_manager, FileSink("out", job.sinks[0].properties)).run()
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    commits = [line for line in debug if line.startswith(f"job '{job.name}': committed batch")]
    assert commits[0].startswith(f"job '{job.name}': committed batch 1 at ")
    assert len(commits) >= ROWS // 10
    published = [line for line in debug if "published the staged batch" in line]
    assert len(published) == (len(commits) if mode == "transactional" else 0)
