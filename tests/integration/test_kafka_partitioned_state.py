"""A stateful job whose state is partitioned, on several `velo-sql` servers of one group.

`'state.partitioned' = 'true'` on a topic keyed by the GROUP BY column: each server
keeps the state of the partitions it holds, backed by a changelog topic. On the real
broker, with server processes on loopback:

- three servers, one SIGKILLed mid-stream and another added later: the final value of
  every key, read with read_committed, is exactly the truth (transactional mode), on
  a topic keyed by symbol and on one keyed by trade id (repartitioned first);
- a server restarted with an empty data dir restores from the changelog;
- a tumbling window on one server and on three gives the same windows.

The server added later is the killed one's replacement: its NODE_ID and a fresh data
dir, started at once, as a StatefulSet restarts a pod. The kill comes once the
server has committed what it was given, with more trades to come: tansu serves the
records of an aborted transaction to read_committed readers and never aborts a dead
producer's transaction by time (docs/scaling.md), so a kill inside a transaction is
not exactly-once on it, whatever the client does. (The single-server crash tests
kill inside batches, with a restart of the same NODE_ID.)
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.kafka_broker import KafkaBroker
from tests.integration.test_kafka_consumer_group import Server, _wait

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SYMBOLS = [f"S{i:02d}" for i in range(40)]


def _app(
    broker: KafkaBroker, source: str, sink: str, group: str, query: str, keyed: bool = True
) -> str:
    key = "'src.key.columns' = 'symbol', " if keyed else ""
    return f"""
-- @app: scale
-- @job_mode: transactional
-- @batch_size: 100
CREATE TABLE per_symbol AS {query}
WITH (
    'src.type' = 'kafka_source', 'src.topic' = '{source}',
    'src.bootstrap.servers' = '{broker.bootstrap}', 'src.group.id' = '{group}',
    {key}'src.session.timeout.ms' = '6000',
    'per_symbol.type' = 'kafka_sink', 'per_symbol.topic' = '{sink}',
    'per_symbol.bootstrap.servers' = '{broker.bootstrap}',
    'state.partitioned' = 'true'
);
"""


COUNTS = (
    "SELECT symbol PRIMARY KEY, COUNT(*) AS n, SUM(qty) AS total FROM src "
    "GROUP BY symbol EMIT CHANGES"
)


def _trades(start: int, n: int, by_id: bool = False) -> tuple[list[bytes], list[bytes]]:
    """Trades keyed by symbol (or by trade id: `by_id`)."""
    values, keys = [], []
    for i in range(start, start + n):
        symbol = SYMBOLS[(i * 7 + i // 13) % len(SYMBOLS)]
        values.append(orjson.dumps({"id": i, "symbol": symbol, "qty": i % 17 + 1}))
        keys.append(str(i).encode() if by_id else symbol.encode())
    return values, keys


def _truth(n: int) -> dict[str, tuple[int, int]]:
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for value in _trades(0, n)[0]:
        row = orjson.loads(value)
        out[row["symbol"]][0] += 1
        out[row["symbol"]][1] += row["qty"]
    return {k: (v[0], v[1]) for k, v in out.items()}


def _final(broker: KafkaBroker, sink: str) -> dict[str, tuple[int, int]]:
    last: dict[str, dict[str, Any]] = {}
    for record in broker.read_all(sink):
        row = orjson.loads(record.value)
        last[row["symbol"]] = row
    return {k: (r["n"], r["total"]) for k, r in last.items()}


def _metrics(server: Server) -> dict[str, float]:
    """The job's samples on `server`, summed over labels other than `job`."""
    body = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10).text
    out: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.labels.get("job") == "per_symbol":
                out[sample.name] += sample.value
    return out


def _held(server: Server) -> tuple[str, list[int]]:
    doc = httpx.get(f"http://127.0.0.1:{server.port}/jobs/per_symbol", timeout=10).json()
    state = doc["partitioned_state"]
    return state["node"], state["partitions"]


def _settled(live: list[Server]) -> Callable[[], bool]:
    """Whether the job's partitions are held by the live servers, each once, the last
    (the replacement) holding some: the group has let the killed member go and taken
    its replacement in, so no rebalance of the job is still to come.

    `Server.assigned` is not enough: it reads the last assignment of any job in the
    log, and a repartitioned app has two, in two groups. The replacement's
    `per_symbol_repartition` can be given its partitions seconds before its
    `per_symbol` (7 s was seen), and node-b's restore after the killed member left
    says "restored from" meanwhile: the last trades could then be counted, and
    `_held` asked, while `per_symbol` is still rebalancing."""

    def check() -> bool:
        try:
            held = [_held(s)[1] for s in live]
        except (httpx.HTTPError, KeyError, TypeError):  # not serving, or no state yet
            return False
        return bool(held[-1]) and sorted(p for parts in held for p in parts) == [0, 1, 2, 3]

    return check


