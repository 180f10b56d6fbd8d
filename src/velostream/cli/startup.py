"""A short command's start-up without the cyclic GC.

Importing DuckDB, Arrow, sqlglot, Typer and Rich, then parsing and planning an
application, makes ~110k objects that live as long as the process, and almost no
cyclic garbage (~1k objects for a CSV filter job). The GC's ~170 passes over them
cost 60-80 ms of a short `velo-sql run` and 15-30 ms of a `--help` (measured with
`gc.callbacks`). A command that ends once it has printed (help, `validate`) runs
without the GC; `run` turns it back on before its jobs start, first freezing what
start-up made, so that no later collection walks it again.

NumPy (loaded by Arrow) starts OpenBLAS's worker threads, which spin on a core for a
while after they start, waiting for work that `velo-sql` never gives them: we use no
BLAS routine. `single_blas_thread` keeps OpenBLAS on the calling thread; on a 2-core
machine the spin took ~0.1 s of CPU from every `run` (`perf stat`, a 1,000-row run).
"""

from __future__ import annotations

import gc
import os

__all__ = ["asks_for_help", "choose_arrow_pool", "pause_gc", "resume_gc", "single_blas_thread"]


def asks_for_help(args: list[str]) -> bool:
    """Whether `args` only ask for help: none (each tool then shows its help), or
    command names then `--help`, which Click answers before anything else."""
    return not args or (args[-1] == "--help" and not any(a.startswith("-") for a in args[:-1]))


def pause_gc() -> None:
    """Turn the cyclic GC off for start-up (or for the rest of a short command)."""
    gc.disable()


def resume_gc() -> None:
    """After start-up, freeze what it made and turn the GC back on; nothing if the GC
    is on (start-up did not pause it)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def single_blas_thread() -> None:
    """Keep OpenBLAS from starting worker threads, unless the user set their number;
    only effective before NumPy is first imported."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def choose_arrow_pool() -> str:
    """Arrow's buffers from jemalloc (the system allocator if Arrow has none), not mimalloc;
    returns the pool's name. An explicit ARROW_DEFAULT_MEMORY_POOL is left alone.

    mimalloc, Arrow's default, keeps a heap per thread, and what a job's thread freed stays
    in that heap while the job idles. With 50 jobs that had each read 200,000 rows, a
    server held 1.2 GiB idle under mimalloc and 0.45-0.5 GiB under jemalloc or the system
    allocator (`benchmarks/bench_memory.py`). In a short `run`, mimalloc's fresh segments
    are zeroed by the kernel huge page by huge page as they are first touched: a 2M-row
    filter + projection took ~16% more CPU than under jemalloc, 1BRC and a tumbling window
    ~6% more (`perf stat`, alternated runs).
    """
    import pyarrow as pa

    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        try:
            pa.set_memory_pool(pa.jemalloc_memory_pool())
        except NotImplementedError:  # a build without jemalloc (macOS, Windows wheels)
            pa.set_memory_pool(pa.system_memory_pool())
    return str(pa.default_memory_pool().backend_name)
