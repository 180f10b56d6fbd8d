"""The web console in a real headless Chromium (Debian's), against a real job server.

A `StreamJobServer` runs two applications deployed through `POST /jobs`: a CSV job
and a JSON-lines job, both following their files (`watch`) with `SendToDLQ`. Their
poison lines make error groups and dead letters; more poison lines appended while the
page is open must show up without a reload. Chromium is driven over the Chrome
DevTools Protocol on a pipe (`--remote-debugging-pipe`: file descriptors 3 and 4, one
JSON message per NUL-terminated frame), which needs no port and no websocket library.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry

from tests.integration.kafka_broker import KafkaBroker
from velostream.api import create_app
from velostream.errors import ErrorKind, Stage
from velostream.observability.manager import ObservabilityManager, StreamingConfig
from velostream.server.processors.error_tracking_helper import ErrorTracker
from velostream.server.stream_job_server import StreamJobServer

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
TOKEN = "console-test-token"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "console.png"
TIMEOUT = 20.0
NODE_ENV = {"NODE_ID": "node-7", "NODE_NAME": "stream-eu-7", "REGION": "eu-west-1"}

TRADES_SQL = """\
-- @app: trading
-- @version: 1.4.2
CREATE STREAM clean_trades AS
SELECT id, symbol, CAST(price AS DOUBLE) * quantity AS notional
FROM trades
EMIT CHANGES
WITH (
    'trades.type' = 'file_source',
    'trades.path' = '{dir}/trades.csv',
    'trades.format' = 'csv',
    'trades.watch' = 'true',
    'trades.polling_interval' = '100ms',
    'clean_trades.type' = 'file_sink',
    'clean_trades.path' = '{dir}/clean_trades.csv',
    'clean_trades.format' = 'csv',
    'failure_strategy' = 'SendToDLQ'
);
"""
ORDERS_SQL = """\
-- @app: orders
-- @version: 2.0.1
CREATE STREAM order_totals AS
SELECT order_id, amount * 2 AS doubled
FROM orders
EMIT CHANGES
WITH (
    'orders.type' = 'file_source',
    'orders.path' = '{dir}/orders.jsonl',
    'orders.format' = 'jsonl',
    'orders.watch' = 'true',
    'orders.polling_interval' = '100ms',
    'order_totals.type' = 'file_sink',
    'order_totals.path' = '{dir}/order_totals.jsonl',
    'order_totals.format' = 'jsonl',
    'failure_strategy' = 'SendToDLQ'
);
"""
POISON_TRADE = "3,MSFT,not-a-price,50"
REPLAY_STATUS = "document.getElementById('replay-status').textContent"
REPLAY_ENABLED = ("the replay button", "!document.getElementById('replay').disabled")


def wait_until(what: str, check: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


# --- Chromium over the DevTools protocol -----------------------------------------------------


class CdpError(Exception):
    pass


class Chromium:
    """A headless Chromium process and its DevTools pipe."""

    def __init__(self, profile: Path, log: Path) -> None:
        cmd_read, self._cmd_write = os.pipe()
        self._events_read, events_write = os.pipe()
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--mute-audio",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        # bash (dash takes one-digit descriptors only) puts the pipe ends where Chromium
        # expects them: commands in on 3, replies and events out on 4.
        redirect = f'exec "$@" 3<&{cmd_read} 4>&{events_write} {cmd_read}<&- {events_write}>&-'
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            ["/bin/bash", "-c", redirect, "bash", CHROMIUM, *flags],
            pass_fds=(cmd_read, events_write),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        os.close(cmd_read)
        os.close(events_write)
        self._next_id = 0
        self._results: dict[int, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._closed = False
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        pending = bytearray()
        while True:
            try:
                chunk = os.read(self._events_read, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                break
            start = len(pending)
            pending += chunk
            while (end := pending.find(b"\0", start)) >= 0:
                message = json.loads(bytes(pending[:end]))
                del pending[: end + 1]
                start = 0
                with self._cond:
                    if "id" in message:
                        self._results[message["id"]] = message
                    else:
                        self.events.append(message)
                    self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        with self._cond:
            self._next_id += 1
            call_id = self._next_id
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._cmd_write, data) :]
        with self._cond:
            done = self._cond.wait_for(
                lambda: call_id in self._results or self._closed, timeout=TIMEOUT
            )
            if not done or call_id not in self._results:
                raise CdpError(f"{method}: no answer from Chromium")
            reply = self._results.pop(call_id)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def new_page(self) -> Page:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        return Page(self, target, session["sessionId"])

    def close(self) -> None:
        with contextlib.suppress(CdpError, OSError):
            self.call("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        os.close(self._cmd_write)
        self._reader.join(timeout=5)
        os.close(self._events_read)
        self._log.close()


_KEYS = {
    "Tab": 9,
    "Enter": 13,
    "Escape": 27,
    "End": 35,
    "Home": 36,
    "ArrowLeft": 37,
    "ArrowUp": 38,
    "ArrowRight": 39,
    "ArrowDown": 40,
}


class Page:
    """One tab, attached with a flat session."""

    def __init__(self, browser: Chromium, target: str, session: str) -> None:
        self.browser = browser
        self.target = target
        self.expected_errors: list[str] = []
        self.session = session
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.set_viewport(1400, 1000)

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.call(method, params, self.session)

    def expect_error(self, text: str) -> None:
        """A browser error the test provokes (a refused request): not a failure."""
        self.expected_errors.append(text)

    def set_viewport(self, width: int, height: int) -> None:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def goto(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})
        wait_until(
            f"{url} to load",
            lambda: self.evaluate("document.readyState === 'complete' && !!window.veloConsole"),
        )

    def reload(self) -> None:
        load_id = self.evaluate("window.veloConsole.loadId")
        self.call("Page.reload")
        wait_until(
            "the page to reload",
            lambda: self.evaluate(
                "document.readyState === 'complete' && !!window.veloConsole && "
                f"window.veloConsole.loadId !== {json.dumps(load_id)}"
            ),
        )

    def evaluate(self, expression: str) -> Any:
        reply = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in reply:
            raise CdpError(f"{expression!r} threw {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_for(
        self, what: str, expression: str, timeout: float = TIMEOUT, *, show: str | None = None
    ) -> Any:
        """Wait until `expression` is truthy; on a timeout, say what `show` evaluates to."""
        try:
            return wait_until(what, lambda: self.evaluate(expression), timeout)
        except pytest.fail.Exception:
            if show is None:
                raise
            pytest.fail(f"timed out waiting for {what}; {show} = {self.evaluate(show)!r}")

    def press(self, key: str) -> None:
        code = _KEYS[key]
        text = {"Enter": "\r"}.get(key)
        down: dict[str, Any] = {
            "type": "keyDown" if text else "rawKeyDown",
            "key": key,
            "code": key,
            "windowsVirtualKeyCode": code,
        }
        if text:
            down["text"] = text
        self.call("Input.dispatchKeyEvent", down)
        self.call(
            "Input.dispatchKeyEvent",
            {"type": "keyUp", "key": key, "code": key, "windowsVirtualKeyCode": code},
        )

    def type_text(self, text: str) -> None:
        self.call("Input.insertText", {"text": text})

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element (scrolled into view first)."""
        self.scroll_into_view(selector)
        box = self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1},
            )

    def scroll_into_view(self, selector: str) -> None:
        self.evaluate(
            f"document.querySelector({json.dumps(selector)}).scrollIntoView({{block: 'center'}})"
        )

    def screenshot(self, *paths: Path) -> None:
        size = self.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
        )
        shot = self.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1},
            },
        )
        data = base64.b64decode(shot["data"])
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def errors(self) -> list[str]:
        """Uncaught exceptions, console errors and browser log errors seen so far."""
        found = []
        for event in list(self.browser.events):
            if event.get("sessionId") != self.session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(str(params["exceptionDetails"]))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                found.append(str(params.get("args")))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"{params['entry']['text']} {params['entry'].get('url', '')}")
        return [e for e in found if not any(x in e for x in self.expected_errors)]


