"""`velo-cli errors --follow` against a real HTTP server, in a real terminal (tmux).

The server is `create_app(manager)` under uvicorn on loopback; the test records errors
through `ErrorTracker` while the client runs. tmux gives the client a pseudo-terminal
and shows the screen as a person sees it: the live table must update in place (one
table on the screen and in the scrollback, not a new one per poll). `--follow --json`
runs on a plain pipe, as a script would read it.
"""

from __future__ import annotations

import io
import json
import math
import os
import queue
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.text import Text

from tests.integration.server_process import interrupt
from velostream.api import create_app
from velostream.errors import ErrorKind, Stage
from velostream.observability.error_tracker import DeploymentContext
from velostream.observability.manager import ObservabilityManager, StreamingConfig
from velostream.server.processors.error_tracking_helper import ErrorTracker

pytestmark = pytest.mark.integration

NODE = DeploymentContext.with_all("node-7", "stream-eu-7", "eu-west-1", "1.4.2")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "images"
TIMEOUT = 20.0
COLUMNS, LINES = 150, 16
CLI = [sys.executable, "-m", "velostream.cli.velo_cli"]
SEED = [
    ("clean_trades", Stage.PROCESS, ErrorKind.TYPE, "cannot CAST price = 'n/a' to DOUBLE"),
    ("clean_trades", Stage.DESERIALIZE, ErrorKind.PARSE, "expected 4 fields, got 2"),
    (
        "payments",
        Stage.SOURCE,
        ErrorKind.TIMEOUT,
        "broker 127.0.0.1:9092 did not answer within 5000 ms",
    ),
    ("order_totals", Stage.DESERIALIZE, ErrorKind.PARSE, "not a JSON object"),
]
NEW_GROUP = (
    "payments",
    Stage.SINK,
    ErrorKind.IO,
    "cannot write /data/out/payments.csv: No space left on device",
)


def wait_until(
    what: str, check: Callable[[], Any], timeout: float = TIMEOUT, screens: list[str] | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    shown = f"; the screen:\n{screens[0]}" if screens else f" (last: {last!r})"
    pytest.fail(f"timed out waiting for {what}{shown}")


def record(manager: ObservabilityManager, error: tuple[str, Stage, ErrorKind, str]) -> str:
    job, stage, kind, message = error
    fingerprint = ErrorTracker.record_error(manager, job, message, stage=stage, kind=kind)
    assert fingerprint is not None
    return fingerprint


@pytest.fixture(scope="module")
def manager() -> ObservabilityManager:
    manager = ObservabilityManager.from_streaming_config(
        StreamingConfig(node_context=NODE, process_metrics=False), CollectorRegistry()
    )
    manager.initialize()
    return manager


@pytest.fixture(scope="module")
def url(manager: ObservabilityManager) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(manager), log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until("the HTTP server", lambda: server.started)
        for error in SEED:
            for _ in range(3):
                record(manager, error)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _terminal_env() -> dict[str, str]:
    """Our environment without a terminal size: the pane's own size must count.

    (The C environment of a pytest process may hold COLUMNS=80 and LINES=24 that
    `os.environ` does not show; an explicit environment leaves them out.)
    """
    drop = {"COLUMNS", "LINES", "VELO_URL", "VELO_API_TOKEN", "NO_COLOR"}
    return {k: v for k, v in os.environ.items() if k not in drop}


class Tmux:
    """A private tmux server (its own socket) running one command in a fixed-size pane."""

    def __init__(self, socket_path: Path, command: str, columns: int = COLUMNS) -> None:
        tmux = shutil.which("tmux")
        if tmux is None:
            pytest.fail("tmux is missing: `make system-deps` installs Debian's tmux")
        self.base = [tmux, "-S", str(socket_path), "-f", "/dev/null"]
        self.run("new-session", "-d", "-s", "cli", "-x", str(columns), "-y", str(LINES), command)

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [*self.base, *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
            env=_terminal_env(),
        )
        return done.stdout

    def screen(self, *, escapes: bool = False, history: bool = False) -> str:
        """The pane's text once it holds still (not caught halfway through a redraw)."""
        args = ["capture-pane", "-p", "-t", "cli"]
        if escapes:
            args.append("-e")
        if history:
            args += ["-S", "-"]
        previous = self.run(*args)
        for _ in range(40):
            time.sleep(0.03)
            current = self.run(*args)
            if current == previous:
                return current
            previous = current
        return previous

    def wait_for_row(self, job: str, message: str) -> str:
        """The first screen that shows the row of this group."""

        screens = [""]

        def has_row() -> bool:
            screens[0] = self.screen()
            return row_of(screens[0], job, message) is not None

        wait_until(f"the row of {message!r}", has_row, screens=screens)
        return screens[0]

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10)


