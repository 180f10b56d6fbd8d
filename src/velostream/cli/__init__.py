"""Command-line tools: `velo-sql` (server, run, validate) and `velo-cli` (client)."""

from pathlib import Path

__all__: list[str] = []

DATA_DIR = Path("./velo-data")
"""Where `velo-sql` keeps checkpoints and dead letters unless told (`--data-dir`,
`VELO_DATA_DIR`)."""
