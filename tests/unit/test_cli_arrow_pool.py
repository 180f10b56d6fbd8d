"""A server's Arrow buffers come from jemalloc (or the system allocator), not mimalloc,
whose per-thread heaps keep what idle jobs freed (benchmarks/bench_memory.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest

from velostream.cli.serve import use_arrow_pool_for_many_jobs


@pytest.fixture(autouse=True)
def _restore_pool() -> Iterator[None]:
    pool = pa.default_memory_pool()
    yield
    pa.set_memory_pool(pool)


def test_the_server_pool_is_not_mimalloc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    chosen = use_arrow_pool_for_many_jobs()
    assert chosen in ("jemalloc", "system")
    assert pa.default_memory_pool().backend_name == chosen
    assert pa.array(range(1000)).sum().as_py() == 499500  # it allocates


def test_an_operators_choice_of_pool_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    assert use_arrow_pool_for_many_jobs() == "mimalloc"
