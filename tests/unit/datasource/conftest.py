"""Helpers for datasource tests: read a whole source, write files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from velostream.datasource import registry
from velostream.datasource.file.source import FileSource
from velostream.datasource.traits import BadRecord, Source


@dataclass
class Drained:
    """Everything a bounded source produced, batch by batch."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    raws: list[bytes] = field(default_factory=list)
    bad: list[BadRecord] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    positions: list[Any] = field(default_factory=list)


def drain(source: Source, max_records: int = 1000, limit: int = 100_000) -> Drained:
    """Read `source` to its end (then close it), checking batch sizes on the way."""
    out = Drained()
    try:
        for _ in range(limit):
            batch = source.read_batch(max_records)
            if batch is None:
                return out
            assert batch.num_records <= max_records
            out.sizes.append(batch.num_records)
            out.positions.append(batch.position)
            out.rows.extend(batch.table.to_pylist())
            for i in range(batch.table.num_rows):
                out.refs.append(batch.refs.ref(i))
                out.raws.append(batch.refs.raw(i))
            out.bad.extend(batch.bad)
    finally:
        source.close()
    raise AssertionError("source did not end")


@pytest.fixture
def clean_registry() -> Iterator[None]:
    """Forget the types (and option checks) a test registers."""
    extras = (
        registry._extra_sources,
        registry._extra_sinks,
        registry._extra_source_options,
        registry._extra_sink_options,
    )
    saved = [dict(extra) for extra in extras]
    yield
    for extra, before in zip(extras, saved, strict=True):
        extra.clear()
        extra.update(before)


@pytest.fixture
def make_source(tmp_path: Path) -> Callable[..., FileSource]:
    """make_source(text_or_bytes, name="data.csv", **properties) -> FileSource."""

    def make(content: str | bytes, name: str = "data.csv", **props: str) -> FileSource:
        path = tmp_path / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        props.setdefault("path", str(path))
        return FileSource("src", props)

    return make
