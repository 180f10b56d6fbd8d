"""An in-process job server for tests: the server, its HTTP app, fault-injecting
connectors and readers for the five places an error must reach.

`harness` (a fixture, imported by the conftests that use it) builds a
`StreamJobServer` on a private registry and a temp data dir, and shuts it down after
the test. The fault-injecting connectors replace the built-in `memory_source`,
`memory_sink` and `file_sink` types for the test only (`faults` fixture), and read
their faults from WITH properties, so a test's SQL says what goes wrong:

- sink: `fail_writes` / `fail_flushes` = N (the first N calls raise), `crash` = true
  (every write raises); for `file_sink`, a failing write first writes half its rows.
- source: `fail_reads` / `fail_commits` = N.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry

from tests.helpers import NODE_CONTEXT
from velostream.datasource import registry as connector_registry
from velostream.datasource.file.sink import FileSink
from velostream.datasource.memory import MemorySink, MemorySource
from velostream.datasource.traits import SourceBatch
from velostream.errors import SinkError, SourceError
from velostream.observability.logging import ERROR_LOGGER
from velostream.observability.manager import ObservabilityManager, StreamingConfig
from velostream.server.stream_job_server import StreamJobServer

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

__all__ = [
    "FaultyFileSink",
    "FaultySink",
    "FaultySource",
    "Harness",
    "app_sql",
    "faults",
    "harness",
    "read_jsonl",
    "write_jsonl",
]

TOKEN = "s3cret-token"


def _count(props: Mapping[str, str], key: str) -> int:
    return int(props.get(key, "0"))


class FaultySink(MemorySink):
    """`memory_sink` whose first `fail_writes` writes and `fail_flushes` flushes raise."""

    def __init__(self, name: str, properties: Mapping[str, str] | None = None) -> None:
        super().__init__(name, properties)
        self.fail_writes = _count(self.properties, "fail_writes")
        self.fail_flushes = _count(self.properties, "fail_flushes")
        self.crash = self.properties.get("crash") == "true"
        self.write_calls = 0

    def write(self, table: pa.Table) -> None:
        self.write_calls += 1
        if self.crash:
            raise SinkError(f"sink '{self.name}': the disk caught fire", source=self.name)
        if self.fail_writes > 0:
            self.fail_writes -= 1
            raise SinkError(f"sink '{self.name}': broker unavailable (transient)", source=self.name)
        super().write(table)

    def flush(self) -> None:
        if self.fail_flushes > 0:
            self.fail_flushes -= 1
            raise SinkError(f"sink '{self.name}': flush timed out", source=self.name)
        super().flush()


class FaultyFileSink(FileSink):
    """`file_sink` whose first `fail_writes` writes write half their rows, then raise."""

    def __init__(self, name: str, properties: Mapping[str, str]) -> None:
        props = dict(properties)
        self.fail_writes = _count(props, "fail_writes")
        self.failures = 0
        super().__init__(name, {k: v for k, v in props.items() if k != "fail_writes"})

    def write(self, table: pa.Table) -> None:
        if self.fail_writes > 0:
            self.fail_writes -= 1
            self.failures += 1
            super().write(table.slice(0, max(1, table.num_rows // 2)))
            raise SinkError(f"sink '{self.name}': connection reset mid-batch", source=self.name)
        super().write(table)


class FaultySource(MemorySource):
    """`memory_source` whose first `fail_reads` reads and `fail_commits` commits raise."""

    def __init__(self, name: str, properties: Mapping[str, str] | None = None, **kw: Any) -> None:
        super().__init__(name, properties, **kw)
        self.fail_reads = _count(self.properties, "fail_reads")
        self.fail_commits = _count(self.properties, "fail_commits")
        self.reads = 0

    def read_batch(self, max_records: int) -> SourceBatch | None:
        if self.fail_reads > 0:
            self.fail_reads -= 1
            raise SourceError(f"source '{self.name}': connection refused", source=self.name)
        batch = super().read_batch(max_records)
        if batch is not None and batch.num_records:
            self.reads += 1
        return batch

    def commit(self, position: Any) -> None:
        if self.fail_commits > 0:
            self.fail_commits -= 1
            raise SourceError(f"source '{self.name}': offset commit rejected", source=self.name)
        super().commit(position)


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route `memory_source`, `memory_sink` and `file_sink` to the faulty doubles."""
    monkeypatch.setitem(connector_registry._extra_sources, "memory_source", FaultySource)
    monkeypatch.setitem(connector_registry._extra_sinks, "memory_sink", FaultySink)
    monkeypatch.setitem(connector_registry._extra_sinks, "file_sink", FaultyFileSink)


def app_sql(
    name: str = "out",
    *,
    select: str = "SELECT * FROM src",
    source: Mapping[str, str] | None = None,
    sink: Mapping[str, str] | None = None,
    job: Mapping[str, str] | None = None,
    version: str | None = "1",
    app: str = "test_app",
    mode: str | None = None,
    emit: str = "EMIT CHANGES",
) -> str:
    """One statement reading `src` into `name`; properties without their prefix."""
    source = source or {"type": "memory_source", "rows": "[]"}
    sink = sink or {"type": "memory_sink"}
    props = [f"'src.{k}' = '{_quote(v)}'" for k, v in source.items()]
    props += [f"'{name}.{k}' = '{_quote(v)}'" for k, v in sink.items()]
    props += [f"'{k}' = '{_quote(v)}'" for k, v in (job or {}).items()]
    head = [f"-- @app: {app}"]
    if version is not None:
        head.append(f"-- @version: {version}")
    if mode is not None:
        head.append(f"-- @job_mode: {mode}")
    body = ",\n    ".join(props)
    return (
        "\n".join(head) + f"\nCREATE STREAM {name} AS\n{select}\n{emit}\nWITH (\n    {body}\n);\n"
    )


