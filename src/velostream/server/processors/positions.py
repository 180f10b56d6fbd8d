"""Which source positions a checkpoint resumes: one per source, each only where it was read.

A single-source job's checkpoint holds the source's position and names the source
(`Checkpoint.source`); a multi-source job's holds `{source name: position}` and names
each source (`Checkpoint.sources`). A position is applied only to a source that still
reads what it was read from; any other source starts afresh (a warning, recorded as a
`source` configuration error). Checkpoints move between the two forms: a job that
becomes a UNION ALL resumes its old source where it was and reads the new ones from
their start; a union cut back to one source resumes that source.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from velostream.server.checkpoint import Checkpoint

__all__ = ["Changed", "resume_position"]

_log = logging.getLogger("velostream.processor")

Changed = Callable[[str, str | None, tuple[Mapping[str, Any], Mapping[str, Any]], str], None]
"""Reports that a source changed since the checkpoint: (what, version, (old, new), outcome)."""

_FROM_START = (
    "is not applied, the new source is read from its start (Kafka: the group's committed "
    "offsets, else auto.offset.reset)"
)


def resume_position(
    checkpoint: Checkpoint, identities: Mapping[str, Mapping[str, Any]], changed: Changed
) -> Any:
    """The position to resume the job's sources from (None: from their start).

    `identities` are the job's sources (`source_identity`) by name, in FROM order; with
    more than one the result is `{name: position}` for the sources that resume.
    """
    if len(identities) > 1:
        return _multi(checkpoint, identities, changed)
    name, identity = next(iter(identities.items()), (None, None))
    if checkpoint.sources is None:  # a single-source checkpoint, as before unions
        return _single(checkpoint.position, checkpoint.source, identity, checkpoint, changed)
    for old_name, old in checkpoint.sources.items():
        if identity is None or old == identity:
            parts = checkpoint.position if isinstance(checkpoint.position, dict) else {}
            return parts.get(old_name)
    listed = ", ".join(checkpoint.sources)
    _log.warning(
        "job source %r reads none of the sources %s the checkpoint of version %s has "
        "positions for; it is read from its start",
        name,
        listed,
        checkpoint.version,
    )
    return None


def _single(
    position: Any,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    checkpoint: Checkpoint,
    changed: Changed,
    what: str = "the source",
) -> Any:
    """`position` if read from the source `new` (a checkpoint naming no source is trusted)."""
    if position is None:
        return None
    if old is None or new is None or old == new:
        return position
    changed(what, checkpoint.version, (old, new), f"its position {position} {_FROM_START}")
    return None


def _multi(
    checkpoint: Checkpoint, identities: Mapping[str, Mapping[str, Any]], changed: Changed
) -> dict[str, Any]:
    if checkpoint.sources is None:  # the job was a single-source job: resume that source
        old = checkpoint.source
        name = next((n for n, i in identities.items() if old is None or i == old), None)
        if name is None:
            assert old is not None
            changed(
                "the source",
                checkpoint.version,
                (old, next(iter(identities.values()))),
                f"its position {checkpoint.position} {_FROM_START}; so are the others",
            )
            return {}
        _log.info(
            "resuming source %r from the single-source checkpoint; %s read from their start",
            name,
            ", ".join(n for n in identities if n != name) or "no other",
        )
        return {name: checkpoint.position} if checkpoint.position is not None else {}
    parts = checkpoint.position if isinstance(checkpoint.position, dict) else {}
    resumed = {}
    for name, identity in identities.items():
        old = checkpoint.sources.get(name)
        if old is None:
            _log.info("source %r is new since the checkpoint: read from its start", name)
            continue
        position = _single(parts.get(name), old, identity, checkpoint, changed, f"source {name!r}")
        if position is not None:
            resumed[name] = position
    return resumed
