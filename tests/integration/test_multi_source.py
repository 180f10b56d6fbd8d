"""Multi-source jobs (UNION ALL) as real processes: `velo-sql run`, `validate`, and a
server killed (SIGKILL) mid-job then restarted.

- `run`: a union of a CSV file with poison rows and a JSON-lines file; every good row
  of both comes out, each poison row is a dead letter naming its source and line, and
  the summary counts what came in, out and failed.
- `validate`: branches whose columns differ are refused in one line.
- crash: two large CSV files (one with poison lines) unioned by a server that is
  killed while the job is mid-stream in both sources. The restarted server resumes each
  source at its own checkpointed line; in transactional mode the output holds every
  good row exactly once and the dead letters every poison line exactly once; in simple
  mode nothing is lost.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.server_process import (
    Launcher,
    VeloServer,
    checkpoint,
    launcher,
    read_csv,
    read_ids,
    velo_sql,
    wait_for,
)

__all__ = ["launcher"]

pytestmark = [pytest.mark.integration]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


# --- velo-sql run / validate ---------------------------------------------------------

RUN_SQL = """-- @app: union_run
-- @batch_size: 3
CREATE STREAM merged AS
SELECT id, price, 'a' AS origin FROM a WHERE price > 0
UNION ALL
SELECT id, amount AS price, 'b' AS origin FROM b
EMIT CHANGES
WITH (
    'a.type' = 'file_source', 'a.path' = './a.csv', 'a.format' = 'csv',
    'b.type' = 'file_source', 'b.path' = './b.jsonl', 'b.format' = 'jsonl',
    'merged.type' = 'file_sink', 'merged.path' = './merged.csv', 'merged.format' = 'csv',
    'failure_strategy' = 'SendToDLQ', 'dlq.path' = './dead.jsonl'
);
"""


def test_velo_sql_run_unions_two_files_and_isolates_the_poison_of_one(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(
        'id,price\n1,10.5\n2,20.0\n3,-1.0\n4,40.0,extra\n5,50.5\n6,60.0\n7,"70\n',
        encoding="utf-8",
    )
    b_rows = [json.dumps({"id": 100 + i, "amount": i + 0.5}) for i in range(7)]
    b_rows.insert(4, "{not json")
    (tmp_path / "b.jsonl").write_text("\n".join(b_rows) + "\n", encoding="utf-8")
    (tmp_path / "app.sql").write_text(RUN_SQL, encoding="utf-8")

    result = velo_sql("run", "app.sql", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    rows = read_csv(tmp_path / "merged.csv")
    assert [r["id"] for r in rows if r["origin"] == "a"] == ["1", "2", "5", "6"]
    assert [r["id"] for r in rows if r["origin"] == "b"] == [str(100 + i) for i in range(7)]
    # Batches alternate: b's first rows come before a's last.
    origins = [r["origin"] for r in rows]
    assert origins.index("b") < len(origins) - origins[::-1].index("a") - 1
    letters = read_jsonl(tmp_path / "dead.jsonl")
    # Positions name the files as read: relative paths taken from the application's folder.
    folder = tmp_path.resolve()
    assert sorted((d["source"], d["position"]) for d in letters) == [
        ("a", f"{folder}/a.csv:5"),
        ("a", f"{folder}/a.csv:8"),
        ("b", f"{folder}/b.jsonl:5"),
    ]
    # The summary: 7 + 8 records in; 4 + 7 out; 1 filtered (price -1.0); 3 failed.
    summary = " ".join(result.stdout.split())
    assert "│ merged │ ok │ 15 │ 11 │ 3 │ 0 │" in summary, result.stdout


def test_velo_sql_validate_refuses_branches_whose_types_differ(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,price\n1,10.5\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text('{"id": 1, "amount": "cheap"}\n', encoding="utf-8")
    (tmp_path / "app.sql").write_text(RUN_SQL, encoding="utf-8")

    result = velo_sql("validate", "app.sql", cwd=tmp_path)

    assert result.returncode != 0
    output = " ".join((result.stdout + result.stderr).split())
    assert "UNION ALL column price is DOUBLE FROM a but VARCHAR FROM b: CAST one of them" in output
    assert "statement 1 (merged) at 6:1:" in output  # at the branch that differs


# --- SIGKILL mid-job, restart ------------------------------------------------------------

ROWS = 150_000  # per source
POISON_EVERY = 9_973  # in b: a line with a field too many


def write_source(path: Path, first_id: int, *, poison: bool) -> list[int]:
    """A CSV `id,symbol,qty` of ROWS rows from `first_id`; return the poisoned line numbers."""
    poisoned = []
    with open(path, "w", encoding="utf-8") as out:
        out.write("id,symbol,qty\n")
        for i in range(ROWS):
            if poison and i % POISON_EVERY == POISON_EVERY - 1:
                out.write(f"{first_id + i},BAD,1,extra\n")
                poisoned.append(i + 2)  # 1-based, after the header
            else:
                out.write(f"{first_id + i},S{i % 7},{i % 97 + 1}\n")
    return poisoned


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[int]]:
    folder = tmp_path_factory.mktemp("union_input")
    write_source(folder / "a.csv", 0, poison=False)
    poisoned = write_source(folder / "b.csv", ROWS, poison=True)
    return folder / "a.csv", folder / "b.csv", poisoned


def crash_sql(a: Path, b: Path, out: Path, dlq: Path, mode: str) -> str:
    return f"""-- @app: union_crash_{mode}
