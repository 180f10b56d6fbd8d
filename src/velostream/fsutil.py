"""Small durable-filesystem helpers shared by sinks, dead letters and checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_directory"]


def fsync_directory(directory: str | Path) -> None:
    """Make the names in `directory` durable: a new file, a rename, a removal.

    fsync on a file makes its bytes durable, not its name; after a crash, a file
    created or renamed without this may be missing although its data was synced.
    """
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
