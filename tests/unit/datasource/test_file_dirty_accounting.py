"""Dirty input is accounted for exactly: records in = out + failed, one dead letter a bad line.

Files mixing wrong field counts, unterminated quotes, undecodable bytes and values that
fail their column type (CSV), or malformed lines, non-objects, undecodable bytes and
values of the wrong type (JSON lines), run through the same in-process server as
`velo-sql run` under SendToDLQ, for several batch sizes. Each bad line must become
exactly one dead letter holding its original bytes, its file and line, its stage and
its kind of reason; every other line must reach the sink once, in order. The files
have clean stretches, stretches without quotes and stretches with quotes, so that the
decoders' fast, unquoted and careful paths all meet bad lines.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry
from rich.console import Console

from tests.jobserver import app_sql, read_jsonl
from velostream.cli.run import JobRun, run_application
from velostream.datasource.file.csvlines import CsvDecoder
from velostream.datasource.registry import connector_catalog
from velostream.dlq.letter import DeadLetter
from velostream.errors import ErrorKind
from velostream.observability.catalog import ErrorGroup
from velostream.observability.manager import ObservabilityManager, StreamingConfig
from velostream.sql import parse_application

PARSE, TYPE = ErrorKind.PARSE.value, ErrorKind.TYPE.value
LINES = 3000
TS = "2024-01-15 09:30:00"
Groups = dict[str, ErrorGroup]


@dataclass
class Dirty:
    """A file's lines and what each should become: a good row's id, or a bad line's
    (kind, words its message holds; alternatives apart with `|`)."""

    lines: list[bytes] = field(default_factory=list)
    good: list[int] = field(default_factory=list)
    bad: dict[int, tuple[str, str]] = field(default_factory=dict)  # line number -> reason

    def add(self, line: bytes, good: int | None = None, bad: tuple[str, str] | None = None):
        self.lines.append(line)
        if good is not None:
            self.good.append(good)
        if bad is not None:
            self.bad[len(self.lines)] = bad


def _stretch(i: int) -> str:
    """Clean, unquoted dirty, quoted dirty or undecodable stretches of the file."""
    return ["clean", "unquoted", "clean", "quoted", "undecodable", "unquoted"][i * 6 // LINES]


def dirty_csv(seed: int) -> Dirty:
    """id,symbol,price,qty,ts with about 12% bad lines outside the clean stretches."""
    rng = random.Random(seed)
    out = Dirty()
    out.add(b"id,symbol,price,qty,ts")
    for i in range(LINES):
        stretch = _stretch(i)
        good = f"{i},S{i % 7},{i % 500}.25,{i % 50},{TS}".encode()
        r = rng.random() if stretch != "clean" else 1.0
        if r < 0.03:
            cut = rng.choice([2, 3, 4, 6])
            fields = [str(i), f"S{i % 7}", "1.5", "2", TS, "extra"][:cut]
            out.add(",".join(fields).encode(), bad=(PARSE, f"expected 5 fields, got {cut}"))
        elif r < 0.045:
            out.add(f"{i},S{i % 7},n/a,{i % 50},{TS}".encode(), bad=(TYPE, "'n/a' is not a valid"))
        elif r < 0.06:
            out.add(f"{i},S{i % 7},1.5,12x,{TS}".encode(), bad=(TYPE, "'12x' is not a valid"))
        elif r < 0.07:
            out.add(f"{i},S{i % 7},1.5,3,not-a-time".encode(), bad=(TYPE, "'not-a-time'"))
        elif r < 0.09 and stretch == "quoted":
            # Arrow cuts the first of two such lines in a row at its line break
            reason = (PARSE, "unterminated quoted|expected 5 fields, got 2")
            out.add(f'{i},"S{i % 7},1.5,3,{TS}'.encode(), bad=reason)
        elif r < 0.12 and stretch == "quoted":
            out.add(f'{i},"S,{i % 7}",{i % 500}.25,{i % 50},{TS}'.encode(), good=i)
        elif r < 0.10 and stretch == "undecodable":
            out.add(f"{i},S".encode() + b"\xff\xfe" + f",1.5,3,{TS}".encode(), bad=(PARSE, "UTF-8"))
        elif r < 0.11:
            out.add(b"")  # an empty line: no record at all
            out.add(good, good=i)
        else:
            out.add(good, good=i)
    return out


def dirty_jsonl(seed: int) -> Dirty:
    """{"id", "symbol", "price", "qty"} objects with about 12% bad lines outside the clean
    stretches."""
    rng = random.Random(seed)
    out = Dirty()
    for i in range(LINES):
        stretch = _stretch(i)
        doc = {"id": i, "symbol": f"S{i % 7}", "price": i % 500 + 0.25, "qty": i % 50}
        r = rng.random() if stretch != "clean" else 1.0
        if r < 0.03:
            out.add(b'{"id": ' + str(i).encode() + b', "price": }', bad=(PARSE, "invalid JSON"))
        elif r < 0.045:
            out.add(orjson.dumps({**doc, "price": "n/a"}), bad=(TYPE, "column 'price'"))
        elif r < 0.06:
            out.add(orjson.dumps({**doc, "qty": [1]}), bad=(TYPE, "column 'qty'"))
        elif r < 0.07:
            out.add(b"[1, 2, 3]", bad=(PARSE, "not a JSON object"))
        elif r < 0.09 and stretch == "undecodable":
            out.add(b'{"id": 1, "symbol": "S\xff"}', bad=(PARSE, "UTF-8"))
        elif r < 0.10:
            out.add(b"  ")  # a blank line: no record at all
            out.add(orjson.dumps(doc), good=i)
        else:
            out.add(orjson.dumps(doc), good=i)
    return out


def run_dirty(
    tmp: Path, fmt: str, data: Dirty, batch: int, strategy: str = "SendToDLQ"
) -> tuple[JobRun, list[int], list, Groups]:
    """Run SELECT * over the file under `strategy`: the run, the ids out, the dead letters
    and the job's error catalog groups (by fingerprint)."""
    path = tmp / f"in.{fmt}"
    path.write_bytes(b"\n".join(data.lines) + b"\n")
    sql = app_sql(
        "out",
        source={"type": "file_source", "path": str(path), "format": fmt},
        sink={"type": "file_sink", "path": str(tmp / "out.jsonl"), "format": "jsonl"},
        job={"batch.size": str(batch), "failure_strategy": strategy},
    )
    app = parse_application(
        sql, connectors=connector_catalog(), base_dir=tmp, source_name="dirty.sql"
    )
    config = StreamingConfig(log_throttle_seconds=0.0, process_metrics=False)
    manager = ObservabilityManager.from_streaming_config(config, CollectorRegistry())
    manager.initialize()
    try:
        [run] = run_application(app, manager, Console(file=None, quiet=True), tmp / "data")
        groups = manager.require_metrics().catalog.groups(job="out")
    finally:
        manager.shutdown()
    ids = [row["id"] for row in read_jsonl(tmp / "out.jsonl")]
    dlq = tmp / "data" / "dlq" / "out.jsonl"
    letters = [DeadLetter(doc) for doc in read_jsonl(dlq)] if dlq.exists() else []
    return run, ids, letters, {g.fingerprint: g for g in groups}


