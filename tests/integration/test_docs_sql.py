"""Every example of docs/sql.md, run as a user runs it, and every output it shows compared.

The reference's code blocks follow these conventions, so that none of them can drift
from what the product does (a block of any other kind fails the test):
- ```` ```sql ```` is a complete application. It is run with `velo-sql run` in a copy
  of demo/quickstart (so `./data/trades.csv` is there) and must succeed. A block right
  after it whose info string names an output file (```` ```csv output/x.csv ````) is
  that file's exact content after the run; a ```` ```text output ```` block after it
  (prose may come between) holds lines of what the run prints.
- ```` ```sql refused ```` is an application `velo-sql validate` must refuse; the lines
  of the ```` ```text ```` block right after it must appear in what it prints.
- ```` ```sql kafka ```` is a complete application on Kafka topics, run with `velo-sql
  run` against the tests' broker (its `localhost:9092` and topic names are replaced
  with the broker's and fresh ones). The ```` ```jsonl in:TOPIC ```` blocks after it
  (prose may come between) are produced first; each ```` ```jsonl out:TOPIC ```` block
  is the messages the job writes there, in order. A line of those is a JSON value, optionally after
  `[name=value, ...] ` for the message's headers (`_key=K`: its key instead).
- ```` ```csv data/NAME ```` is an input file of demo/quickstart, shown whole.
- ```` ```text grammar ```` is syntax, and ```` ```sh ```` commands shown: not run.

Printed lines are compared with runs of whitespace as one space (the terminal wraps
long lines), `...` standing for any text, and `/home/me/velostream/demo/quickstart`
for the copy the example ran in.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.kafka_broker import KafkaBroker
from tests.integration.server_process import clean_env, console_script, interrupt, velo_sql

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "sql.md"
QUICKSTART = ROOT / "demo" / "quickstart"
SHOWN_DEMO = "/home/me/velostream/demo/quickstart"
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
_TOPIC = re.compile(r"'(\w+)\.topic'\s*=\s*'([^']+)'")
_HEADERS = re.compile(r"^\[([^\]]*)\]\s*")
_topic_numbers = itertools.count(1)


@dataclass
class Example:
    """One application of the reference, with what it must write or print."""

    line: int
    sql: str
    kind: str  # "run", "refused" or "kafka"
    outputs: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    topics_in: dict[str, str] = field(default_factory=dict)
    topics_out: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"sql.md:{self.line}"


@dataclass
class Shown:
    """An input file shown whole."""

    line: int
    path: str
    text: str


def read_doc(text: str) -> tuple[list[Example], list[Shown], list[str]]:
    """The examples of `text`, the input files it shows, and blocks of no known kind."""
    found: list[Example] = []
    shown: list[Shown] = []
    unknown: list[str] = []
    previous_end = -1
    for match in _FENCE.finditer(text):
        info, body = match.group(1).strip().split(), match.group(2)
        line = text.count("\n", 0, match.start()) + 1
        follows = bool(found) and text[previous_end : match.start()].strip() == ""
        previous_end = match.end()
        last = found[-1] if follows else None
        if info[:1] == ["sql"] and info[1:] in ([], ["refused"], ["kafka"]):
            found.append(Example(line, body, kind=info[1] if info[1:] else "run"))
        elif found and found[-1].kind == "run" and info == ["text", "output"]:
            found[-1].messages += [m for m in body.splitlines() if m.strip()]
        elif last and last.kind == "refused" and info == ["text"]:
            last.messages += [m for m in body.splitlines() if m.strip()]
        elif last and last.kind == "run" and len(info) == 2 and info[1].startswith("output/"):
            last.outputs[info[1]] = body
        elif found and found[-1].kind == "kafka" and info[:1] == ["jsonl"] and len(info) == 2:
            direction, _, topic = info[1].partition(":")
            if direction in ("in", "out") and topic:
                kafka = found[-1]
                (kafka.topics_in if direction == "in" else kafka.topics_out)[topic] = body
            else:
                unknown.append(f"sql.md:{line}: {match.group(1)}")
        elif len(info) == 2 and info[1].startswith("data/"):
            shown.append(Shown(line, info[1], body))
        elif info in (["text", "grammar"], ["sh"]):
            pass
        else:
            unknown.append(f"sql.md:{line}: ```{match.group(1)}")
    return found, shown, unknown


EXAMPLES, SHOWN, UNKNOWN = read_doc(DOC.read_text(encoding="utf-8"))


def _normal(text: str) -> str:
    return " ".join(text.split())


def assert_printed(example: Example, said: str, demo: Path) -> None:
    """Each of the example's lines is in `said` (see the module docstring)."""
    printed = _normal(said)
    for message in example.messages:
        expected = _normal(message.replace(SHOWN_DEMO, str(demo)))
        pattern = ".*?".join(re.escape(part.strip()) for part in expected.split("..."))
        assert re.search(pattern, printed), f"{example.id}: {message!r} not in:\n{said}"


