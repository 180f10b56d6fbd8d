"""record_error cost, side by side with a bare prometheus_client Counter.inc().

Goals (issue 2): a repeated message ≤ 10× a bare Counter.inc(); a new message ≤ 30 µs.
Prints the median of several rounds and the ratios.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter

from velostream.errors import ErrorKind, Stage
from velostream.observability.manager import ObservabilityManager, StreamingConfig
from velostream.server.processors.error_tracking_helper import ErrorTracker

ROUNDS = 7
N = 100_000


def _ns_per_call(fn: Callable[[int], None], n: int) -> float:
    start = time.perf_counter_ns()
    fn(n)
    return (time.perf_counter_ns() - start) / n


def _median(fn: Callable[[int], None], n: int) -> float:
    fn(min(n, 1000))  # warm-up
    return statistics.median(_ns_per_call(fn, n) for _ in range(ROUNDS))


def main() -> None:
    logging.getLogger("velostream").addHandler(logging.NullHandler())
    logging.getLogger("velostream").propagate = False
    counter = Counter("bench_total", "baseline", registry=CollectorRegistry())

    def bare(n: int) -> None:
        inc = counter.inc
        for _ in range(n):
            inc()

    manager = ObservabilityManager.from_streaming_config(
        StreamingConfig(process_metrics=False), CollectorRegistry()
    )
    manager.initialize()
    record = ErrorTracker.record_error

    def repeated(n: int) -> None:
        for _ in range(n):
            record(
                manager,
                "bench",
                "value 'abc' is not an integer",
                stage=Stage.PROCESS,
                kind=ErrorKind.TYPE,
            )

    words = [f"w{i:x}q" for i in range(4096)]
    seq = [0]

    def always_new(n: int) -> None:
        base = seq[0]
        for i in range(base, base + n):
            # distinct after normalisation: letters change, not just numbers
            msg = f"column {words[i % 4096]}{words[(i // 4096) % 4096]} failed: {i}"
            record(manager, "bench", msg, stage=Stage.DESERIALIZE, kind=ErrorKind.PARSE)
        seq[0] = base + n

    base_ns = _median(bare, N)
    rep_ns = _median(repeated, N)
    new_ns = _median(always_new, N // 5)
    print(f"bare Counter.inc()            {base_ns:10.0f} ns/call")
    print(
        f"record_error repeated message {rep_ns:10.0f} ns/call  ratio {rep_ns / base_ns:5.1f}x"
        f"  (goal <= 10x) {'OK' if rep_ns <= 10 * base_ns else 'MISSED'}"
    )
    print(
        f"record_error new message      {new_ns:10.0f} ns/call  ({new_ns / 1000:.1f} us;"
        f" goal <= 30 us) {'OK' if new_ns <= 30_000 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