def check_catalog(data: Dirty, groups: Groups) -> None:
    """Every bad line is counted once in the error catalog, under its kind: the
    catalog's deserialize groups, by kind, add up to the bad lines of that kind."""
    counted: dict[str, int] = {}
    for group in groups.values():
        assert group.stage == "deserialize", group
        counted[group.kind.value] = counted.get(group.kind.value, 0) + group.count
    expected: dict[str, int] = {}
    for kind, _ in data.bad.values():
        expected[kind] = expected.get(kind, 0) + 1
    assert counted == expected


def check_accounting(
    path: Path, data: Dirty, run: JobRun, ids: list[int], letters: list, groups: Groups
) -> None:
    assert run.state == "completed", run.error
    records = sum(1 for line in data.lines[1 if path.suffix == ".csv" else 0 :] if line.strip())
    stats = run.stats
    assert stats.records_in == records, "every non-empty line is one record in"
    assert (stats.records_out, stats.records_failed) == (len(data.good), len(data.bad))
    assert stats.records_in == stats.records_out + stats.records_failed
    assert ids == data.good, "every good line reaches the sink once, in order"
    numbers = [int(letter.doc["position"].rsplit(":", 1)[1]) for letter in letters]
    assert numbers == sorted(data.bad), "one dead letter per bad line, in line order"
    for letter, number in zip(letters, numbers, strict=True):
        kind, words = data.bad[number]
        assert letter.doc["position"] == f"{path}:{number}"
        assert (letter.doc["stage"], letter.doc["kind"]) == ("deserialize", kind), number
        message = letter.doc["message"]
        assert any(w in message for w in words.split("|")), (number, message)
        assert letter.payload == data.lines[number - 1], "the line's original bytes"
        group = groups[letter.doc["fingerprint"]]
        assert (group.kind.value, group.stage.value) == (kind, "deserialize"), number
        assert letter.doc["job"] == "out" and letter.doc["source"], number
    check_catalog(data, groups)