def test_the_reference_has_examples_of_every_kind() -> None:
    assert UNKNOWN == [], "blocks of no known kind (see the module docstring)"
    assert len(EXAMPLES) >= 25
    assert sum(e.kind == "kafka" for e in EXAMPLES) >= 4
    assert sum(bool(e.outputs) for e in EXAMPLES) >= 17
    for example in EXAMPLES:
        assert example.kind != "refused" or example.messages, f"{example.id}: no message"
        assert example.kind != "kafka" or example.topics_out, f"{example.id}: no output"


@pytest.mark.parametrize("shown", SHOWN, ids=[f"sql.md:{s.line}" for s in SHOWN])
def test_an_input_file_is_shown_as_it_is(shown: Shown) -> None:
    assert (QUICKSTART / shown.path).read_text(encoding="utf-8") == shown.text


FILE_EXAMPLES = [e for e in EXAMPLES if e.kind != "kafka"]


@pytest.mark.parametrize("example", FILE_EXAMPLES, ids=[e.id for e in FILE_EXAMPLES])
def test_example(example: Example, demo: Path) -> None:
    (demo / "example.sql").write_text(example.sql, encoding="utf-8")
    if example.kind == "refused":
        result = velo_sql("validate", "example.sql", cwd=demo)
        said = result.stdout + result.stderr
        assert result.returncode == 1, said
        assert_printed(example, said, demo)
        return
    result = velo_sql("run", "example.sql", cwd=demo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_printed(example, result.stdout + result.stderr, demo)
    for path, content in example.outputs.items():
        got = (demo / path).read_text(encoding="utf-8")
        assert got == content, f"{example.id}: {path} differs:\n{got}"


def parse_messages(body: str) -> list[tuple[dict[str, str], object]]:
    """Each line's headers (from `[k=v, ...] `, `_key` the message key) and JSON value."""
    messages = []
    for line in filter(str.strip, body.splitlines()):
        headers: dict[str, str] = {}
        if match := _HEADERS.match(line):
            for pair in filter(None, (p.strip() for p in match.group(1).split(","))):
                name, _, value = pair.partition("=")
                headers[name.strip()] = value.strip()
            line = line[match.end() :]
        messages.append((headers, json.loads(line)))
    return messages


def produce(broker: KafkaBroker, topic: str, body: str) -> None:
    messages = parse_messages(body)
    broker.produce(
        topic,
        [json.dumps(value).encode() for _, value in messages],
        keys=[h.get("_key") for h, _ in messages],
        headers=[[(k, v.encode()) for k, v in h.items() if k != "_key"] for h, _ in messages],
    )


KAFKA_EXAMPLES = [e for e in EXAMPLES if e.kind == "kafka"]


@pytest.mark.parametrize("example", KAFKA_EXAMPLES, ids=[e.id for e in KAFKA_EXAMPLES])
def test_kafka_example(example: Example, demo: Path, kafka_broker: KafkaBroker) -> None:
    number = next(_topic_numbers)
    topics = {
        name: f"docs-{example.line}-{name}-{number}" for _, name in _TOPIC.findall(example.sql)
    }
    for topic in topics.values():
        kafka_broker.create_topic(topic)
    sql = _TOPIC.sub(lambda m: f"'{m.group(1)}.topic' = '{topics[m.group(2)]}'", example.sql)
    sql = sql.replace("localhost:9092", kafka_broker.bootstrap)
    (demo / "example.sql").write_text(sql, encoding="utf-8")
    for name, body in example.topics_in.items():
        produce(kafka_broker, topics[name], body)
    log = demo / "run.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [console_script("velo-sql"), "run", "example.sql"],
            cwd=demo,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        for name, body in example.topics_out.items():
            expected = parse_messages(body)
            deadline = time.monotonic() + 60
            while True:
                records = kafka_broker.read_all(topics[name])
                if len(records) >= len(expected) or time.monotonic() > deadline:
                    break
                assert process.poll() is None, log.read_text()
                time.sleep(0.2)
            time.sleep(0.5)  # nothing more than expected comes
            records = kafka_broker.read_all(topics[name])
            shown = [h for h, _ in expected] + [{}] * max(len(records) - len(expected), 0)
            got = [
                ({k: r.header(k) for k in h}, json.loads(r.value or b"null"))
                for r, h in zip(records, shown, strict=False)
            ]
            assert got == expected, f"{example.id}: {name}:\n{got}\n{log.read_text()}"
    finally:
        interrupt(process, 20)