def _quote(value: str) -> str:
    return value.replace("'", "''")


def rows_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows)


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Harness:
    """A job server on a private registry, with its HTTP app and readers for tests."""

    manager: ObservabilityManager
    registry: CollectorRegistry
    server: StreamJobServer
    data_dir: Path
    token: str | None = None
    error_records: list[logging.LogRecord] = field(default_factory=list)
    server_records: list[logging.LogRecord] = field(default_factory=list)
    _client: TestClient | None = None

    # --- jobs --------------------------------------------------------------------

    def deploy(self, sql: str) -> list[str]:
        return self.server.deploy(sql)

    def status(self, name: str) -> dict[str, Any]:
        return self.server.get_job_status(name)

    def state(self, name: str) -> str:
        return str(self.status(name)["state"])

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.01)

    def wait_state(self, name: str, *states: str, timeout: float = 15.0) -> dict[str, Any]:
        self.wait_for(
            lambda: self.state(name) in states,
            timeout,
            f"job {name!r} to be {'/'.join(states)} (is {self.state(name)})",
        )
        return self.status(name)

    # --- the five places an error reaches -------------------------------------------

    def sample(self, metric: str, **labels: str) -> float:
        value = self.registry.get_sample_value(metric, labels)
        return 0.0 if value is None else value

    def job_errors(self, job: str, stage: str, kind: str | None = None) -> float:
        """`velo_job_errors_total` of a job and stage, summed over kinds unless given."""
        total = 0.0
        for family in self.registry.collect():
            for s in family.samples:
                if s.name != "velo_job_errors_total":
                    continue
                same = s.labels.get("job") == job and s.labels.get("stage") == stage
                if same and (kind is None or s.labels.get("kind") == kind):
                    total += s.value
        return total

    def status_metric(self, job: str) -> str | None:
        """The state `velo_job_status` marks with 1."""
        on = [
            s.labels["status"]
            for family in self.registry.collect()
            for s in family.samples
            if s.name == "velo_job_status" and s.labels.get("job") == job and s.value == 1
        ]
        assert len(on) <= 1, on
        return on[0] if on else None

    def logged(self, stage: str, job: str | None = None) -> list[logging.LogRecord]:
        return [
            r
            for r in self.error_records
            if getattr(r, "stage", None) == stage
            and (job is None or getattr(r, "job", None) == job)
        ]

    def catalog(self, stage: str, job: str | None = None) -> list[dict[str, Any]]:
        params = {"stage": stage, "limit": "1000"}
        if job is not None:
            params["job"] = job
        response = self.client.get("/errors", params=params)
        assert response.status_code == 200, response.text
        groups: list[dict[str, Any]] = response.json()["groups"]
        return groups

    def buffered(self, needle: str, job: str | None = None) -> list[dict[str, Any]]:
        params = {"job": job} if job is not None else {}
        response = self.client.get("/errors/recent", params=params)
        assert response.status_code == 200, response.text
        return [e for e in response.json()["entries"] if needle in e["message"]]

    # --- HTTP --------------------------------------------------------------------

    @property
    def client(self) -> TestClient:
        if self._client is None:
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", message="Using `httpx` with `starlette.testclient`"
                )
                from fastapi.testclient import TestClient

            from velostream.api.app import create_app

            app = create_app(self.manager, self.server, token=self.token)
            self._client = TestClient(app)
        return self._client

    def close(self) -> None:
        self.server.shutdown(10.0)
        if self._client is not None:
            self._client.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """A job server with a private registry and data dir, shut down after the test."""
    registry = CollectorRegistry()
    config = StreamingConfig(
        error_buffer_size=50,
        log_throttle_seconds=0.0,
        process_metrics=False,
        node_context=NODE_CONTEXT,
    )
    manager = ObservabilityManager.from_streaming_config(config, registry)
    manager.initialize()
    data_dir = tmp_path / "velo-data"
    server = StreamJobServer(manager, data_dir, max_jobs=10)
    h = Harness(manager, registry, server, data_dir)
    errors, jobs = _Records(), _Records()
    error_logger = logging.getLogger(ERROR_LOGGER)
    server_logger = logging.getLogger("velostream.server")
    error_logger.addHandler(errors)
    server_logger.addHandler(jobs)
    levels = error_logger.level, server_logger.level
    error_logger.setLevel(logging.DEBUG)
    server_logger.setLevel(logging.DEBUG)
    h.error_records, h.server_records = errors.records, jobs.records
    try:
        yield h
    finally:
        h.close()
        error_logger.removeHandler(errors)
        server_logger.removeHandler(jobs)
        error_logger.setLevel(levels[0])
        server_logger.setLevel(levels[1])


# The poison lines of `poison_lines` (1-based): not JSON, and a `v` no CAST accepts.
# With batches of 4 lines the first batch is clean and each later one holds one of each.
BROKEN_JSON = (5, 10)
BAD_CAST = (7, 11)


def poison_lines(n: int = 12) -> list[str]:
    """`n` JSON lines `{"id": i, "v": "<i>"}`, with BROKEN_JSON and BAD_CAST poisoned."""
    lines = []
    for i in range(1, n + 1):
        if i in BROKEN_JSON:
            lines.append(f'{{"id": {i}, "v": ')
        elif i in BAD_CAST:
            lines.append(json.dumps({"id": i, "v": f"x{i}"}))
        else:
            lines.append(json.dumps({"id": i, "v": str(i)}))
    return lines
