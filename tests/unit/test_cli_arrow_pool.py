"""A server's and a run's Arrow buffers come from jemalloc (or the system allocator), not
mimalloc, whose per-thread heaps keep what idle jobs freed (benchmarks/bench_memory.py)
and whose fresh segments a short run pays the kernel to zero."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pyarrow as pa
import pytest

import velostream.cli.run as run_module
from velostream.cli import velo_sql
from velostream.cli.startup import choose_arrow_pool


@pytest.fixture(autouse=True)
def _restore_pool() -> Iterator[None]:
    pool = pa.default_memory_pool()
    yield
    pa.set_memory_pool(pool)


def test_the_server_pool_is_not_mimalloc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    chosen = choose_arrow_pool()
    assert chosen in ("jemalloc", "system")
    assert pa.default_memory_pool().backend_name == chosen
    assert pa.array(range(1000)).sum().as_py() == 499500  # it allocates


def test_an_operators_choice_of_pool_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    assert choose_arrow_pool() == "mimalloc"


def _exit(code: int | str | None) -> NoReturn:
    raise SystemExit(code)


def test_a_run_processes_with_the_chosen_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    (tmp_path / "in.csv").write_text("id,qty\n1,5\n2,50\n")
    (tmp_path / "app.sql").write_text(
        "CREATE STREAM o AS SELECT id FROM t WHERE qty > 10\n"
        "WITH ('t.type' = 'file_source', 't.path' = 'in.csv',\n"
        "      'o.type' = 'file_sink', 'o.path' = 'out.csv');\n"
    )
    monkeypatch.chdir(tmp_path)
    pools: list[str] = []
    real = run_module.run_application

    def spy(*args: Any, **kwargs: Any) -> list[run_module.JobRun]:
        pools.append(pa.default_memory_pool().backend_name)
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "run_application", spy)
    monkeypatch.setattr(velo_sql, "exit_now", _exit)  # it would end pytest's process
    monkeypatch.setattr("sys.argv", ["velo-sql", "run", "app.sql", "--data-dir", "vd"])
    with pytest.raises(SystemExit) as ended:
        velo_sql.main()
    assert ended.value.code == 0
    assert pools and pools[0] in ("jemalloc", "system")
