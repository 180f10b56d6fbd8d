"""Fixtures of the monitoring bundle's tests."""

from __future__ import annotations

import pytest

from tests.unit.monitoring.assets import Exported, exported_metrics


@pytest.fixture(scope="session")
def exported() -> Exported:
    """What a real server's /metrics exposes, every family populated once."""
    return exported_metrics()
