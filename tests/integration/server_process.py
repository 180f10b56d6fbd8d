"""Real `velo-sql` / `velo-cli` processes for the process-level server tests.

`launcher` starts servers (`velo-sql server`, `velo-sql deploy-app`) as subprocesses on
free loopback ports, each with its own log file, and kills whatever is still alive at
the end of the test — by process id, never by name. `VeloServer` waits for /health,
talks to the API with httpx and sends the server signals; `velo_cli` runs the client.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import pytest

T = TypeVar("T")

BIN = Path(sys.executable).parent
START_TIMEOUT = 30.0
# Variables a developer's shell may set that would change what the processes do.
_ISOLATED = ("VELO_API_TOKEN", "VELO_URL", "VELO_HOST", "VELO_PORT", "VELO_DATA_DIR")


def console_script(name: str) -> str:
    """The venv's console script `name` (velo-sql, velo-cli)."""
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; run `make install`")
    return found


def velo_sql(*args: str, cwd: Path, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run `velo-sql` in `cwd` and return its exit code and output."""
    return subprocess.run(
        [console_script("velo-sql"), *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _ISOLATED}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    env.update(extra or {})
    return env


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 30.0, every: float = 0.02
) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def interrupt(process: subprocess.Popen[Any], timeout: float = 30.0) -> int:
    """Ctrl-C `process` (a foreground `velo-sql run`) and wait for it; killed if it has
    not ended within `timeout` seconds. Its exit code."""
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=10)


class VeloServer:
    """One `velo-sql` server process and an HTTP client for its API."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        port: int,
        log_path: Path,
        env: Mapping[str, str],
        connect_host: str = "127.0.0.1",
        token: str | None = None,
    ) -> None:
        self.args = list(args)
        self.port = port
        self.url = f"http://{connect_host}:{port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in cleanup()
        # Its own session: a signal to the test run does not reach it, and it has no
        # children, so ending `self.process` by its id ends everything it started.
        self.process = subprocess.Popen(
            self.args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
        )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=10.0)

    # --- process ------------------------------------------------------------

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> VeloServer:
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                pytest.fail(
                    f"server exited with {self.process.returncode} before it was healthy:\n"
                    + self.log()
                )
            try:
                if self.http.get("/health", timeout=1.0).status_code in (200, 503):
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not healthy after {timeout:.0f}s:\n{self.log()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: a crash, no shutdown code runs."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then the exit code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"server still running {timeout:.0f}s after SIGTERM:\n{self.log()}")

    def wait_exit(self, timeout: float = 60.0) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"server still running after {timeout:.0f}s:\n{self.log()}")

    def cleanup(self) -> None:
        self.http.close()
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self._log.close()

    # --- API ----------------------------------------------------------------

    def deploy(self, sql: str) -> list[str]:
        response = self.http.post("/jobs", json={"sql": sql})
        assert response.status_code == 201, f"{response.status_code}: {response.text}"
        names: list[str] = response.json()["jobs"]
        return names

    def job(self, name: str) -> dict[str, Any]:
        response = self.http.get(f"/jobs/{name}")
        assert response.status_code == 200, f"{response.status_code}: {response.text}"
        doc: dict[str, Any] = response.json()
        return doc

    def jobs(self) -> dict[str, dict[str, Any]]:
        return {j["name"]: j for j in self.http.get("/jobs").json()["jobs"]}

    def wait_state(self, name: str, *states: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until job `name` is in one of `states`; fail early on another end state."""

        def probe() -> dict[str, Any] | None:
            doc = self.job(name)
            if doc["state"] in states:
                return doc
            ended = ("completed", "stopped", "failed")
            if doc["state"] in ended:
                pytest.fail(f"job {name} ended {doc['state']} ({doc['reason']}):\n{self.log()}")
            return None

        return wait_for(f"job {name} to be {'/'.join(states)}", probe, timeout, every=0.05)


class Launcher:
    """Starts `velo-sql` servers for one test and ends them all afterwards."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: list[VeloServer] = []

    def server(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        token: str | None = None,
        wait: bool = True,
        allow: Sequence[Path] | None = None,
    ) -> VeloServer:
        """`velo-sql server` on a free port with `data_dir`; healthy unless `wait` is off."""
        port = free_port()
        command = [
            console_script("velo-sql"),
            "server",
            "--host",
            host,
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--shutdown-deadline",
            "30",
            *self._roots(allow),
            *args,
        ]
        return self._start(command, port, env, token, wait)

    def deploy_app(
        self,
        app: Path,
        data_dir: Path,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        allow: Sequence[Path] | None = None,
    ) -> VeloServer:
        """`velo-sql deploy-app --file app` on a free port (not waited for)."""
        port = free_port()
        command = [
            console_script("velo-sql"),
            "deploy-app",
            "--file",
            str(app),
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            *self._roots(allow),
            *args,
        ]
        return self._start(command, port, env, None, wait=False)

    def _roots(self, allow: Sequence[Path] | None) -> list[str]:
        """`--allow-path` for `allow`, by default the test session's temporary folder,
        where tests keep their sources and sinks (the server's own default is its data
        dir and working directory)."""
        folders = allow if allow is not None else [self.workdir.parent]
        return [arg for folder in folders for arg in ("--allow-path", str(folder))]

    def _start(
        self,
        command: list[str],
        port: int,
        env: Mapping[str, str] | None,
        token: str | None,
        wait: bool,
    ) -> VeloServer:
        log_path = self.workdir / f"server-{len(self.servers) + 1}.log"
        server = VeloServer(command, port=port, log_path=log_path, env=clean_env(env), token=token)
        self.servers.append(server)
        return server.wait_healthy() if wait else server

    def cleanup(self) -> None:
        for server in self.servers:
            server.cleanup()


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    starter = Launcher(tmp_path)
    try:
        yield starter
    finally:
        starter.cleanup()


def velo_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run `velo-cli` and return its exit code and output."""
    return subprocess.run(
        [console_script("velo-cli"), *args],
        capture_output=True,
        text=True,
        env=clean_env(env),
        timeout=timeout,
        check=False,
    )


# --- data -------------------------------------------------------------------------

SYMBOLS = ("AAPL", "GOOG", "MSFT", "AMZN", "NVDA", "META", "TSLA")
EPOCH = datetime(2024, 1, 1)


def trade(i: int) -> tuple[int, str, int, int]:
    """Row `i` of the generated trades: id, symbol, qty, and seconds since EPOCH (its ts)."""
    return i, SYMBOLS[i % len(SYMBOLS)], i % 97 + 1, i


def write_trades(path: Path, rows: int) -> Path:
    """A CSV of `rows` trades (`id,symbol,qty,ts`), ids 0..rows-1 in order, one a second."""
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write("id,symbol,qty,ts\n")
        for i in range(rows):
            _, symbol, qty, seconds = trade(i)
            ts = (EPOCH + timedelta(seconds=seconds)).isoformat(sep=" ")
            out.write(f"{i},{symbol},{qty},{ts}\n")
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as src:
        return list(csv.DictReader(src))


def read_ids(path: Path) -> list[int]:
    """The first (`id`) column of an output CSV; a torn or malformed line fails the test."""
    with open(path, encoding="utf-8") as src:
        header = src.readline()
        assert header.startswith("id,"), f"{path} starts with {header!r}"
        fields = header.count(",")
        lines = src.read().splitlines()
    bad = [line for line in lines if line.count(",") != fields or not line.split(",")[0].isdigit()]
    assert not bad, f"{len(bad)} malformed lines in {path}, first: {bad[0]!r}"
    return [int(line.split(",", 1)[0]) for line in lines]


def checkpoint(data_dir: Path, job: str) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((data_dir / "checkpoints" / f"{job}.json").read_bytes())
    return doc
