"""Retries and restarts settle every file sink and the dead-letter file to the last
commit before anything is written again, in simple mode as in transactional mode.

The disk fills part-way through a batch (tests/fulldisk.py: a short write, then
ENOSPC), or a commit fails (or the process dies) after the batch's dead letters were
written; the job retries, or fails and is restarted once there is space again, or
runs again after the crash. The output then holds
every row once and no torn line; the dead letters hold every poison record once; a
torn line a crash leaves in the dead-letter file is skipped by the listing and the
replay, recorded once as a `dlq` error, and cut by the restart.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import pytest

from tests.fulldisk import Disk
from tests.helpers import ManagerFactory
from tests.jobserver import (
    BAD_CAST,
    BROKEN_JSON,
    Harness,
    app_sql,
    poison_lines,
    read_jsonl,
    write_jsonl,
)
from velostream.datasource import registry as connector_registry
from velostream.datasource.file.sink import FileSink
from velostream.datasource.file.source import FileSource
from velostream.datasource.registry import connector_catalog
from velostream.dlq import FileDeadLetterQueue
from velostream.server.checkpoint import Checkpoint, CheckpointStore
from velostream.server.processors.processor import JobProcessor
from velostream.sql.parser import parse_application

N = 3_000
POISON = sorted([*BROKEN_JSON, *BAD_CAST])
GOOD = [i for i in range(1, 13) if i not in POISON]
STRICT = "SELECT id, CAST(v AS INTEGER) AS n FROM src"
# Accepts `x<n>` as n: what STRICT dead-lettered for a bad cast now passes.
LENIENT = "SELECT id, COALESCE(TRY_CAST(v AS INTEGER), CAST(substr(v, 2) AS INTEGER)) AS n FROM src"


class DiskFileSink(FileSink):
    """`file_sink` whose streams write to `DiskFileSink.disk`, a disk that fills."""

    disk: ClassVar[Disk] = Disk()

    def _open_stream(self) -> BinaryIO:
        mode = "w+b" if self._staged else "ab" if self.config.append else "wb"
        return self.disk.stream(self._stream_path, mode)


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Disk:
    """The disk every `file_sink` of the test writes to."""
    filling = Disk()
    monkeypatch.setattr(DiskFileSink, "disk", filling)
    monkeypatch.setitem(connector_registry._extra_sinks, "file_sink", DiskFileSink)
    return filling


@pytest.mark.parametrize("mode", ["simple", "transactional"])
def test_a_retry_after_the_disk_filled_writes_each_row_once(
    harness: Harness, disk: Disk, tmp_path: Path, mode: str
) -> None:
    h = harness
    source = write_jsonl(
        tmp_path / "in.jsonl", [json.dumps({"id": i, "v": str(i)}) for i in range(N)]
    )
    out = tmp_path / "out.jsonl"
    disk.fill(25_000)  # some 1,100 rows: the third batch of 500 runs out part-way
    h.deploy(
        app_sql(
            "out",
            select="SELECT id, v FROM src",
            source={"type": "file_source", "path": str(source), "format": "jsonl"},
            sink={"type": "file_sink", "path": str(out), "format": "jsonl"},
            job={
                "failure_strategy": "RetryWithBackoff",
                "max_retries": "20",
                "retry_backoff_ms": "20",
                "batch.size": "500",
            },
            mode=mode,
        )
    )
    h.wait_for(lambda: disk.refused > 0, what="the disk to fill")
    disk.free()  # while the job backs off
    status = h.wait_state("out", "completed", "failed")
    assert status["state"] == "completed", status["reason"]
    assert [r["id"] for r in read_jsonl(out)] == list(range(N))  # a torn line fails here
    assert status["records_in"] == status["records_out"] == N
    assert h.job_errors("out", "sink", "ResourceError") >= 1
    checkpoint = h.server.checkpoints.load("out")
    assert checkpoint is not None and checkpoint.sink_offsets["out"] == out.stat().st_size


def _deploy_poison(h: Harness, tmp_path: Path, *, select: str = STRICT, version: str = "1") -> Path:
    source = tmp_path / "in.jsonl"
    if not source.exists():
        write_jsonl(source, poison_lines())
    out = tmp_path / "out.jsonl"
    h.deploy(
        app_sql(
            "out",
            select=select,
            source={"type": "file_source", "path": str(source), "format": "jsonl"},
            sink={"type": "file_sink", "path": str(out), "format": "jsonl"},
            job={"failure_strategy": "SendToDLQ", "batch.size": "4"},
            version=version,
        )
    )
    return out


def _whole_letters(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"torn: {data[-80:]!r}"
    return [json.loads(line) for line in data.splitlines()]


def _line(letter: dict[str, Any]) -> int:
    return int(letter["position"].rsplit(":", 1)[1])


def _listed(h: Harness) -> list[dict[str, Any]]:
    response = h.client.get("/jobs/out/dlq")
    assert response.status_code == 200, response.text
    letters: list[dict[str, Any]] = response.json()["letters"]
    return letters


def _eio(fd: int, length: int) -> None:
    raise OSError(errno.EIO, os.strerror(errno.EIO))


def test_dead_letters_torn_by_a_full_disk_are_skipped_reported_and_settled_by_a_restart(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    dlq = h.data_dir / "dlq" / "out.jsonl"
    disk = Disk()
    disk.patch_os_write(monkeypatch, dlq.parent)
    disk.fill(150)  # the second batch's letters run out part-way through the first
    # ...and the server cannot take the torn write back (as if it died first).
    monkeypatch.setattr(os, "ftruncate", _eio)
    out = _deploy_poison(h, tmp_path)
    status = h.wait_state("out", "completed", "failed")
    assert status["state"] == "failed" and "dead-letter write failed" in status["reason"]
    assert dlq.stat().st_size == 150 and not dlq.read_bytes().endswith(b"\n")

    # The listing and the replay read past the torn line; it is recorded once.
    written_off = h.job_errors("out", "dlq", "IOError")
    assert _listed(h) == [] and _listed(h) == []
    assert h.job_errors("out", "dlq", "IOError") == written_off + 1
    assert h.buffered("skipped a torn last line", job="out")
    replay = h.client.post("/jobs/out/dlq/replay")
    assert replay.status_code == 200 and replay.json()["replayed"] == 0, replay.text

    # Space again: the restart cuts the dead letters and the output to the last commit
    # before the batches that failed run again.
    monkeypatch.undo()
    h.server.restart("out")
    assert h.wait_state("out", "completed", "failed")["state"] == "completed"
    assert sorted(_line(d) for d in _whole_letters(dlq)) == POISON
    assert sorted(_line(d) for d in _listed(h)) == POISON
    assert [r["id"] for r in read_jsonl(out)] == GOOD

    # A version that accepts the bad casts replays them, once.
    _deploy_poison(h, tmp_path, select=LENIENT, version="2")
    h.wait_state("out", "completed")
    cast = [d["id"] for d in _listed(h) if d["stage"] == "process"]
    replay = h.client.post("/jobs/out/dlq/replay", json={"ids": cast})
    assert replay.status_code == 200, replay.text
    assert replay.json()["replayed"] == len(BAD_CAST)
    assert [r["id"] for r in read_jsonl(out)] == [*GOOD, *BAD_CAST]


def test_a_torn_tail_left_by_a_crash_is_listed_past_and_cut_by_the_restart(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    _deploy_poison(h, tmp_path)
    h.wait_state("out", "completed")
    dlq = h.data_dir / "dlq" / "out.jsonl"
    committed = dlq.read_bytes()
    with open(dlq, "ab") as tail:
        tail.write(committed[: committed.index(b"\n") // 2])  # what a crash left
    assert sorted(_line(d) for d in _listed(h)) == POISON
    assert h.job_errors("out", "dlq", "IOError") == 1
    replay = h.client.post("/jobs/out/dlq/replay")
    assert replay.status_code == 422, replay.text  # whole letters, which still fail
    assert f"{len(POISON)} of {len(POISON)} dead letters still fail" in replay.text
    h.server.restart("out")
    h.wait_state("out", "completed")
    assert dlq.read_bytes() == committed


def test_the_dead_letters_of_a_failed_commit_are_cut_before_the_batch_runs_again(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint of the batch whose letters were just written cannot be saved: the
    abort cuts them, so the restart's run of the batch writes each of them once."""
    h = harness
    real_save = CheckpointStore.save
    saves = 0

    def save(self: CheckpointStore, job: str, checkpoint: Checkpoint) -> None:
        nonlocal saves
        saves += 1
        if saves == 2:  # the second batch: the first with dead letters
            raise OSError(errno.EIO, "the checkpoint disk is gone")
        real_save(self, job, checkpoint)

    monkeypatch.setattr(CheckpointStore, "save", save)
    out = _deploy_poison(h, tmp_path)
    status = h.wait_state("out", "completed", "failed")
    assert status["state"] == "failed" and "checkpoint disk" in status["reason"]
    dlq = h.data_dir / "dlq" / "out.jsonl"
    assert _whole_letters(dlq) == [] and [r["id"] for r in read_jsonl(out)] == [1, 2, 3, 4]
    h.server.restart("out")
    h.wait_state("out", "completed")
    assert sorted(_line(d) for d in _whole_letters(dlq)) == POISON
    assert [r["id"] for r in read_jsonl(out)] == GOOD