def _caught_up(broker: KafkaBroker, group: str, topic: str) -> Callable[[], bool]:
    """Whether `group` has committed `topic` past its last record, twice in a row. A
    topic written in transactions has offsets for its commit and abort markers too, so
    its offsets are not a count of its records, and its end may be a marker.

    `read_all` returns what it has read when its time is up: on a busy machine that
    can be part of the topic, or none of it, and nothing read would be "caught up"
    with anything. It returns at the topic's end, so its long timeout costs nothing
    when the broker answers; and a read that found no record is never caught up (it
    is only asked once the topic has records)."""
    seen: list[dict[int, int]] = []

    def check() -> bool:
        last: dict[int, int] = {}
        for record in broker.read_all(topic, timeout=30):
            last[record.partition] = max(last.get(record.partition, -1), record.offset)
        committed = broker.committed(group, topic)
        done = bool(last) and all(committed.get(p, -1) > offset for p, offset in last.items())
        seen.append(committed if done else {})
        return len(seen) >= 2 and bool(seen[-1]) and seen[-1] == seen[-2]

    return check


def _committed_all(broker: KafkaBroker, group: str, topic: str, n: int) -> Callable[[], bool]:
    return lambda: sum(max(0, o) for o in broker.committed(group, topic).values()) == n


@pytest.mark.parametrize("keyed", [True, False], ids=["keyed_by_symbol", "repartitioned"])
def test_three_servers_one_killed_one_added_later_give_exact_counts(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str], tmp_path: Path, keyed: bool
) -> None:
    """The issue's case: GROUP BY symbol on a topic keyed by symbol, or by trade id
    (then the job repartitions through `<group>-repartition` first)."""
    source, sink = new_topic("in", partitions=4), new_topic("out")
    group = f"velo-{source}"
    app = tmp_path / "app.sql"
    app.write_text(_app(kafka_broker, source, sink, group, COUNTS, keyed))
    n, step = 6_000, 2_000
    servers = [Server(app, "node-a", tmp_path), Server(app, "node-b", tmp_path)]
    try:
        _wait(lambda: all(s.assigned() for s in servers), 90, "a and b assigned", servers)
        values, keys = _trades(0, step, not keyed)
        kafka_broker.produce(source, values, keys=keys)
        if keyed:
            _wait(_committed_all(kafka_broker, group, source, step), 90, "a first part", servers)
        else:
            done = _committed_all(kafka_broker, f"{group}-repartition", source, step)
            _wait(done, 90, "a first part repartitioned", servers)
            _wait(_caught_up(kafka_broker, group, f"{group}-repartition"), 90, "...", servers)
        servers[0].process.kill()  # SIGKILL, with more trades to come
        servers[0].process.wait(10)
        # Its replacement, with a fresh data dir, starts at once (see the module doc).
        (tmp_path / "replacement").mkdir()
        servers.append(Server(app, "node-a", tmp_path / "replacement"))
        live = servers[1:]
        values, keys = _trades(step, step, not keyed)
        kafka_broker.produce(source, values, keys=keys)
        _wait(_settled(live), 90, "a's replacement holds its share of the state", live)
        restored = lambda: any("restored from" in s.text() for s in live)  # noqa: E731
        _wait(restored, 60, "a's partitions restored from the changelog", live)
        values, keys = _trades(2 * step, n - 2 * step, not keyed)
        kafka_broker.produce(source, values, keys=keys)
        if not keyed:  # first every trade repartitioned, then every one aggregated
            done = _committed_all(kafka_broker, f"{group}-repartition", source, n)
            _wait(done, 120, "every trade repartitioned", live)
            caught_up = _caught_up(kafka_broker, group, f"{group}-repartition")
            _wait(caught_up, 120, "every repartitioned trade aggregated", live)
        else:
            _wait(_committed_all(kafka_broker, group, source, n), 120, "all committed", live)
        metrics = [_metrics(s) for s in live]
        held = [_held(s) for s in live]
    finally:
        for server in servers:
            server.stop()
    final = _final(kafka_broker, sink)
    truth = _truth(n)
    wrong = {k: (final.get(k), v) for k, v in truth.items() if final.get(k) != v}
    assert not wrong, f"{len(wrong)} of {len(truth)} symbols wrong: {wrong}"
    restores = sum(m.get("velo_state_restores_total", 0) for m in metrics)
    assert restores >= 1, metrics
    # /jobs/per_symbol on each live node names the partitions it holds: all, once.
    assert sorted(p for node, parts in held for p in parts) == [0, 1, 2, 3], held
    assert {node for node, _ in held} == {"node-b", "node-a"}


