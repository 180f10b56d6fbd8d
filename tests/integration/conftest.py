"""Fixtures for the integration tests that need real servers."""

from __future__ import annotations

import contextlib
import itertools
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.kafka_broker import BrokerMissing, KafkaBroker, RunningJob, tansu_binary

_topic_numbers = itertools.count(1)
QUICKSTART = Path(__file__).resolve().parents[2] / "demo" / "quickstart"


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """A fresh copy of demo/quickstart without outputs, dead letters or generated data."""
    target = tmp_path / "quickstart"
    shutil.copytree(
        QUICKSTART,
        target,
        ignore=shutil.ignore_patterns("output", "velo-data", "measurements*.txt", "__pycache__"),
    )
    return target


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One tansu broker for the session; fails (never skips) when it is not installed."""
    try:
        binary = tansu_binary()
    except BrokerMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    log_path: Path = tmp_path_factory.mktemp("tansu") / "broker.log"
    broker = KafkaBroker(binary, log_path).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def new_topic(kafka_broker: KafkaBroker, request: pytest.FixtureRequest) -> Callable[..., str]:
    """new_topic(stem="t", partitions=1) -> a fresh topic's name, created on the broker."""

    def make(stem: str = "t", partitions: int = 1) -> str:
        test = request.node.name.split("[")[0].removeprefix("test_")[:40]
        name = f"{test}-{stem}-{next(_topic_numbers)}"
        return kafka_broker.create_topic(name, partitions)

    return make


@pytest.fixture(autouse=True)
def _stop_running_jobs() -> Iterator[None]:
    """A test that fails midway still stops the jobs it started."""
    yield
    for job in list(RunningJob.live):
        with contextlib.suppress(AssertionError):
            job.stop()