@pytest.fixture
def unquoted_blocks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the blocks the unquoted path decoded, so that a test shows it ran."""
    decoded: list[int] = []
    take_apart = CsvDecoder._decode_unquoted

    def counting(self: CsvDecoder, block: bytes, n_lines: int):  # type: ignore[no-untyped-def]
        result = take_apart(self, block, n_lines)
        if result is not None and len(result.errors):
            decoded.append(n_lines)
        return result

    monkeypatch.setattr(CsvDecoder, "_decode_unquoted", counting)
    return decoded


@pytest.mark.parametrize(("batch", "seed"), [(7, 1), (64, 2), (500, 3), (5000, 4)])
def test_csv_dirty_rows_are_counted_and_dead_lettered_exactly(
    tmp_path: Path, unquoted_blocks: list[int], batch: int, seed: int
) -> None:
    data = dirty_csv(seed)
    run, ids, letters, groups = run_dirty(tmp_path, "csv", data, batch)
    check_accounting(tmp_path / "in.csv", data, run, ids, letters, groups)
    if batch < LINES // 6:  # stretches without quotes fill whole blocks
        assert unquoted_blocks, "the unquoted path met bad lines"


@pytest.mark.parametrize(("batch", "seed"), [(7, 5), (64, 6), (500, 7), (5000, 8)])
def test_jsonl_dirty_rows_are_counted_and_dead_lettered_exactly(
    tmp_path: Path, batch: int, seed: int
) -> None:
    data = dirty_jsonl(seed)
    run, ids, letters, groups = run_dirty(tmp_path, "jsonl", data, batch)
    check_accounting(tmp_path / "in.jsonl", data, run, ids, letters, groups)


def bench_like_csv(lines: int, seed: int) -> Dirty:
    """The benchmark's dirty input (bench_engine case 5): 10% bad lines without quotes,
    half of them cut short, half with a price that is not a number."""
    rng = random.Random(seed)
    out = Dirty()
    out.add(b"id,symbol,price,qty,ts")
    for i in range(lines):
        r = rng.random()
        if r < 0.05:
            out.add(f"{i},S{i % 7},{i % 500}.5".encode(), bad=(PARSE, "expected 5 fields, got 3"))
        elif r < 0.10:
            out.add(f"{i},S{i % 7},n/a,{i % 50},{TS}".encode(), bad=(TYPE, "'n/a' is not a valid"))
        else:
            out.add(f"{i},S{i % 7},{i % 500}.25,{i % 50},{TS}".encode(), good=i)
    return out


@pytest.mark.parametrize("strategy", ["SendToDLQ", "LogAndContinue"])
def test_bench_like_dirty_rows_are_exact_across_many_blocks(
    tmp_path: Path, unquoted_blocks: list[int], strategy: str
) -> None:
    """Many bad lines a block, many blocks: each bad line is counted, in the catalog
    under its kind and (SendToDLQ) one dead letter with its bytes and place."""
    data = bench_like_csv(20_000, seed=9)
    run, ids, letters, groups = run_dirty(tmp_path, "csv", data, 2_500, strategy)
    assert len(unquoted_blocks) >= 6, "the unquoted path took the blocks apart"
    stats = run.stats
    assert (stats.records_in, stats.records_out) == (20_000, len(data.good))
    assert stats.records_failed == len(data.bad) and ids == data.good
    assert stats.records_in == stats.records_out + stats.records_failed + stats.late_records
    if strategy == "SendToDLQ":
        check_accounting(tmp_path / "in.csv", data, run, ids, letters, groups)
        assert stats.dead_letters == len(data.bad)
    else:
        assert letters == [] and stats.dead_letters == 0
        check_catalog(data, groups)
