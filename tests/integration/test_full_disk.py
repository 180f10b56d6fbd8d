"""A disk that fills mid-run, then has space again: a real `velo-sql server` whose file
sink or dead-letter file lives on a small tmpfs mounted for the test.

The tmpfs (2 MiB) is filled by a filler file until only a little space is left, so a
write of the job fails with ENOSPC part-way through a line. The filler is then
deleted and the job goes on — by RetryWithBackoff for the sink, by a restart for the
dead letters. Whatever the failed attempts wrote past the last commit is cut away
before anything is written again, so:

- the output holds every input row exactly once, with no torn line;
- the dead-letter file holds every poison record exactly once, with no torn line, and
  `GET /jobs/{name}/dlq` and `POST /jobs/{name}/dlq/replay` answer (never a 500) — even
  past a torn line a crash left, which is recorded as a `dlq` error and cut by a restart.

Mounting needs root (CI runs these tests as root); elsewhere they are skipped, saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.server_process import (
    Launcher,
    VeloServer,
    checkpoint,
    launcher,
    read_ids,
    wait_for,
    write_trades,
)

__all__ = ["launcher"]

pytestmark = pytest.mark.integration

DISK_SIZE = "2m"
# The messages of a mount that cannot be done for want of privilege (not root, or a
# container without CAP_SYS_ADMIN); any other failure to mount fails the test.
_NO_PRIVILEGE = ("permission denied", "only root", "operation not permitted", "must be superuser")


class SmallDisk:
    """A tmpfs mounted at `path`, filled on request by a filler file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler.bin"

    def free(self) -> int:
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize

    def fill(self, leave: int) -> None:
        """Write the filler so that only about `leave` bytes stay free."""
        size = self.free() - leave
        assert size > 0, f"the disk has only {self.free()} bytes free"
        with open(self.filler, "wb") as out:
            out.write(b"\0" * size)
            out.flush()
            os.fsync(out.fileno())

    def make_room(self) -> None:
        self.filler.unlink()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A fresh 2 MiB tmpfs under the test's folder, unmounted afterwards."""
    where = tmp_path / "small-disk"
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root: these tests fill a real disk (CI runs as root)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        message = (mounted.stderr or mounted.stdout).strip()
        if any(reason in message.lower() for reason in _NO_PRIVILEGE):
            pytest.skip(f"cannot mount a tmpfs here (no privilege): {message}")
        pytest.fail(f"mount -t tmpfs failed: {message}")
    try:
        yield SmallDisk(where)
    finally:
        # After the test's servers are gone (the launcher's cleanup runs first); lazily,
        # so a file still open cannot keep the mount behind.
        subprocess.run(["umount", "-l", str(where)], check=False)


def sql_for_copy(source: Path, out: Path, **job: str) -> str:
    props = "".join(f",\n    '{key}' = '{value}'" for key, value in job.items())
    return f"""-- @app: full_disk
-- @version: 1
CREATE STREAM copy AS
SELECT id, symbol, qty FROM src
EMIT CHANGES
WITH (
    'src.type' = 'file_source',
    'src.path' = '{source}',
    'src.format' = 'csv',
    'copy.type' = 'file_sink',
    'copy.path' = '{out}',
    'copy.format' = 'csv'{props}
);
"""


def sink_errors(server: VeloServer, job: str) -> int:
    response = server.http.get("/errors", params={"job": job, "stage": "sink", "limit": "100"})
    assert response.status_code == 200, response.text
    return sum(group["count"] for group in response.json()["groups"])


def test_a_retried_write_on_a_full_disk_leaves_each_row_once(
    launcher: Launcher, small_disk: SmallDisk, tmp_path: Path
) -> None:
    rows = 20_000
    source = write_trades(tmp_path / "trades.csv", rows)
    out = small_disk.path / "copy.csv"
    # About 280 KB of output in batches of about 14 KB: it fails some batches in.
    small_disk.fill(leave=96 * 1024)
    server = launcher.server(tmp_path / "velo-data")
    server.deploy(
        sql_for_copy(
            source,
            out,
            **{
                "failure_strategy": "RetryWithBackoff",
                "max_retries": "50",
                "retry_backoff_ms": "200",
                "batch.size": "1000",
            },
        )
    )
    wait_for("a sink write to fail on the full disk", lambda: sink_errors(server, "copy"), 60)
    assert "no space left" in server.http.get("/errors/recent").text
    assert server.job("copy")["state"] == "running"  # retrying, not failed
    small_disk.make_room()
    status = server.wait_state("copy", "completed", timeout=120)

    ids = read_ids(out)  # fails on a torn line
    assert ids == list(range(rows)), f"{len(ids)} rows, {len(ids) - len(set(ids))} duplicates"
    assert status["records_in"] == status["records_out"] == rows
    assert out.stat().st_size == checkpoint(tmp_path / "velo-data", "copy")["sink_offsets"]["copy"]