def row_of(screen: str, job: str, message: str) -> list[str] | None:
    """The cells of the table row with this job and message."""
    for line in screen.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if cells and cells[0] == job and cells[-1].startswith(message[:30]):
            return cells
    return None


def save_terminal(screen_text: str, ansi: str, *directories: Path) -> None:
    """The screen as text and as an SVG picture (rich renders tmux's escapes)."""
    text = "\n".join(line.rstrip() for line in screen_text.rstrip().splitlines()) + "\n"
    picture = Console(
        record=True,
        width=COLUMNS,
        file=io.StringIO(),
        force_terminal=True,
        color_system="truecolor",
    )
    picture.print(Text.from_ansi(ansi.rstrip()), crop=True)
    # Rich names web fonts; the picture must not reach for anything online.
    svg = re.sub(
        r"@font-face\s*\{[^}]*\}", "", picture.export_svg(title="velo-cli errors --follow")
    )
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "errors-follow.txt").write_text(text, encoding="utf-8")
        (directory / "errors-follow.svg").write_text(svg, encoding="utf-8")
        _to_png(directory / "errors-follow.svg", directory / "errors-follow.png")


def _to_png(svg: Path, png: Path) -> None:
    """The SVG as a PNG, by Debian's Chromium (one-shot `--screenshot`), when present."""
    chromium = shutil.which("chromium")
    if chromium is None:
        return
    match = re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg.read_text(encoding="utf-8"))
    assert match is not None
    width, height = (math.ceil(float(v)) for v in match.groups())
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--hide-scrollbars",
                f"--window-size={width},{height}",
                f"--screenshot={png}",
                svg.resolve().as_uri(),
            ],
            capture_output=True,
            timeout=60,
            check=True,
        )


def test_follow_shows_a_live_table_that_updates_in_place(
    url: str, manager: ObservabilityManager, tmp_path: Path
) -> None:
    command = shlex.join([*CLI, "errors", "--follow", "--interval", "0.3", "--url", url])
    tmux = Tmux(tmp_path / "tmux.sock", f"{command}; echo EXIT=$?; sleep 60")
    try:
        first = tmux.wait_for_row("payments", SEED[2][3])
        assert f"Error groups ({len(SEED)} tracked)" in first
        assert row_of(first, "clean_trades", SEED[0][3]) is not None

        # A new group appears at the top, marked new; a repeat raises a count in place.
        record(manager, NEW_GROUP)
        screen = tmux.wait_for_row("payments", NEW_GROUP[3])
        body = [line for line in screen.splitlines() if line.startswith("│")]
        assert row_of(body[0], "payments", NEW_GROUP[3]) is not None  # newest first
        new_row = row_of(screen, "payments", NEW_GROUP[3])
        assert new_row is not None and new_row[2:5] == ["IOError", "1", "new"]
        assert new_row[7:9] == ["node-7", "1.4.2"]

        record(manager, SEED[0])
        raised = wait_until(
            "the count to rise",
            lambda: (r := row_of(tmux.screen(), "clean_trades", SEED[0][3])) and r[3] == "4" and r,
        )
        assert raised[:3] == ["clean_trades", "process", "TypeError"]

        # Redrawn in place: one table on the screen and in the whole scrollback.
        ansi = tmux.screen(escapes=True)
        screen = Text.from_ansi(ansi).plain
        assert screen.count("Error groups (") == 1
        assert tmux.screen(history=True).count("Error groups (") == 1
        assert f"Error groups ({len(SEED) + 1} tracked)" in screen
        # docs/images is refreshed only on request, so a test run leaves the tree clean.
        docs = [DOCS] if os.environ.get("VELO_UPDATE_SCREENSHOTS") else []
        save_terminal(screen, ansi, *docs, tmp_path)

        tmux.run("send-keys", "-t", "cli", "C-c")
        wait_until("a clean exit", lambda: "EXIT=0" in tmux.screen())
    finally:
        tmux.close()


