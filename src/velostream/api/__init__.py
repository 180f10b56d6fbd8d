"""The HTTP API and the web console."""

from velostream.api.app import create_app

__all__ = ["create_app"]
