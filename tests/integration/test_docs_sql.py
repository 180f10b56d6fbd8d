"""Every example of docs/sql.md, run as a user runs it.

The reference's code blocks follow three conventions, so that none of them can drift
from what the product does:
- ```` ```sql ```` is a complete application. It is run with `velo-sql run` in a copy
  of demo/quickstart (so `./data/trades.csv` is there) and must succeed. A block right
  after it whose info string names an output file (```` ```csv output/x.csv ````) is
  that file's exact content after the run.
- ```` ```sql refused ```` is an application `velo-sql validate` must refuse; every line
  of the ```` ```text ```` block right after it must appear in what it prints.
- Any other block (```` ```text ````, ```` ```sh ````) is shown, not run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.server_process import velo_sql

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "sql.md"
QUICKSTART = ROOT / "demo" / "quickstart"
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


@dataclass
class Example:
    """One application of the reference, with what it must write or print."""

    line: int
    sql: str
    refused: bool
    outputs: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"sql.md:{self.line}"


def examples(text: str) -> list[Example]:
    """The runnable examples of `text`, each with the blocks that follow it."""
    found: list[Example] = []
    previous_end = -1
    for match in _FENCE.finditer(text):
        info, body = match.group(1).strip().split(), match.group(2)
        line = text.count("\n", 0, match.start()) + 1
        follows = found and text[previous_end : match.start()].strip() == ""
        previous_end = match.end()
        if info[:1] == ["sql"]:
            found.append(Example(line, body, refused=info[1:] == ["refused"]))
        elif follows and found[-1].refused and info[:1] == ["text"]:
            found[-1].messages += [m.strip() for m in body.splitlines() if m.strip()]
        elif follows and len(info) == 2 and info[1].startswith("output/"):
            found[-1].outputs[info[1]] = body
    return found


EXAMPLES = examples(DOC.read_text(encoding="utf-8"))


def test_the_reference_has_examples_of_every_kind() -> None:
    assert len(EXAMPLES) >= 25
    assert any(e.refused for e in EXAMPLES)
    assert sum(bool(e.outputs) for e in EXAMPLES) >= 17
    for example in EXAMPLES:
        assert not example.refused or example.messages, f"{example.id}: no message to expect"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_example(example: Example, demo: Path) -> None:
    (demo / "example.sql").write_text(example.sql, encoding="utf-8")
    if example.refused:
        result = velo_sql("validate", "example.sql", cwd=demo)
        said = result.stdout + result.stderr
        assert result.returncode == 1, said
        for message in example.messages:
            assert message in said, f"{example.id}: {message!r} not in:\n{said}"
        return
    result = velo_sql("run", "example.sql", cwd=demo)
    assert result.returncode == 0, result.stdout + result.stderr
    for path, content in example.outputs.items():
        got = (demo / path).read_text(encoding="utf-8")
        assert got == content, f"{example.id}: {path} differs:\n{got}"