def test_a_server_with_an_empty_data_dir_restores_from_the_changelog(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    source, sink = new_topic("in", partitions=3), new_topic("out")
    group = f"velo-{source}"
    app = tmp_path / "app.sql"
    app.write_text(_app(kafka_broker, source, sink, group, COUNTS))
    n = 3_000
    texts = []
    for third, wipe in ((0, False), (1, False), (2, True)):
        if wipe:
            shutil.rmtree(tmp_path / "node-a")  # its checkpoint (the local cache) is gone
        server = Server(app, "node-a", tmp_path)
        try:
            _wait(server.assigned, 90, "assigned", [server])
            values, keys = _trades(third * n // 3, n // 3)
            kafka_broker.produce(source, values, keys=keys)
            done = _committed_all(kafka_broker, group, source, (third + 1) * n // 3)
            _wait(done, 90, f"third {third}", [server])
        finally:
            server.stop()
        texts.append(server.text())
    # A first start has nothing to restore; a restart finds its checkpoint at the
    # group's committed offsets; with the data dir gone, the changelog has the state.
    assert texts[0].count("starts empty") == 3, texts[0][-3000:]
    assert texts[1].count("from the local checkpoint") == 3, texts[1][-3000:]
    restored = f"restored from {group}-state-changelog"
    assert texts[2].count(restored) == 3, texts[2][-3000:]
    assert _final(kafka_broker, sink) == _truth(n)


WINDOWS = (
    "SELECT symbol, _window_start AS window_start, COUNT(*) AS n, SUM(qty) AS total FROM src "
    "GROUP BY symbol WINDOW TUMBLING(ts, 1m) EMIT FINAL"
)


def _timed_trades(start: int, n: int) -> tuple[list[bytes], list[bytes]]:
    """Trades 150 ms apart (in time order), then a last trade per symbol an hour
    later that closes every window before it."""
    values, keys = _trades(start, n)
    rows = [orjson.loads(v) | {"ts": (start + i) * 150} for i, v in enumerate(values)]
    return [orjson.dumps(r) for r in rows], keys


def _closers(after: int) -> tuple[list[bytes], list[bytes]]:
    ts = after * 150 + 3_600_000
    rows = [{"id": -1, "symbol": s, "qty": 0, "ts": ts} for s in SYMBOLS]
    return [orjson.dumps(r) for r in rows], [s.encode() for s in SYMBOLS]


def _windows(broker: KafkaBroker, sink: str) -> tuple[dict[tuple[str, Any], Any], int]:
    """Each window's final result (the last written for it), and how many were written."""
    rows = [orjson.loads(r.value) for r in broker.read_all(sink)]
    final = {(r["symbol"], r["window_start"]): (r["n"], r["total"]) for r in rows}
    return final, len(rows)


def test_a_tumbling_window_on_three_servers_under_churn_equals_one_server(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    source = new_topic("in", partitions=4)
    one_sink, three_sink = new_topic("one"), new_topic("three")
    one_app, three_app = tmp_path / "one.sql", tmp_path / "three.sql"
    one_app.write_text(_app(kafka_broker, source, one_sink, f"one-{source}", WINDOWS))
    three_app.write_text(_app(kafka_broker, source, three_sink, f"three-{source}", WINDOWS))
    n = 4_000
    alone = Server(one_app, "alone", tmp_path)
    servers = [Server(three_app, "node-a", tmp_path), Server(three_app, "node-b", tmp_path)]
    everyone = [alone, *servers]
    try:
        _wait(lambda: all(s.assigned() for s in everyone), 90, "all assigned", everyone)
        values, keys = _timed_trades(0, n // 2)
        kafka_broker.produce(source, values, keys=keys)
        half = _committed_all(kafka_broker, f"three-{source}", source, n // 2)
        _wait(half, 90, "the first half", everyone)
        servers[0].process.kill()
        servers[0].process.wait(10)
        (tmp_path / "replacement").mkdir()  # started at once (see the module doc)
        servers.append(Server(three_app, "node-a", tmp_path / "replacement"))
        live = [alone, *servers[1:]]
        values, keys = _timed_trades(n // 2, n - n // 2)
        closing, closing_keys = _closers(n)
        kafka_broker.produce(source, values + closing, keys=keys + closing_keys)
        total = n + len(SYMBOLS)
        _wait(_committed_all(kafka_broker, f"one-{source}", source, total), 120, "one", live)
        _wait(_committed_all(kafka_broker, f"three-{source}", source, total), 120, "three", live)
    finally:
        for server in [alone, *servers]:
            server.stop()
    truth: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for value in _timed_trades(0, n)[0]:
        row = orjson.loads(value)
        cell = truth[(row["symbol"], row["ts"] // 60_000)]
        cell[0] += 1
        cell[1] += row["qty"]
    (one, written), (three, _) = (
        _windows(kafka_broker, one_sink),
        _windows(kafka_broker, three_sink),
    )
    assert written == len(one) == len(truth), (written, len(one), len(truth))  # each once
    by_symbol = sorted((s, n, t) for (s, _), (n, t) in one.items())
    assert by_symbol == sorted((s, c[0], c[1]) for (s, _), c in truth.items())
    # Each window's final result on three servers under churn is the one server's. (A
    # window may be written twice there: tansu serves the records of the killed
    # server's last, aborted transaction to read_committed readers.)
    differ = {w: (three.get(w), r) for w, r in one.items() if three.get(w) != r}
    assert not differ and len(three) == len(one), (differ, len(three), len(one))


def test_a_stream_table_join_under_the_same_churn_writes_each_trade_once(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """A stream–table join keeps no state: each server joins its partitions' trades to
    the whole table. Under the same churn (kill, replacement) each trade is written
    once, joined (transactional mode)."""
    source, sink = new_topic("in", partitions=4), new_topic("out")
    group = f"velo-{source}"
    (tmp_path / "instruments.csv").write_text(
        "symbol,name\n" + "".join(f"{s},name of {s}\n" for s in SYMBOLS)
    )
    app = tmp_path / "app.sql"
    app.write_text(
        f"""
-- @app: joined
-- @job_mode: transactional
-- @batch_size: 100
CREATE STREAM enriched AS
SELECT t.id, t.symbol, i.name FROM src t LEFT JOIN instruments i ON t.symbol = i.symbol
EMIT CHANGES
WITH (
    'src.type' = 'kafka_source', 'src.topic' = '{source}',
    'src.bootstrap.servers' = '{kafka_broker.bootstrap}', 'src.group.id' = '{group}',
    'src.session.timeout.ms' = '6000',
    'instruments.type' = 'file_source', 'instruments.path' = '{tmp_path / "instruments.csv"}',
    'enriched.type' = 'kafka_sink', 'enriched.topic' = '{sink}',
    'enriched.bootstrap.servers' = '{kafka_broker.bootstrap}'
);
"""
    )
    n, step = 6_000, 2_000
    servers = [Server(app, "node-a", tmp_path), Server(app, "node-b", tmp_path)]
    try:
        _wait(lambda: all(s.assigned() for s in servers), 90, "a and b assigned", servers)
        values, keys = _trades(0, step, by_id=True)
        kafka_broker.produce(source, values, keys=keys)
        _wait(_committed_all(kafka_broker, group, source, step), 90, "a first part", servers)
        servers[0].process.kill()
        servers[0].process.wait(10)
        (tmp_path / "replacement").mkdir()
        servers.append(Server(app, "node-a", tmp_path / "replacement"))
        live = servers[1:]
        values, keys = _trades(step, step, by_id=True)
        kafka_broker.produce(source, values, keys=keys)
        _wait(lambda: servers[2].assigned(), 90, "a's replacement joins", live)
        values, keys = _trades(2 * step, n - 2 * step, by_id=True)
        kafka_broker.produce(source, values, keys=keys)
        _wait(_committed_all(kafka_broker, group, source, n), 120, "all committed", live)
    finally:
        for server in servers:
            server.stop()
    rows = [orjson.loads(r.value) for r in kafka_broker.read_all(sink)]
    ids = defaultdict(int)
    for row in rows:
        ids[row["id"]] += 1
        assert row["name"] == f"name of {row['symbol']}", row
    assert set(ids) == set(range(n)), f"{n - len(ids)} trades missing"
    twice = [i for i, c in ids.items() if c > 1]
    assert not twice, f"{len(twice)} trades written more than once"
