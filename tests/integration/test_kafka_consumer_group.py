"""Two `velo-sql` servers deploying one application share a topic's partitions through
the consumer group: every record is processed exactly once across both (simple mode,
clean run), and each server's node identity shows in its metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.kafka_broker import KafkaBroker, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
VELO_SQL = str(Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "velo-sql")


class Server:
    def __init__(self, app: Path, node: str, tmp: Path) -> None:
        self.port = free_port()
        self.log = tmp / f"{node}.log"
        env = {**os.environ, "NODE_ID": node, "REGION": "test-region"}
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [
                    VELO_SQL,
                    "deploy-app",
                    "--file",
                    str(app),
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(tmp / node),
                ],
                cwd=tmp,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def assigned(self) -> bool:
        lines = [line for line in self.text().splitlines() if "assigned partitions [" in line]
        return bool(lines) and "assigned partitions []" not in lines[-1]

    def metrics(self) -> dict[str, float]:
        body = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if sample.labels.get("job") == "out":
                    out[sample.name] = sample.value
                if sample.name == "velo_build_info":
                    out["node:" + sample.labels["node_id"]] = sample.value
        return out

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _wait(condition: Callable[[], bool], timeout: float, what: str, servers: list[Server]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        for server in servers:
            assert server.process.poll() is None, f"server exited:\n{server.text()[-3000:]}"
        time.sleep(0.2)
    logs = "\n---\n".join(s.text()[-3000:] for s in servers)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def test_two_servers_share_the_partitions_each_record_once(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    source, sink = new_topic("in", partitions=4), new_topic("out", partitions=4)
    group = f"velo-{source}"
    app = tmp_path / "app.sql"
    app.write_text(
        f"""
-- @app: shared
-- @batch_size: 500
CREATE STREAM out AS SELECT id, price * 2 AS double_price, _key FROM src
WITH (
    'src.type' = 'kafka_source', 'src.topic' = '{source}',
    'src.bootstrap.servers' = '{kafka_broker.bootstrap}', 'src.group.id' = '{group}',
    'src.session.timeout.ms' = '6000',
    'out.type' = 'kafka_sink', 'out.topic' = '{sink}',
    'out.bootstrap.servers' = '{kafka_broker.bootstrap}'
);
"""
    )
    n = 20_000
    values = [orjson.dumps({"id": i, "price": i / 4}) for i in range(n)]
    keys = [f"k{i}".encode() for i in range(n)]
    first = Server(app, "node-a", tmp_path)
    servers = [first]
    try:
        _wait(first.assigned, 60, "node-a's partitions", servers)
        # Half the records while node-a is alone, the rest once node-b has joined.
        kafka_broker.produce(source, values[: n // 2], keys=keys[: n // 2])
        _wait(lambda: first.metrics().get("velo_job_records_in_total", 0) > 0, 60, "a", servers)
        second = Server(app, "node-b", tmp_path)
        servers.append(second)
        _wait(lambda: first.assigned() and second.assigned(), 60, "the rebalance", servers)
        kafka_broker.produce(source, values[n // 2 :], keys=keys[n // 2 :])

        def all_committed() -> bool:
            offsets = kafka_broker.committed(group, source)
            return sum(max(0, o) for o in offsets.values()) == n

        _wait(all_committed, 90, "every offset committed", servers)
        metrics = [s.metrics() for s in servers]
    finally:
        for server in servers:
            server.stop()

    ids = Counter(orjson.loads(r.value)["id"] for r in kafka_broker.read_all(sink))
    assert set(ids) == set(range(n))
    assert max(ids.values()) == 1, f"{sum(c > 1 for c in ids.values())} records twice"
    ins = [m.get("velo_job_records_in_total", 0) for m in metrics]
    assert sum(ins) == n and all(count > 0 for count in ins), ins
    assert "node:node-a" in metrics[0] and "node:node-b" in metrics[1]