# --- dead letters -------------------------------------------------------------------

POISON_EVERY = 5


def poison_jsonl(path: Path, rows: int) -> list[int]:
    """`rows` JSON lines `{"id", "v"}`; every POISON_EVERY-th has a `v` no CAST accepts.
    Returns the poison lines' ids."""
    poison = []
    with open(path, "w", encoding="utf-8") as out:
        for i in range(rows):
            bad = i % POISON_EVERY == POISON_EVERY - 1
            if bad:
                poison.append(i)
            # A long `v`: each dead letter holds its payload, so the file grows fast.
            v = f"not-a-number-{i}-" + "x" * 200 if bad else str(i)
            out.write(json.dumps({"id": i, "v": v}) + "\n")
    return poison


def sql_for_dead_letters(source: Path, out: Path, dlq: Path) -> str:
    return f"""-- @app: full_disk_dlq
-- @version: 1
CREATE STREAM parsed AS
SELECT id, CAST(v AS INTEGER) AS n FROM src
EMIT CHANGES
WITH (
    'src.type' = 'file_source',
    'src.path' = '{source}',
    'src.format' = 'jsonl',
    'parsed.type' = 'file_sink',
    'parsed.path' = '{out}',
    'parsed.format' = 'jsonl',
    'failure_strategy' = 'SendToDLQ',
    'dlq.path' = '{dlq}',
    'batch.size' = '250'
);
"""


def all_dead_letters(server: VeloServer, job: str) -> list[dict[str, Any]]:
    letters: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        response = server.http.get(f"/jobs/{job}/dlq", params={"offset": offset, "limit": 1000})
        assert response.status_code == 200, response.text
        page = response.json()
        letters += page["letters"]
        offset = page["next_offset"]
    return letters


def test_dead_letters_on_a_full_disk_are_whole_after_a_restart(
    launcher: Launcher, small_disk: SmallDisk, tmp_path: Path
) -> None:
    rows = 4_000
    source = tmp_path / "in.jsonl"
    poison = poison_jsonl(source, rows)
    out, dlq = tmp_path / "parsed.jsonl", small_disk.path / "parsed.dlq.jsonl"
    # About 800 poison records of about 1 KB each, some 50 KB a batch: the dead-letter
    # file runs out of space part-way through a batch's letters.
    small_disk.fill(leave=160 * 1024)
    server = launcher.server(tmp_path / "velo-data")
    server.deploy(sql_for_dead_letters(source, out, dlq))
    failed = wait_for(
        "the job to fail on the full disk",
        lambda: (doc := server.job("parsed"))["state"] == "failed" and doc,
        60,
    )
    assert "dead-letter write failed" in failed["reason"], failed["reason"]
    assert "No space left" in failed["reason"] or "no space" in failed["reason"].lower()
    assert_whole_lines(dlq)  # a failed write takes its torn bytes back at once
    small_disk.make_room()
    response = server.http.post("/jobs/parsed/restart")
    assert response.status_code == 200, response.text
    server.wait_state("parsed", "completed", timeout=120)

    docs = assert_whole_lines(dlq)
    assert sorted(doc_id(d) for d in docs) == poison  # each poison record once
    good = [r["id"] for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())]
    assert good == [i for i in range(rows) if i not in set(poison)]

    listed = all_dead_letters(server, "parsed")
    assert sorted(doc_id(d) for d in listed) == poison
    replay = server.http.post("/jobs/parsed/dlq/replay", json={})
    # The letters are read back whole; they fail again (the CAST still refuses them),
    # so none is replayed: 422 naming them all, never a 500.
    assert replay.status_code == 422, replay.text
    assert f"{len(poison)} of {len(poison)} dead letters still fail" in replay.text

    # A torn line a crash left (half a letter): listed past, recorded, cut by a restart.
    committed = dlq.read_bytes()
    with open(dlq, "ab") as tail:
        tail.write(committed[: committed.index(b"\n") // 2])
    assert sorted(doc_id(d) for d in all_dead_letters(server, "parsed")) == poison
    errors = server.http.get("/errors", params={"job": "parsed", "stage": "dlq"}).json()
    assert any("torn last line" in group["message"] for group in errors["groups"]), errors
    assert server.http.post("/jobs/parsed/restart").status_code == 200
    server.wait_state("parsed", "completed", timeout=120)
    assert dlq.read_bytes() == committed


def doc_id(letter: dict[str, Any]) -> int:
    payload = json.loads(letter["payload"])
    value: int = payload["id"]
    return value


def assert_whole_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of `path` a whole JSON object, the last one ended."""
    data = path.read_bytes() if path.exists() else b""
    assert not data or data.endswith(b"\n"), f"torn last line: {data[-120:]!r}"
    docs = []
    for number, line in enumerate(data.splitlines(), 1):
        try:
            docs.append(json.loads(line))
        except ValueError:
            pytest.fail(f"{path}:{number} is not a whole dead letter: {line[:120]!r}")
    return docs
