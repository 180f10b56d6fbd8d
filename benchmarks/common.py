"""What the server benchmarks share: a free loopback port and the venv's `velo-sql`."""

from __future__ import annotations

import socket
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def velo_sql() -> str:
    """The `velo-sql` beside this interpreter, else the one on PATH."""
    script = Path(sys.executable).parent / "velo-sql"
    return str(script) if script.exists() else "velo-sql"
