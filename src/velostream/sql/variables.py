"""`${VAR}` and `${VAR:default}` substitution, with a map back to the original offsets."""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "VARIABLE_ENV_PREFIX",
    "OffsetMap",
    "operator_variables",
    "substitute_value",
    "substitute_variables",
]

#: A server resolves `${NAME}` from `VELO_VAR_NAME` of its environment (and `--var`),
#: never from the rest of it: job SQL comes from whoever can reach the API.
VARIABLE_ENV_PREFIX = "VELO_VAR_"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class OffsetMap:
    """Maps an offset in substituted text back to the original text.

    Each chunk is `(new_start, original_start, copied)`; inside a copied chunk offsets
    move together, a replaced chunk maps wholly to its `${`.
    """

    chunks: tuple[tuple[int, int, bool], ...]
    starts: tuple[int, ...]

    def original(self, offset: int) -> int:
        index = max(bisect.bisect_right(self.starts, offset) - 1, 0)
        new_start, original_start, copied = self.chunks[index]
        return original_start + (offset - new_start) if copied else original_start


def substitute_variables(
    text: str,
    env: Mapping[str, str],
    *,
    skip: Sequence[tuple[int, int]] = (),
) -> tuple[str, OffsetMap, list[tuple[int, str]]]:
    """Replace `${VAR}` / `${VAR:default}` from `env` outside the `skip` spans.

    Returns the new text, its map back to `text`, and `(offset in new text, name)` of
    each variable that is undefined and has no default (left in place).
    """
    pieces: list[str] = []
    chunks: list[tuple[int, int, bool]] = []
    undefined: list[tuple[int, str]] = []
    new_len = 0
    copied_from = 0
    for match in _VARIABLE.finditer(text):
        if any(start <= match.start() < end for start, end in skip):
            continue
        name, default = match.group(1), match.group(2)
        value = env.get(name, default)
        chunks.append((new_len, copied_from, True))
        pieces.append(text[copied_from : match.start()])
        new_len += match.start() - copied_from
        if value is None:
            undefined.append((new_len, name))
            value = match.group(0)
        chunks.append((new_len, match.start(), False))
        pieces.append(value)
        new_len += len(value)
        copied_from = match.end()
    chunks.append((new_len, copied_from, True))
    pieces.append(text[copied_from:])
    starts = tuple(chunk[0] for chunk in chunks)
    return "".join(pieces), OffsetMap(tuple(chunks), starts), undefined


def substitute_value(value: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """`value` with its variables substituted, and the names of those left undefined."""
    new_text, _, undefined = substitute_variables(value, env)
    return new_text, [name for _, name in undefined]


def operator_variables(
    environ: Mapping[str, str], assignments: Sequence[str] = ()
) -> dict[str, str]:
    """The variables a server's jobs may use: `VELO_VAR_<NAME>` environment variables,
    then each `NAME=VALUE` of `assignments` (`--var`), which wins.

    Raises ValueError for an assignment that is not `NAME=VALUE` with a valid name.
    """
    values = {
        key[len(VARIABLE_ENV_PREFIX) :]: value
        for key, value in environ.items()
        if key.startswith(VARIABLE_ENV_PREFIX) and _NAME.fullmatch(key[len(VARIABLE_ENV_PREFIX) :])
    }
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep or not _NAME.fullmatch(name):
            raise ValueError(
                f"--var {assignment!r}: expected NAME=VALUE (NAME: letters, digits, _)"
            )
        values[name] = value
    return values
