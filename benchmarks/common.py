"""What the server benchmarks share: a free loopback port, the venv's `velo-sql`, and a
server process stopped as an operator would."""

from __future__ import annotations

import signal
import socket
import subprocess
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


def stop_server(*processes: subprocess.Popen[bytes]) -> None:
    """SIGTERM each live process (a graceful shutdown), then wait; kill one that takes
    longer than a minute."""
    live = [p for p in processes if p.poll() is None]
    for process in live:
        process.send_signal(signal.SIGTERM)
    for process in live:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
