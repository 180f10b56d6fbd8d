"""The in-memory DuckDB databases that check SQL and run jobs: their settings, and
starting them ahead of need.

Starting an in-memory DuckDB takes 12-25 ms, during which DuckDB releases the GIL. A
short command (`velo-sql run FILE`, `velo-sql validate FILE`) knows before its imports
which databases it will open first (the checking database, and a job's with the
default settings), so `prestart` opens them on a thread while the main thread goes on
importing, and `connect` hands one over when a connection with exactly its settings is
asked for. Any other request, and every request of a process that prestarted nothing
(the server), opens a database of its own as before.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import duckdb

__all__ = ["CHECKING_THREADS", "checking_config", "connect", "prestart", "sandbox_config"]

#: The threads of the one checking database of a process (duckdb_check.py).
CHECKING_THREADS = 1

ConfigValue = str | bool | int | float | list[str]
Config = dict[str, ConfigValue]

# Settings of every database: no files, network or extensions.
_CLOSED: Config = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
}


class _Slot:
    """A database being opened on the prestart thread."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.connection: duckdb.DuckDBPyConnection | None = None


# The databases opened by `prestart` and not yet taken: (settings, slot) in order.
_started: list[tuple[Config, _Slot]] = []
_started_lock = threading.Lock()


def checking_config(threads: int | None = None) -> Config:
    """The checking database's settings (set up like the engine's); `threads` None:
    DuckDB's default."""
    config = dict(_CLOSED)
    if threads is not None:
        config["threads"] = threads
    return config


def sandbox_config(threads: int = 2, memory_limit: int | None = None) -> Config:
    """A job's database's settings: no files (nothing spills), insertion order kept,
    `memory_limit` bytes (None: DuckDB's default)."""
    limit: Config = {} if memory_limit is None else {"memory_limit": f"{memory_limit}B"}
    return {
        **limit,
        **_CLOSED,
        # No spilling (no files): only accepted after enable_external_access.
        "temp_directory": "",
        "threads": threads,
        "preserve_insertion_order": True,
    }


def prestart(*configs: Config) -> None:
    """Open a database with each of `configs`, in order, on a daemon thread."""
    slots = [(dict(config), _Slot()) for config in configs]
    with _started_lock:
        _started.extend(slots)
    threading.Thread(target=_open, args=(slots,), name="duckdb-prestart", daemon=True).start()


def _open(slots: list[tuple[Config, _Slot]]) -> None:
    for config, slot in slots:
        try:
            slot.connection = duckdb.connect(config=config)
        except duckdb.Error:  # `connect` opens it again, and raises where it is asked for
            slot.connection = None
        finally:
            slot.done.set()


def connect(config: Mapping[str, ConfigValue]) -> duckdb.DuckDBPyConnection:
    """A new in-memory database with `config`: a prestarted one if one has exactly
    these settings, else one opened now."""
    slot = None
    with _started_lock:
        for i, (started, each) in enumerate(_started):
            if started == config:
                slot = each
                del _started[i]
                break
    if slot is not None:
        slot.done.wait()
        if slot.connection is not None:
            return slot.connection
    return duckdb.connect(config=dict(config))
