"""Batch processors and the error path shared by every stage."""

from velostream.server.processors.error_tracking_helper import ErrorTracker

__all__ = ["ErrorTracker"]