-- @version: 1.0.0
-- @job_mode: {mode}
-- @batch_size: 5000
CREATE STREAM merged AS
SELECT id, symbol, qty FROM a WHERE md5(CAST(id AS VARCHAR)) <> ''
UNION ALL
SELECT id, symbol, qty FROM b WHERE md5(CAST(id AS VARCHAR)) <> ''
EMIT CHANGES
WITH (
    'a.type' = 'file_source', 'a.path' = '{a}', 'a.format' = 'csv',
    'b.type' = 'file_source', 'b.path' = '{b}', 'b.format' = 'csv',
    'merged.type' = 'file_sink', 'merged.path' = '{out}', 'merged.format' = 'csv',
    'failure_strategy' = 'SendToDLQ', 'dlq.path' = '{dlq}'
);
"""


def committed_lines(data_dir: Path) -> dict[str, int]:
    """Each source's committed data lines in the job's checkpoint."""
    doc = checkpoint(data_dir, "merged")
    assert set(doc["sources"]) == {"a", "b"}
    return {name: int(position["line"]) - 1 for name, position in doc["position"].items()}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["simple", "transactional"])
def test_sigkill_mid_union_then_restart_resumes_each_source(
    mode: str,
    sources: tuple[Path, Path, list[int]],
    tmp_path: Path,
    launcher: Launcher,
) -> None:
    a, b, poisoned = sources
    data_dir, out, dlq = tmp_path / "data", tmp_path / "merged.csv", tmp_path / "dead.jsonl"
    sql = crash_sql(a, b, out, dlq, mode)

    server = launcher.server(data_dir)
    assert server.deploy(sql) == ["merged"]

    def mid_stream() -> bool:
        job = server.job("merged")
        assert job["state"] == "running", f"ended before the kill: {job['state']}"
        per = job["per_source"]
        return bool(per) and min(per[s]["records_in"] for s in ("a", "b")) >= ROWS // 5

    wait_for("both sources mid-stream", mid_stream, timeout=60, every=0.01)
    server.kill()

    committed = committed_lines(data_dir)
    assert all(0 < n < ROWS for n in committed.values()), committed
    restarted: VeloServer = launcher.server(data_dir)  # deploys the application again
    doc = restarted.wait_state("merged", "completed", timeout=120)

    # Each source resumed at its own committed line.
    assert doc["per_source"]["a"]["records_in"] == ROWS - committed["a"]
    assert doc["per_source"]["b"]["records_in"] == ROWS - committed["b"]
    assert doc["records_in"] == 2 * ROWS - committed["a"] - committed["b"]
    ids = read_ids(out)
    bad_ids = {ROWS + line - 2 for line in poisoned}
    good = set(range(2 * ROWS)) - bad_ids
    letters = read_jsonl(dlq)
    assert {d["source"] for d in letters} == {"b"}
    if mode == "transactional":
        assert len(ids) == len(good) and set(ids) == good, f"{len(ids) - len(good):+d} rows"
        assert sorted(d["position"] for d in letters) == sorted(f"{b}:{n}" for n in poisoned)
    else:
        assert not good - set(ids), "rows lost"
        assert {d["position"] for d in letters} == {f"{b}:{n}" for n in poisoned}
