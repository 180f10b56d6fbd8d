"""README.md's "A short tour", pasted in order by a new user, must do what it says.

The tour runs in a `git clone` of the repository (its HEAD, with the uncommitted changes
to tracked files applied), from the clone's root, as after `make demo`:
`.venv` there is the venv running this test. Each command runs in a shell of its own,
so the tour's `source .venv/bin/activate` lasts one command: the venv's commands are
put first on PATH for all of them. Network: 127.0.0.1 only.

Conventions of the tour's code blocks (between `## A short tour` and the next `## `):

- ```` ```console ```` blocks are run, in order. A line starting with `$ ` is a command,
  run by bash (pipes work); the lines after it, up to the next command or the end of the
  block, are what it prints. Every command must exit 0.
- Each printed line must be a line of the command's output (stdout and stderr
  together), in any order. Lines are compared whole, with runs of whitespace as one
  space and the ends stripped; a clock time (`15:09:47`, `2026-12-03 15:09:44,236`)
  matches any time; `...` inside a line matches any text; a line that is only `...`
  stands for lines left out and is not checked.
- ```` ```console background ```` holds one command that runs until Ctrl-C (the
  server, in "a second terminal"): it is started in the background, the test waits for
  its /health and checks its printed lines in its output, and it gets a Ctrl-C
  (SIGINT) at the end, after which it must exit 0.
- Once the server runs, a command whose output does not match yet but that exited 0 is
  run again, for up to 30 s: a deployed job takes a moment to complete.
- `8080` is the port in the tour; the test uses a free one instead, everywhere (commands
  and printed lines), and gives `velo-cli` its URL through VELO_URL (the tour relies on
  velo-cli's default URL, checked here to be the tour's port on 127.0.0.1).
- ```` ```sql PATH ```` is the exact text of file PATH (relative to the root) at that
  point of the tour.

The test fails when the tour drifts: a command that fails, a printed line that no
longer appears, a file whose text changed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.integration.server_process import clean_env, console_script, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TOUR_PORT = "8080"
RETRY_SECONDS = 30.0
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
_CLOCK = re.compile(r"(\d{4}-\d\d-\d\d[ T])?\d\d:\d\d:\d\d([.,]\d+)?")
_TIME = "\x00time\x00"


@dataclass
class Command:
    """One `$ ` command of the tour with the lines it must print."""

    line: int
    text: str
    printed: list[str] = field(default_factory=list)
    background: bool = False


@dataclass
class FileText:
    """A ```` ```sql PATH ```` block: what PATH holds at that point of the tour."""

    line: int
    path: str
    text: str


Step = Command | FileText


def tour_steps(readme: str) -> list[Step]:
    """The tour's steps, in order (see the module docstring)."""
    start = readme.index("\n## A short tour\n")
    end = readme.find("\n## ", start + 1)
    section = readme[start : end if end != -1 else len(readme)]
    offset = readme.count("\n", 0, start) + 1
    steps: list[Step] = []
    for match in _FENCE.finditer(section):
        info, body = match.group(1).split(), match.group(2)
        line = offset + section.count("\n", 0, match.start())
        if info[:1] == ["sql"] and len(info) == 2:
            steps.append(FileText(line, info[1], body))
        elif info[:1] == ["console"]:
            steps += _commands(body, line, background=info[1:] == ["background"])
    return steps


def _commands(body: str, line: int, *, background: bool) -> list[Command]:
    found: list[Command] = []
    for number, text in enumerate(body.splitlines(), start=line + 1):
        if text.startswith("$ "):
            found.append(Command(number, text[2:].strip(), background=background))
        elif not found:
            raise AssertionError(f"README.md:{number}: output before any `$ ` command")
        elif text.strip():
            found[-1].printed.append(text)
    assert not background or len(found) == 1, f"README.md:{line}: one background command"
    return found


def _normal(text: str) -> str:
    return " ".join(_CLOCK.sub(_TIME, text).split())


def line_pattern(expected: str) -> re.Pattern[str]:
    """What an expected line matches in a normalised output line."""
    parts = [re.escape(part) for part in _normal(expected).split("...")]
    return re.compile(".*?".join(parts))


def missing_lines(printed: list[str], output: str) -> list[str]:
    """The expected lines that do not appear in `output`."""
    lines = [_normal(line) for line in output.splitlines()]
    return [
        expected
        for expected in printed
        if expected.strip() != "..."
        and not any(line_pattern(expected).fullmatch(line) for line in lines)
    ]


def _on_port(text: str, port: int) -> str:
    return re.sub(rf"\b{TOUR_PORT}\b", str(port), text)


def clone_of_repository(target: Path) -> Path:
    """A fresh `git clone` of the repository at its HEAD, with the uncommitted changes
    to tracked files applied on top: what a new user's clone gets, plus the edit under
    test (an untracked file is not in it, as it would not be in a clone)."""

    def git(*args: str, cwd: Path = ROOT, stdin: bytes | None = None) -> bytes:
        done = subprocess.run(
            ["git", "-C", str(cwd), *args], input=stdin, capture_output=True, timeout=120
        )
        assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr.decode()}"
        return done.stdout

    head = git("rev-parse", "HEAD").decode().strip()
    git("clone", "--quiet", "--no-checkout", str(ROOT), str(target))
    git("checkout", "--quiet", "--detach", head, cwd=target)
    changes = git("diff", "--binary", "HEAD")
    if changes:
        git("apply", "--whitespace=nowarn", "-", cwd=target, stdin=changes)
    return target


class Tour:
    """Runs the tour's commands in `root`, the server in the background."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.env = clean_env(
            {
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                "VELO_URL": f"http://127.0.0.1:{port}",
                "COLUMNS": "120",
            }
        )
        self.server: subprocess.Popen[bytes] | None = None
        self.server_log = root.parent / "server.log"

    def run(self, command: Command) -> None:
        text = _on_port(command.text, self.port)
        printed = [_on_port(line, self.port) for line in command.printed]
        if command.background:
            self.start_server(command, text, printed)
            return
        deadline = time.monotonic() + (RETRY_SECONDS if self.server else 0.0)
        missing: list[str] = []
        last = ""
        while True:
            done = subprocess.run(
                ["bash", "-c", text],
                cwd=self.root,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            output = done.stdout + done.stderr
            if done.returncode != 0:
                # Run again after a mismatch (a deploy, say), a failure says little.
                said = f"did not print:\n{chr(10).join(missing)}\n--- it printed:\n{last}\n"
                pytest.fail(
                    f"README.md:{command.line}: `{text}` "
                    + (f"{said}--- run again, it " if missing else "")
                    + f"exited {done.returncode}:\n{output}"
                )
            missing = missing_lines(printed, output)
            if not missing:
                return
            last = output
            if time.monotonic() > deadline:
                shown = "\n".join(missing)
                pytest.fail(
                    f"README.md:{command.line}: `{text}` did not print:\n{shown}\n"
                    f"--- it printed:\n{output}"
                )
            time.sleep(0.2)

    def start_server(self, command: Command, text: str, printed: list[str]) -> None:
        assert self.server is None, f"README.md:{command.line}: a second server"
        with self.server_log.open("wb") as log:
            # `exec`: the process is the server itself, which gets the Ctrl-C.
            self.server = subprocess.Popen(
                ["bash", "-c", f"exec {text}"],
                cwd=self.root,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30.0
        while True:
            if self.server.poll() is not None:
                pytest.fail(
                    f"README.md:{command.line}: `{text}` exited {self.server.returncode}:\n"
                    + self.log()
                )
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1.0).is_success:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"README.md:{command.line}: no /health after 30 s:\n{self.log()}")
            time.sleep(0.05)
        missing = missing_lines(printed, self.log())
        assert not missing, f"README.md:{command.line}: the server did not print {missing}"

    def log(self) -> str:
        return self.server_log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int | None:
        """Ctrl-C to the server; its exit code (None: it was not started)."""
        if self.server is None:
            return None
        if self.server.poll() is None:
            self.server.send_signal(signal.SIGINT)
        try:
            return self.server.wait(timeout=60)
        finally:
            if self.server.poll() is None:
                self.server.kill()
                self.server.wait(timeout=10)


@pytest.fixture
def tour(tmp_path: Path) -> Iterator[Tour]:
    root = clone_of_repository(tmp_path / "velostream")
    # As `make demo` leaves it: the venv (this test's own) at .venv.
    (root / ".venv").symlink_to(Path(sys.executable).parent.parent, target_is_directory=True)
    runner = Tour(root, free_port())
    try:
        yield runner
    finally:
        if runner.server is not None and runner.server.poll() is None:
            runner.server.kill()
            runner.server.wait(timeout=10)


def test_the_readme_tour_does_what_it_says(tour: Tour) -> None:
    steps = tour_steps(README.read_text(encoding="utf-8"))
    commands = [s for s in steps if isinstance(s, Command)]
    assert len(commands) >= 8, "the tour lost its commands"
    assert any(c.background for c in commands), "the tour starts no server"
    for step in steps:
        if isinstance(step, FileText):
            path = tour.root / step.path
            assert path.is_file(), f"README.md:{step.line}: {step.path} is not there"
            assert path.read_text(encoding="utf-8") == step.text, (
                f"README.md:{step.line}: {step.path} is not what the tour shows"
            )
        else:
            tour.run(step)
    assert tour.stop() == 0, tour.log()
    assert "every job committed and stopped" in tour.log()


def test_velo_cli_talks_to_the_tours_port_by_default() -> None:
    shown = subprocess.run(
        [console_script("velo-cli"), "jobs", "--help"],
        env=clean_env({"COLUMNS": "200"}),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert f"http://127.0.0.1:{TOUR_PORT}" in shown, shown


@pytest.mark.parametrize(
    ("expected", "line", "matches"),
    [
        ("│ a │ ok │ 12 │ ... │", "│ a   │ ok  │ 12 │ 0.17    │", True),
        ("│ a │ ok │ 12 │ ... │", "│ a   │ ok  │ 13 │ 0.17    │", False),
        ("x 15:09:47 y", "x 01:02:03   y", True),
        ("2026-12-03 15:09:44,236 INFO ...", "1999-01-01 00:00:00,001 INFO  more", True),
        ("deployed: big_trades", "deployed: big_trades_2", False),
        ("... INFO x", "2026-12-03 15:09:44,236 INFO  x", True),
        ("deployed: clean_trades", "deployed: big_trades", False),
    ],
)
def test_the_line_convention(expected: str, line: str, matches: bool) -> None:
    assert (missing_lines([expected], line) == []) is matches


def test_the_tour_is_read_from_the_readme() -> None:
    text = (
        "intro\n\n## A short tour\n\n```console\n$ a --x\nout 1\n...\n$ b | c\n```\n\n"
        "```sql t/app.sql\nSELECT 1;\n```\n\n```console background\n$ server\nup\n```\n\n"
        "## Next\n\n```console\n$ not-the-tour\n```\n"
    )
    steps = tour_steps(text)
    assert steps == [
        Command(6, "a --x", ["out 1", "..."]),
        Command(9, "b | c"),
        FileText(12, "t/app.sql", "SELECT 1;\n"),
        Command(17, "server", ["up"], background=True),
    ]


def test_the_tour_runs_in_a_clone_at_head_with_the_edits_under_test(tmp_path: Path) -> None:
    clone = clone_of_repository(tmp_path / "clone")

    def git(cwd: Path, *args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True
        ).stdout

    assert git(clone, "rev-parse", "HEAD") == git(ROOT, "rev-parse", "HEAD")
    assert git(clone, "diff", "HEAD") == git(ROOT, "diff", "HEAD")  # the edits, no others
    assert git(clone, "ls-files", "--others", "--exclude-standard") == ""
