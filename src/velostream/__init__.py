"""Velostream for Python: a streaming SQL job server whose errors never vanish."""

__version__ = "0.1.0"

__all__ = ["__version__"]