class Crash(BaseException):
    """The process dying: no `except Exception` handles it, nothing is aborted."""


def test_dead_letters_written_after_the_last_commit_are_cut_by_the_restart_after_a_crash(
    tmp_path: Path, make_manager: ManagerFactory
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", poison_lines())
    app = parse_application(
        f"""-- @app: settle
-- @version: 1
-- @batch_size: 4
CREATE STREAM out AS {STRICT} EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{source}', 'src.format' = 'jsonl',
      'out.type' = 'file_sink', 'out.path' = '{tmp_path / "out.jsonl"}',
      'out.format' = 'jsonl', 'failure_strategy' = 'SendToDLQ');
""",
        connectors=connector_catalog(),
        base_dir=tmp_path,
        source_name="settle.sql",
    )
    job = app.jobs[0]
    dlq = tmp_path / "dlq.jsonl"

    class DyingStore(CheckpointStore):
        saves = 0

        def save(self, job: str, checkpoint: Checkpoint) -> None:
            DyingStore.saves += 1
            if DyingStore.saves == 2:  # the batch whose dead letters were just flushed
                raise Crash()
            super().save(job, checkpoint)

    def run(store: CheckpointStore) -> None:
        src, sink = job.sources[0], job.sinks[0]
        JobProcessor(
            job,
            FileSource(src.name, src.properties),
            [FileSink(sink.name, sink.properties)],
            make_manager(),
            checkpoints=store,
            dlq=FileDeadLetterQueue(dlq),
        ).run()

    with pytest.raises(Crash):
        run(DyingStore(tmp_path / "checkpoints"))
    assert sorted(_line(d) for d in _whole_letters(dlq)) == [5, 7], "flushed, not committed"
    run(CheckpointStore(tmp_path / "checkpoints"))
    assert sorted(_line(d) for d in _whole_letters(dlq)) == POISON
    assert [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")] == GOOD
