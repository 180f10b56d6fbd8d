"""A row-at-a-time model of session windows, the reference the engine is tested against.

Rows are taken one by one in arrival order, with nothing vectorised: before each row,
every session whose end (last event time + gap) is before the watermark (max event time
of the rows before − out-of-orderness) closes; the row then joins every open session
of its key within `gap` of it (merging them), or is late when its own session
`[t, t + gap]` has ended before the watermark, or starts a session.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field


@dataclass
class _Session:
    key: Hashable
    rows: list[int] = field(default_factory=list)
    times: list[int] = field(default_factory=list)


@dataclass
class SessionModel:
    """Which rows were late; each session's rows (final); each row's session when it
    joined (for EMIT CHANGES)."""

    late: list[int] = field(default_factory=list)
    sessions: list[list[int]] = field(default_factory=list)
    running: list[tuple[int, list[int]]] = field(default_factory=list)


def sessions(
    rows: Sequence[tuple[int, Hashable, int]], gap: int, out_of_orderness: int
) -> SessionModel:
    """The model's answer for `rows` as (row id, key, event time) in arrival order."""
    model = SessionModel()
    open_sessions: list[_Session] = []
    highest: int | None = None
    for row, key, time in rows:
        watermark = None if highest is None else highest - out_of_orderness
        if watermark is not None:
            for session in [s for s in open_sessions if max(s.times) + gap < watermark]:
                open_sessions.remove(session)
                model.sessions.append(session.rows)
        touching = [
            s
            for s in open_sessions
            if s.key == key and min(s.times) - gap <= time <= max(s.times) + gap
        ]
        if not touching and watermark is not None and time + gap < watermark:
            model.late.append(row)
            continue
        merged = _Session(key)
        for session in touching:
            open_sessions.remove(session)
            merged.rows += session.rows
            merged.times += session.times
        merged.rows.append(row)
        merged.times.append(time)
        open_sessions.append(merged)
        model.running.append((row, sorted(merged.rows)))
        highest = time if highest is None else max(highest, time)
    model.sessions += [s.rows for s in open_sessions]
    return model
