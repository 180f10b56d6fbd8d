"""Fixtures for the in-process job-server tests (see tests/jobserver.py)."""

from tests.jobserver import faults, harness

__all__ = ["faults", "harness"]
