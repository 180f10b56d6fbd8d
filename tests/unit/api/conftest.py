"""Fixtures for the job API tests (see tests/jobserver.py)."""

from tests.jobserver import faults, harness

__all__ = ["faults", "harness"]
