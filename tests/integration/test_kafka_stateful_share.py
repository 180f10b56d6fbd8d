"""A stateful job on two servers of one consumer group is refused, not run on shares.

Its state (here a GROUP BY) is not partitioned by input partition yet, so two servers
each holding some of the topic's partitions would each aggregate only their share:
wrong answers, silently. Each server's job fails instead, naming the partitions it
holds, the topic's count and the group. One server alone runs the same job to the end
of the data, exactly (docs/scaling.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from tests.integration.kafka_broker import KafkaBroker
from tests.integration.test_kafka_consumer_group import Server, _wait

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 2_000


def _app(broker: KafkaBroker, source: str, sink: str, group: str) -> str:
    return f"""
-- @app: counted
-- @batch_size: 200
CREATE TABLE per_key AS SELECT k PRIMARY KEY, COUNT(*) AS n FROM src GROUP BY k
WITH (
    'src.type' = 'kafka_source', 'src.topic' = '{source}',
    'src.bootstrap.servers' = '{broker.bootstrap}', 'src.group.id' = '{group}',
    'src.session.timeout.ms' = '6000',
    'per_key.type' = 'kafka_sink', 'per_key.topic' = '{sink}',
    'per_key.bootstrap.servers' = '{broker.bootstrap}'
);
"""


def _job(server: Server) -> dict[str, object]:
    """The job as the server shows it; empty while its API is not up yet."""
    try:
        doc: dict[str, object] = httpx.get(
            f"http://127.0.0.1:{server.port}/jobs/per_key", timeout=10
        ).json()
    except httpx.HTTPError:
        return {}
    return doc


def test_a_stateful_job_sharing_its_group_fails_naming_its_partitions(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    source, sink = new_topic("in", partitions=4), new_topic("out")
    group = f"velo-{source}"
    app = tmp_path / "app.sql"
    app.write_text(_app(kafka_broker, source, sink, group))
    kafka_broker.produce(source, [orjson.dumps({"k": i % 7}) for i in range(N)])
    first = Server(app, "node-a", tmp_path)
    servers = [first]
    try:
        _wait(first.assigned, 60, "node-a's partitions", servers)
        _wait(lambda: _job(first).get("records_in") == N, 60, "node-a alone reads all", servers)
        servers.append(Server(app, "node-b", tmp_path))
        _wait(
            lambda: any(_job(s).get("state") == "failed" for s in servers),
            90,
            "a refusal",
            servers,
        )
        failed = [s for s in servers if _job(s).get("state") == "failed"]
        text = " ".join(" ".join(s.text() for s in failed).split())
        assert "this job keeps state" in text, text[-3000:]
        assert f"of the 4 of topic '{source}'" in text
        assert f"consumer group '{group}'" in text
    finally:
        for server in servers:
            server.stop()
