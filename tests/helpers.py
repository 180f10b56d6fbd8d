"""Constants and small registry readers shared by the unit and integration tests."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry

from velostream.observability.error_tracker import DeploymentContext
from velostream.observability.manager import ObservabilityManager

# A fixed node identity, so no test depends on this machine's HOSTNAME.
NODE_CONTEXT = DeploymentContext.with_all("node-1", "Test Node", "eu-west-1", "9.9.9")

# (job SQL, why it is refused): SQL that would fail only once rows flow, refused at
# validation (issue 12, item 9).
RUN_TIME_FAILURES = [
    ("SELECT U&'\\0041' AS a FROM src", "Unicode escape strings"),
    ("SELECT which_secret('s3://b/k', 's3') AS s FROM src", "secrets are not available"),
    ("SELECT id FROM src WHERE checkpoint() IS NULL", "does not manage its database"),
    ("SELECT nextval('seq') AS n FROM src", "sequences are not available"),
]

ManagerFactory = Callable[..., ObservabilityManager]


class FakeClock:
    """Stands in for the `time` module: wall and monotonic time, frozen until moved."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


def message_series(registry: CollectorRegistry) -> list[tuple[str, float]]:
    """Every `velo_error_message` sample as (message label, value), duplicates kept."""
    return [
        (sample.labels["message"], sample.value)
        for family in registry.collect()
        if family.name == "velo_error_message"
        for sample in family.samples
    ]


def series_of_job(registry: CollectorRegistry, job: str) -> list[str]:
    """Names of every sample whose `job` label is `job`."""
    return [
        sample.name
        for family in registry.collect()
        for sample in family.samples
        if sample.labels.get("job") == job
    ]


def duplicate_series(exposition: str) -> list[str]:
    """Sample lines of a text exposition whose name and labels appear more than once."""
    seen: set[str] = set()
    duplicates = []
    for line in exposition.splitlines():
        if not line or line.startswith("#"):
            continue
        series = line.rsplit(" ", 1)[0]
        if series in seen:
            duplicates.append(series)
        seen.add(series)
    return duplicates
