"""Stream–stream joins as real processes: `velo-sql run`, and a server killed (SIGKILL)
mid-join then restarted.

- `run`: two CSV files joined with `'join.timeout'` (both streamed, batches of 2
  interleaved): each order with the payments of its customer within the timeout of
  event time, an order without one (LEFT JOIN) with empty payment columns; a payment
  older than the watermark is counted late.
- crash: two large CSV files joined on `id` (each order has one payment 0..20 ms from
  it), the server killed while the job is mid-stream in both. The restarted server
  resumes both sources and both sides' kept rows from the checkpoint; in transactional
  mode every order comes out exactly once, joined to its payment; in simple mode none is
  lost.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.server_process import (
    Launcher,
    VeloServer,
    checkpoint,
    launcher,
    read_csv,
    velo_sql,
    wait_for,
)

__all__ = ["launcher"]

pytestmark = [pytest.mark.integration]

RUN_SQL = """-- @app: ssjoin_run
-- @batch_size: 2
CREATE STREAM paid AS
SELECT o.id, o.customer, p.pid, p.amount
FROM orders o LEFT JOIN payments p ON o.customer = p.customer
EMIT CHANGES
WITH (
    'orders.type' = 'file_source', 'orders.path' = './orders.csv', 'orders.format' = 'csv',
    'payments.type' = 'file_source', 'payments.path' = './payments.csv',
    'payments.format' = 'csv',
    'join.timeout' = '1s',
    'event.time.field' = 'ts',
    'paid.type' = 'file_sink', 'paid.path' = './paid.csv', 'paid.format' = 'csv'
);
"""


def test_velo_sql_run_joins_two_streams_within_the_timeout(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text(
        "id,customer,ts\n1,c1,1000\n2,c2,2000\n3,c1,5000\n4,c3,6000\n5,c2,9000\n",
        encoding="utf-8",
    )
    (tmp_path / "payments.csv").write_text(
        # c1 pays twice near order 1 and once 3s after order 3 (too late); c2 pays 500ms
        # after order 2; order 5 (c2, 9000) has its payment 900ms before it. The last
        # payment (100) comes when both sides are past 8000: late.
        "pid,customer,amount,ts\n10,c1,1.5,1200\n11,c1,2.5,1900\n12,c2,3.0,2500\n"
        "13,c1,4.0,8000\n14,c2,5.0,8100\n9,c9,1.0,100\n",
        encoding="utf-8",
    )
    (tmp_path / "app.sql").write_text(RUN_SQL, encoding="utf-8")

    result = velo_sql("run", "app.sql", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    rows = read_csv(tmp_path / "paid.csv")
    got = sorted((r["id"], r["pid"]) for r in rows)
    assert got == [("1", "10"), ("1", "11"), ("2", "12"), ("3", ""), ("4", ""), ("5", "14")]
    summary = " ".join(result.stdout.split())
    assert "│ paid │ ok │ 11 │ 6 │ 0 │ 1 │" in summary, result.stdout  # in, out, failed, late
    assert "older than the stream–stream join's watermark" in summary


# --- SIGKILL mid-join, restart -----------------------------------------------------------

ROWS = 100_000  # orders
LAG = 1_000


def write_sides(folder: Path) -> tuple[Path, Path]:
    """orders `id,customer,ts` (ts = 10·id ms) and payments `id,amount,ts`, each payment
    0..20 ms after its order, a little out of order. Payments start LAG ids early (ids
    below 0 pay for no order), so the orders read lead theirs: about LAG orders wait,
    unmatched, in the join's state at any checkpoint."""
    orders, payments = folder / "orders.csv", folder / "payments.csv"
    with open(orders, "w", encoding="utf-8") as out:
        out.write("id,customer,ts\n")
        for i in range(ROWS):
            out.write(f"{i},c{i % 13},{10 * i}\n")
    with open(payments, "w", encoding="utf-8") as out:
        out.write("id,amount,ts\n")
        for i in range(-LAG, ROWS):
            out.write(f"{i},{i % 50}.5,{10 * i + (i * 7) % 21}\n")
    return orders, payments


@pytest.fixture(scope="module")
def sides(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_sides(tmp_path_factory.mktemp("ssjoin_input"))


def crash_sql(orders: Path, payments: Path, out: Path, mode: str) -> str:
    return f"""-- @app: ssjoin_crash_{mode}
-- @version: 1.0.0
-- @job_mode: {mode}
-- @batch_size: 2000
CREATE STREAM paid AS
SELECT o.id, o.customer, p.amount
FROM orders o LEFT JOIN payments p ON o.id = p.id
EMIT CHANGES
WITH (
    'orders.type' = 'file_source', 'orders.path' = '{orders}', 'orders.format' = 'csv',
    'payments.type' = 'file_source', 'payments.path' = '{payments}',
    'payments.format' = 'csv',
    'join.timeout' = '50ms',
    'watermark.max_out_of_orderness' = '30ms',
    'event.time.field' = 'ts',
    'paid.type' = 'file_sink', 'paid.path' = '{out}', 'paid.format' = 'csv'
);
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["simple", "transactional"])
def test_sigkill_mid_join_then_restart_resumes_both_sides(
    mode: str, sides: tuple[Path, Path], tmp_path: Path, launcher: Launcher
) -> None:
    orders, payments = sides
    data_dir, out = tmp_path / "data", tmp_path / "paid.csv"
    server = launcher.server(data_dir)
    assert server.deploy(crash_sql(orders, payments, out, mode)) == ["paid"]

    def mid_stream() -> bool:
        job = server.job("paid")
        assert job["state"] == "running", f"ended before the kill: {job['state']}"
        per = job["per_source"]
        return bool(per) and min(per[s]["records_in"] for s in ("orders", "payments")) >= ROWS // 5

    wait_for("both sides mid-stream", mid_stream, timeout=60, every=0.01)
    server.kill()

    doc = checkpoint(data_dir, "paid")
    committed = {name: int(p["line"]) - 1 for name, p in doc["position"].items()}
    assert all(0 < n < ROWS for n in committed.values()), committed
    restarted: VeloServer = launcher.server(data_dir)
    job = restarted.wait_state("paid", "completed", timeout=180)
    assert job["records_in"] == 2 * ROWS + LAG - sum(committed.values())
    assert job.get("late_records", 0) == 0

    rows = read_csv(out)
    ids = [int(r["id"]) for r in rows]
    assert all(r["amount"] != "" for r in rows), "an order lost its payment"
    if mode == "transactional":
        assert len(ids) == ROWS and set(ids) == set(range(ROWS)), f"{len(ids) - ROWS:+d} rows"
    else:
        assert set(ids) == set(range(ROWS)), "rows lost"
