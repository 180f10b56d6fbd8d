"""Kill a job's process mid-stream and start it again: simple mode loses nothing,
transactional mode delivers each record exactly once (read_committed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.integration.kafka_broker import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
N = 6_000


def _app(broker: KafkaBroker, source: str, sink: str, mode: str) -> str:
    return f"""
-- @app: crash
-- @job_mode: {mode}
-- @batch_size: 250
CREATE STREAM out AS SELECT id, price FROM src
WITH (
    'src.type' = 'kafka_source', 'src.topic' = '{source}',
    'src.bootstrap.servers' = '{broker.bootstrap}',
    'src.group.id' = 'crash-{source}',
    'src.session.timeout.ms' = '6000',
    'out.type' = 'kafka_sink', 'out.topic' = '{sink}',
    'out.bootstrap.servers' = '{broker.bootstrap}'
);
"""


def _start(app: Path, data_dir: Path, log: Path, crash_at: int = 0) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "tests.integration.kafka_broker", str(app), str(data_dir)]
    if crash_at:
        args.append(str(crash_at))
    env = {**os.environ, "NODE_ID": "crash-node"}
    with open(log, "ab") as out:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait(condition: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{log.read_text()[-3000:]}")


def _ids(broker: KafkaBroker, topic: str) -> Counter[int]:
    return Counter(orjson.loads(r.value)["id"] for r in broker.read_all(topic))


def _committed_total(broker: KafkaBroker, source: str) -> int:
    return sum(max(o, 0) for o in broker.committed(f"crash-{source}", source).values())


@pytest.mark.parametrize("mode", ["simple", "transactional"])
def test_killed_job_restarts_without_loss(
    mode: str, kafka_broker: KafkaBroker, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    source, sink = new_topic("in", partitions=2), new_topic("out")
    kafka_broker.produce(source, [orjson.dumps({"id": i, "price": i * 0.5}) for i in range(N)])
    app, log = tmp_path / "app.sql", tmp_path / "job.log"
    app.write_text(_app(kafka_broker, source, sink, mode))

    # First run: killed (SIGKILL) just before its 9th batch commits, mid-stream.
    first = _start(app, tmp_path / "data", log, crash_at=9)
    assert first.wait(60) == -signal.SIGKILL, log.read_text()[-3000:]
    committed_at_crash = _committed_total(kafka_broker, source)
    assert 0 < committed_at_crash < N

    second = _start(app, tmp_path / "data", log)
    try:
        _wait(lambda: _committed_total(kafka_broker, source) == N, 90, "all offsets", log)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)

    isolation = "read_committed"
    ids = (
        _ids(kafka_broker, sink)
        if mode == "simple"
        else Counter(
            orjson.loads(r.value)["id"] for r in kafka_broker.read_all(sink, isolation=isolation)
        )
    )
    assert set(ids) == set(range(N)), f"missing: {sorted(set(range(N)) - set(ids))[:20]}"
    if mode == "transactional":
        duplicates = {i: c for i, c in ids.items() if c > 1}
        assert not duplicates, f"{len(duplicates)} ids written more than once"