# --- the server under test --------------------------------------------------------------------


@dataclass
class Live:
    url: str
    manager: ObservabilityManager
    jobs: StreamJobServer
    data: Path

    def append(self, name: str, *lines: str) -> None:
        with (self.data / name).open("a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))

    def group(self, job: str, stage: str) -> dict[str, Any] | None:
        groups = httpx.get(f"{self.url}/errors", params={"job": job, "stage": stage}).json()
        return next(iter(groups["groups"]), None)


def _serve(app: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until("the HTTP server", lambda: server.started)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data = tmp_path_factory.mktemp("console-data")
    (data / "trades.csv").write_text(
        "id,symbol,price,quantity\n1,AAPL,150.25,100\n2,GOOGL,2750.5,10\n"
        f"{POISON_TRADE}\n4,AAPL,151.0,200\n"
    )
    (data / "orders.jsonl").write_text(
        '{"order_id": 1, "amount": 10.5}\n{"order_id": 2, "amount": \n'
        '{"order_id": 3, "amount": 7}\n'
    )
    with pytest.MonkeyPatch.context() as env:
        for name, value in NODE_ENV.items():
            env.setenv(name, value)
        manager = ObservabilityManager.from_streaming_config(
            StreamingConfig(error_catalog_size=2000, process_metrics=False), CollectorRegistry()
        )
        manager.initialize()
        jobs = StreamJobServer(manager, data / "server")
        server, thread, url = _serve(create_app(manager, jobs, token=TOKEN))
        try:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            for sql in (TRADES_SQL, ORDERS_SQL):
                reply = httpx.post(f"{url}/jobs", json={"sql": sql.format(dir=data)}, headers=auth)
                assert reply.status_code == 201, reply.text
            live = Live(url, manager, jobs, data)
            wait_until("the first dead letters", lambda: live.group("clean_trades", "process"))
            wait_until("the JSON error", lambda: live.group("order_totals", "deserialize"))
            yield live
        finally:
            server.should_exit = True
            thread.join(timeout=15)
            jobs.shutdown(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium")
    tmp = tmp_path_factory.mktemp("chromium")
    chromium = Chromium(tmp / "profile", tmp / "chromium.log")
    try:
        yield chromium
    finally:
        chromium.close()
        shutil.rmtree(tmp / "profile", ignore_errors=True)


@pytest.fixture
def page(browser: Chromium, live: Live) -> Iterator[Page]:
    tab = browser.new_page()
    tab.goto(f"{live.url}/")
    yield tab
    browser.call("Target.closeTarget", {"targetId": tab.target})
    assert tab.errors() == []


def group_row(page: Page, job: str, stage: str) -> dict[str, Any] | None:
    """The page's row of the (job, stage) group: key, count, whether shown."""
    result: dict[str, Any] | None = page.evaluate(
        f"""(() => {{
        const row = [...document.querySelectorAll('#groups-table tbody tr')].find(
            (r) => r.dataset.job === {json.dumps(job)}
                && r.querySelector('.c-stage').textContent === {json.dumps(stage)});
        return row ? {{key: row.dataset.key, count: Number(row.dataset.count),
                       hidden: row.hidden, fingerprint: row.dataset.fingerprint}} : null;
        }})()"""
    )
    return result


# --- the tests ------------------------------------------------------------------------------


def test_page_is_served_with_its_assets_and_no_third_party_origin(live: Live) -> None:
    index = httpx.get(f"{live.url}/")
    assert index.status_code == 200
    assert "script-src 'self'" in index.headers["content-security-policy"]
    for asset in ("app.js", "app.css"):
        assert f"/console/{asset}" in index.text
        assert httpx.get(f"{live.url}/console/{asset}").status_code == 200
    assert "http" not in index.text.replace("http-equiv", "")


def test_new_group_appears_and_its_count_rises_without_reload(
    page: Page, live: Live, tmp_path: Path
) -> None:
    page.wait_for(
        "the CAST error group", "document.querySelectorAll('#groups-table tbody tr').length >= 2"
    )
    before = wait_until("the process group row", lambda: group_row(page, "clean_trades", "process"))
    load_id = page.evaluate("window.veloConsole.loadId")

    # More of the same poison, and a new kind of poison, while the page is open.
    live.append("trades.csv", "5,IBM,n/a,3", "6,IBM,12.5,2", "7,IBM,unknown,4")
    page.wait_for(
        "the count to rise",
        f"""(() => {{
          const r = document.querySelector('#groups-table tbody tr[data-key="{before["key"]}"]');
          return r && Number(r.dataset.count) === {before["count"] + 2};
        }})()""",
    )
    live.append("trades.csv", "8,IBM")
    wait_until("the new group", lambda: group_row(page, "clean_trades", "deserialize"))
    announced = page.wait_for(
        "the announcement", "document.getElementById('announcer').textContent"
    )
    assert "New error group in clean_trades" in announced

    # The same document all along, and the count matches the server's.
    assert page.evaluate("window.veloConsole.loadId") == load_id
    server_count = live.group("clean_trades", "process")
    assert server_count is not None and server_count["count"] == before["count"] + 2
    first_row = page.evaluate("document.querySelector('#groups-table tbody tr').dataset.job")
    assert first_row == "clean_trades"  # newest first

    jobs = page.wait_for(
        "the jobs table",
        """(() => { const rows = [...document.querySelectorAll('#jobs-table tbody tr')];
           return rows.length === 2 && rows.map((r) => [r.dataset.job, r.dataset.state,
             r.querySelector('.c-version').textContent,
             r.querySelector('.c-last_error').textContent]); })()""",
    )
    assert [j[:3] for j in jobs] == [
        ["clean_trades", "running", "1.4.2"],
        ["order_totals", "running", "2.0.1"],
    ]
    assert "expected 4 fields" in jobs[0][3]
    recent = page.evaluate("document.querySelector('#recent-table tbody').textContent")
    assert "cannot CAST price" in recent
    page.wait_for("a chart line", "!!document.querySelector('#chart polyline, #chart circle')")
    page.screenshot(tmp_path / "console-live.png")


def test_job_and_stage_filters(page: Page, live: Live) -> None:
    page.wait_for(
        "both jobs' groups", "document.querySelectorAll('#filter-job option').length >= 3"
    )
    shown = """[...document.querySelectorAll('#groups-table tbody tr')]
               .filter((r) => !r.hidden).map((r) => r.dataset.job)"""
    page.evaluate(
        """(() => { const s = document.getElementById('filter-job'); s.value = 'order_totals';
           s.dispatchEvent(new Event('change')); })()"""
    )
    jobs = page.evaluate(shown)
    assert jobs and set(jobs) == {"order_totals"}
    assert page.evaluate("location.hash") == "#job=order_totals"

    # The filter follows the URL, survives a reload, and stage narrows it further.
    page.goto(f"{live.url}/#job=clean_trades")
    page.wait_for("clean_trades rows", f"new Set({shown}).has('clean_trades')")
    assert set(page.evaluate(shown)) == {"clean_trades"}
    page.reload()
    page.wait_for("clean_trades rows", f"({shown}).length > 0")
    assert set(page.evaluate(shown)) == {"clean_trades"}
    page.evaluate(
        """(() => { const s = document.getElementById('filter-stage'); s.value = 'process';
           s.dispatchEvent(new Event('change')); })()"""
    )
    stages = page.evaluate(
        """[...document.querySelectorAll('#groups-table tbody tr')].filter((r) => !r.hidden)
           .map((r) => [r.dataset.job, r.querySelector('.c-stage').textContent])"""
    )
    assert stages == [["clean_trades", "process"]]
    count = page.evaluate("document.getElementById('groups-count').textContent")
    assert count.startswith("(1 of ")

    # Enter on a job row filters by that job.
    page.evaluate(
        "document.querySelector('#jobs-table tbody tr[data-job=\"order_totals\"]').focus()"
    )
    page.press("Enter")
    assert page.evaluate("document.getElementById('filter-job').value") == "order_totals"


def test_dead_letters_of_a_group_and_replay_with_a_token(
    page: Page, live: Live, tmp_path: Path
) -> None:
    row = wait_until("the CAST group", lambda: group_row(page, "clean_trades", "process"))
    page.click(f'#groups-table tbody tr[data-key="{row["key"]}"]')
    # The server has a token: without it the records are left out, and the page says so.
    page.evaluate("document.getElementById('token').value = ''; window.sessionStorage.clear()")
    hidden = page.wait_for(
        "the dead letters, records hidden",
        """(() => { const cells = [...document.querySelectorAll('#letters-table pre.payload')];
           return cells.length > 0 && cells.every((c) => c.classList.contains('redacted'))
             && cells.map((c) => c.textContent); })()""",
    )
    assert hidden and all("enter the API token" in text for text in hidden)
    page.evaluate("document.getElementById('token').focus()")
    page.type_text(TOKEN)
    payloads = page.wait_for(
        "the dead letters' records",
        """(() => { const cells = [...document.querySelectorAll('#letters-table pre.payload')];
           return cells.length > 0 && cells.every((c) => !c.classList.contains('redacted'))
             && cells.map((c) => c.textContent); })()""",
    )
    assert POISON_TRADE in payloads
    letters = page.evaluate("document.querySelector('#letters-table tbody').textContent")
    assert "TypeError at process: cannot CAST price = 'not-a-price' to DOUBLE" in letters
    assert "trades.csv:4" in letters  # the source position
    assert "node node-7 / stream-eu-7" in letters and "version 1.4.2" in letters
    facts = page.evaluate("document.getElementById('group-facts').textContent")
    assert row["fingerprint"] in facts and "eu-west-1" in facts
    # Only this group's letters: the JSON job's and the field-count errors are elsewhere.
    assert '"order_id"' not in letters and "expected 4 fields" not in letters
    page.scroll_into_view("#detail")
    # docs/images is refreshed only on request, so a test run leaves the tree clean.
    extra = [DOCS_SCREENSHOT] if os.environ.get("VELO_UPDATE_SCREENSHOTS") else []
    page.screenshot(tmp_path / "console-dead-letters.png", *extra)

    # Without the token the server refuses, and the page says what to do.
    page.evaluate("document.getElementById('token').value = ''")
    page.expect_error("401 (Unauthorized)")
    page.wait_for(*REPLAY_ENABLED)
    page.click("#replay")
    page.wait_for(
        "the refusal", f"{REPLAY_STATUS}.includes('needs an API token')", show=REPLAY_STATUS
    )

    # With it, the server tries: the record still fails, so nothing is replayed (422).
    page.expect_error("422 (Unprocessable Entity)")
    page.evaluate("document.getElementById('token').focus()")
    page.type_text(TOKEN)
    page.wait_for(*REPLAY_ENABLED)  # it stays disabled until the letters are reloaded
    page.click("#replay")
    refused = page.wait_for(
        "the 422",
        f"{REPLAY_STATUS}.startsWith('Not replayed') && {REPLAY_STATUS}",
        show=REPLAY_STATUS,
    )
    assert "still fail" in refused

    # Fix the job (a new version that tolerates the bad price), then replay succeeds.
    fixed = TRADES_SQL.replace("1.4.2", "1.4.3").replace("CAST(", "TRY_CAST(")
    reply = httpx.post(
        f"{live.url}/jobs",
        json={"sql": fixed.format(dir=live.data)},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert reply.status_code == 201, reply.text
    page.wait_for(
        "the new version",
        "document.querySelector('#jobs-table tbody tr[data-job=\"clean_trades\"] .c-version')"
        ".textContent === '1.4.3'",
    )
    page.wait_for(*REPLAY_ENABLED)
    page.click("#replay")
    done = page.wait_for(
        "the replay",
        f"{REPLAY_STATUS}.startsWith('Replayed') && {REPLAY_STATUS}",
        show=REPLAY_STATUS,
    )
    assert done.startswith(f"Replayed {len(payloads)} dead letter")
    page.wait_for(
        "replayed letters marked",
        """[...document.querySelectorAll('#letters-table tbody tr td:last-child')]
           .every((c) => c.textContent === 'yes')""",
    )
    assert page.evaluate("document.getElementById('replay').disabled") is True


CONTRAST_JS = """(() => {
  const rgba = (c) => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const over = (top, bottom) => { const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + bottom[i] * (1 - a)).concat(1); };
  const background = (el) => { const layers = [];
    for (let n = el; n && n.nodeType === 1; n = n.parentElement) {
      const c = rgba(getComputedStyle(n).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; } }
    let bg = [255, 255, 255, 1];
    for (const c of layers.reverse()) bg = over(c, bg);
    return bg; };
  const lum = (c) => { const [r, g, b] = c.slice(0, 3).map((v) => { v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
    return (x + 0.05) / (y + 0.05); };
  const bad = []; let checked = 0;
  for (const el of document.querySelectorAll('body *')) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length || el.closest('.visually-hidden, [hidden]')) continue;
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden') continue;
    const bg = background(el);
    const fg = over(rgba(el instanceof SVGElement ? style.fill : style.color), bg);
    const r = ratio(fg, bg); checked++;
    if (r < 4.5) bad.push([el.tagName, el.className.baseVal ?? el.className,
                           el.textContent.trim().slice(0, 30), style.color, r.toFixed(2)]);
  }
  return {checked, bad};
})()"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_contrast_is_at_least_4_5(page: Page, live: Live, scheme: str, tmp_path: Path) -> None:
    page.call(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
    )
    page.wait_for("rows", "document.querySelectorAll('#groups-table tbody tr').length >= 2")
    # A selected group, a job badge, a disabled and an enabled button: all colours in use.
    page.evaluate("document.querySelector('#groups-table tbody tr').click()")
    page.wait_for("the detail", "!document.getElementById('detail-body').hidden")
    page.wait_for("the chart", "!!document.querySelector('#chart text')")
    result = page.evaluate(CONTRAST_JS)
    page.screenshot(tmp_path / f"console-{scheme}.png")
    assert result["checked"] > 100
    assert result["bad"] == []


def test_every_control_has_a_label(page: Page) -> None:
    tree = page.call("Accessibility.getFullAXTree")["nodes"]
    controls = [
        n
        for n in tree
        if not n.get("ignored")
        and n.get("role", {}).get("value") in {"textbox", "combobox", "searchbox", "button"}
    ]
    assert len(controls) >= 4  # token, job, stage, message filter (and the replay button)
    unnamed = [n for n in controls if not n.get("name", {}).get("value", "").strip()]
    assert unnamed == []
    names = {n["name"]["value"] for n in controls}
    assert {"API token", "Job", "Stage", "Message contains"} <= names
    # The updating parts are announced politely, the regions are named.
    assert page.evaluate("document.getElementById('announcer').getAttribute('aria-live')") == (
        "polite"
    )
    assert page.evaluate("document.getElementById('status').getAttribute('role')") == "status"
    chart = page.evaluate(
        "document.getElementById('chart').getAttribute('role') + ' ' + "
        "document.getElementById('chart-summary').textContent"
    )
    assert chart.startswith("img ")


def test_tables_are_navigable_by_keyboard(page: Page) -> None:
    page.wait_for("rows", "document.querySelectorAll('#groups-table tbody tr').length >= 3")
    active = (
        "(() => { const a = document.activeElement; return a.closest('tbody') ? "
        "[a.closest('table').id, [...a.parentNode.children].indexOf(a)] : [a.id, -1]; })()"
    )
    # Tab from the last filter lands on the table's one tab stop: its first row.
    page.evaluate("document.getElementById('filter-text').focus()")
    page.press("Tab")
    assert page.evaluate(active) == ["groups-table", 0]
    page.press("ArrowDown")
    assert page.evaluate(active) == ["groups-table", 1]
    page.press("ArrowDown")
    page.press("ArrowUp")
    assert page.evaluate(active) == ["groups-table", 1]
    page.press("End")
    last = page.evaluate("document.querySelectorAll('#groups-table tbody tr').length - 1")
    assert page.evaluate(active) == ["groups-table", last]
    page.press("Home")
    assert page.evaluate(active) == ["groups-table", 0]
    # Exactly one row per table is in the tab order.
    stops = page.evaluate(
        "document.querySelectorAll('#groups-table tbody tr[tabindex=\"0\"]').length"
    )
    assert stops == 1
    page.press("Enter")
    heading = page.wait_for(
        "the detail",
        "!document.getElementById('detail-body').hidden && "
        "document.getElementById('detail-heading').textContent",
    )
    selected = page.evaluate(
        "document.querySelector('#groups-table tbody tr[aria-current=\"true\"]').dataset.job"
    )
    assert selected in heading
    # Focus stayed on the row, so the user can go on browsing.
    assert page.evaluate(active) == ["groups-table", 0]
    page.evaluate("document.querySelector('#jobs-table tbody tr').focus()")
    page.press("ArrowDown")
    assert page.evaluate(active) == ["jobs-table", 1]


def test_a_narrow_screen_scrolls_tables_not_the_page(page: Page, tmp_path: Path) -> None:
    page.set_viewport(400, 800)
    page.wait_for("rows", "document.querySelectorAll('#groups-table tbody tr').length >= 2")
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    page.screenshot(tmp_path / "console-narrow.png")
    assert overflow <= 0
    # The wide tables scroll inside their own boxes instead.
    box = page.evaluate(
        "(() => { const s = document.querySelector('.groups .scroll');"
        " return [s.scrollWidth, s.clientWidth]; })()"
    )
    assert box[0] > box[1]


def _letters(n: int) -> str:
    word = ""
    for _ in range(3):
        n, r = divmod(n, 26)
        word = chr(ord("a") + r) + word
    return word


def test_a_thousand_groups_stay_responsive(page: Page, live: Live) -> None:
    stages = [Stage.SOURCE, Stage.DESERIALIZE, Stage.PROCESS, Stage.SINK]
    kinds = [ErrorKind.PARSE, ErrorKind.TYPE, ErrorKind.EXECUTION, ErrorKind.IO]
    for i in range(1000):
        ErrorTracker.record_error(
            live.manager,
            "bulk_load",
            f"column col_{_letters(i)} cannot be read",
            stage=stages[i % 4],
            kind=kinds[i % 4],
        )
    total = len(live.manager.require_metrics().catalog)
    page.wait_for(
        "a thousand rows", f"document.querySelectorAll('#groups-table tbody tr').length === {total}"
    )
    # One more error in one group: the poll that brings it touches one row, quickly.
    polls = page.evaluate("window.veloConsole.polls")
    ErrorTracker.record_error(
        live.manager,
        "bulk_load",
        "column col_aaa cannot be read",
        stage=Stage.SOURCE,
        kind=ErrorKind.PARSE,
    )
    page.wait_for(
        "the update",
        "document.querySelector('#groups-table tbody tr').dataset.count === '2' && "
        f"window.veloConsole.polls > {polls}",
    )
    apply_ms = page.evaluate("window.veloConsole.lastApplyMs")
    assert apply_ms < 50, apply_ms
    # Filtering a thousand rows is immediate.
    filter_ms = page.evaluate(
        """(() => { const s = document.getElementById('filter-job'); const t = performance.now();
           s.value = 'clean_trades'; s.dispatchEvent(new Event('change'));
           document.body.offsetHeight; return performance.now() - t; })()"""
    )
    assert filter_ms < 300, filter_ms
    shown = page.evaluate(
        "[...document.querySelectorAll('#groups-table tbody tr')].filter((r) => !r.hidden).length"
    )
    assert 1 <= shown < 10


def test_a_partitioned_job_shows_the_partitions_this_node_holds(
    page: Page, live: Live, kafka_broker: KafkaBroker, new_topic: Callable[..., str]
) -> None:
    """A job whose state is partitioned: its row says which partitions' state the
    node holds (docs/scaling.md), from `partitioned_state` on /jobs."""
    source, sink = new_topic("in", partitions=2), new_topic("out")
    sql = f"""-- @app: scaled
CREATE TABLE per_symbol AS SELECT symbol PRIMARY KEY, COUNT(*) AS n FROM src GROUP BY symbol
WITH ('src.type' = 'kafka_source', 'src.topic' = '{source}',
      'src.bootstrap.servers' = '{kafka_broker.bootstrap}', 'src.key.columns' = 'symbol',
      'per_symbol.type' = 'kafka_sink', 'per_symbol.topic' = '{sink}',
      'per_symbol.bootstrap.servers' = '{kafka_broker.bootstrap}',
      'state.partitioned' = 'true');
"""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    reply = httpx.post(f"{live.url}/jobs", json={"sql": sql}, headers=auth)
    assert reply.status_code == 201, reply.text
    try:
        kafka_broker.produce(
            source, [json.dumps({"symbol": s}).encode() for s in "abcd"], keys=list("abcd")
        )
        wait_until(
            "both partitions held",
            lambda: (
                (httpx.get(f"{live.url}/jobs/per_symbol").json()["partitioned_state"] or {}).get(
                    "partitions"
                )
                == [0, 1]
            ),
        )
        parts = "document.querySelector('#jobs-table tr[data-job=\"per_symbol\"] .parts')"
        page.wait_for("the partitions", f"{parts} && {parts}.textContent === 'partitions 0, 1'")
        title = page.evaluate(f"{parts}.title")
        assert "is on node-7" in title and "-state-changelog" in title, title
        plain = "document.querySelector('#jobs-table tr[data-job=\"clean_trades\"] .parts')"
        assert page.evaluate(f"{plain}.textContent") == ""
    finally:
        httpx.delete(f"{live.url}/jobs/per_symbol", headers=auth)


def test_an_undeployed_job_and_its_groups_leave_the_page(page: Page, live: Live) -> None:
    rows = "document.querySelectorAll('#{table} tbody tr[data-job=\"order_totals\"]').length"
    page.wait_for("the job's rows", rows.format(table="groups-table"))
    reply = httpx.delete(
        f"{live.url}/jobs/order_totals", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert reply.status_code == 200, reply.text
    page.wait_for(
        "the rows to go",
        f"{rows.format(table='groups-table')} === 0 && {rows.format(table='jobs-table')} === 0",
    )
    total = len(live.manager.require_metrics().catalog)
    assert page.evaluate("document.querySelectorAll('#groups-table tbody tr').length") == total