LONG = (
    "clean_trades",
    Stage.PROCESS,
    ErrorKind.TYPE,
    "cannot CAST notional = 'twelve thousand and a half' to DECIMAL(18, 2) in "
    + "CASE WHEN quantity > 0 THEN price * quantity ELSE 0 END " * 4
    + "\nsecond line of the message",
)


def test_errors_fit_80_columns_one_line_per_group(
    url: str, manager: ObservabilityManager, tmp_path: Path
) -> None:
    """In an 80-column terminal every group is one line, cut with an ellipsis; piped,
    or with --wide, the message is whole."""
    record(manager, LONG)
    command = shlex.join([*CLI, "errors", "--url", url])
    tmux = Tmux(tmp_path / "tmux.sock", f"{command}; echo EXIT=$?; sleep 60", columns=80)
    try:
        wait_until("the table", lambda: "EXIT=0" in tmux.screen(history=True))
        screen = tmux.screen(history=True)
    finally:
        tmux.close()
    lines = screen.rstrip().splitlines()
    assert all(len(line) <= 80 for line in lines), screen
    assert sum(line.startswith("┃") for line in lines) == 1, screen  # the header: one line
    body = [line for line in lines if line.startswith("│")]
    groups = len(httpx.get(f"{url}/errors").json()["groups"])
    assert len(body) == groups, screen  # no row takes a second line
    for line in body:
        cells = [c.strip() for c in line.split("│")[1:-1]]
        assert cells[0] and cells[1] and cells[3].isdigit(), line  # no continuation row
    long_row = next(line for line in body if line.split("│")[4].strip() == "1")
    assert "cannot CAST notional = " in long_row
    assert long_row.rstrip(" │").endswith("…"), long_row

    for args in (["errors", "--url", url], ["errors", "--wide", "--url", url]):
        piped = subprocess.run(
            [*CLI, *args], capture_output=True, text=True, timeout=30, env=_terminal_env()
        )
        assert piped.returncode == 0, piped.stderr
        row = next(line for line in piped.stdout.splitlines() if "twelve" in line)
        assert LONG[3].split("\n")[0] in row  # whole, on its row
        assert "second line of the message" in piped.stdout


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _next_group(lines: queue.Queue[str], fingerprint: str) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            doc: dict[str, Any] = json.loads(lines.get(timeout=0.5))
        except queue.Empty:
            continue
        if doc["fingerprint"] == fingerprint:
            return doc
    pytest.fail(f"no line for group {fingerprint}")


def test_follow_json_streams_one_line_per_new_or_changed_group(
    url: str, manager: ObservabilityManager
) -> None:
    process = subprocess.Popen(
        [*CLI, "errors", "--follow", "--json", "--interval", "0.2", "--url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = _lines(process)
        # First the groups there are, oldest first (the whole of the seed here).
        existing = [json.loads(lines.get(timeout=TIMEOUT)) for _ in range(4)]
        assert {g["job"] for g in existing} >= {"clean_trades", "payments", "order_totals"}
        assert [g["seq"] for g in existing] == sorted(g["seq"] for g in existing)

        new = ("order_totals", Stage.SINK, ErrorKind.CONNECTION, "sink connection reset")
        fingerprint = record(manager, new)
        doc = _next_group(lines, fingerprint)
        assert (doc["job"], doc["stage"], doc["kind"], doc["count"]) == (
            "order_totals",
            "sink",
            "ConnectionError",
            1,
        )
        assert (doc["node_id"], doc["region"], doc["version"]) == ("node-7", "eu-west-1", "1.4.2")
        record(manager, new)
        assert _next_group(lines, fingerprint)["count"] == 2
        assert lines.empty()  # nothing else changed, so nothing else was written
    finally:
        interrupt(process, 10)
        assert process.stderr is not None
        stderr = process.stderr.read()
        process.stderr.close()
        if process.stdout is not None:
            process.stdout.close()
    assert process.returncode == 0, stderr


def test_follow_stops_with_the_reason_when_it_cannot_start(url: str) -> None:
    refused = subprocess.run(
        [*CLI, "errors", "--follow", "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2 and "cannot reach" in refused.stderr
    bad_stage = subprocess.run(
        [*CLI, "errors", "--follow", "--json", "--stage", "nonsense", "--url", url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad_stage.returncode == 1 and "Unknown stage" in bad_stage.stderr
    assert bad_stage.stdout == ""
