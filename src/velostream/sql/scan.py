"""Scan application text: comments, quoted text and statement breaks, offsets kept."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Scan", "scan_text"]


@dataclass(slots=True)
class Scan:
    """`code` is the text with comments blanked; `bare` also blanks quoted text.

    Both keep every offset and newline of the text, so positions carry over.
    """

    code: str
    bare: str
    comments: list[tuple[int, int]] = field(default_factory=list)
    line_comments: list[tuple[int, int]] = field(default_factory=list)
    breaks: list[int] = field(default_factory=list)
    unterminated: tuple[int, str] | None = None


def _blank(chars: list[str], start: int, end: int) -> None:
    chars[start:end] = ["\n" if ch == "\n" else " " for ch in chars[start:end]]


def _closing_quote(text: str, start: int) -> int:
    """Offset just past the quote closing the one at `start` (doubled quotes escape)."""
    quote, at = text[start], start + 1
    while True:
        close = text.find(quote, at)
        if close < 0:
            return -1
        if not text.startswith(quote * 2, close):
            return close + 1
        at = close + 2


_SPECIAL = re.compile(r"--|/\*|['\";]")


def scan_text(text: str) -> Scan:
    """Blank comments (and, in `bare`, quoted text) and find each statement's `;`."""
    code, bare = list(text), list(text)
    scan = Scan("", "")
    at = 0
    while (match := _SPECIAL.search(text, at)) is not None:
        start, token = match.start(), match.group()
        if token == ";":
            scan.breaks.append(start)
            at = start + 1
            continue
        if token in "'\"":
            at = _closing_quote(text, start)
            if at < 0:
                what = "string literal" if token == "'" else "quoted identifier"
                scan.unterminated = (start, f"{what} starting here is never closed with {token}")
                at = len(text) + 1
            _blank(bare, start + 1, at - 1)
            continue
        if token == "--":
            newline = text.find("\n", start)
            at = len(text) if newline < 0 else newline
            scan.line_comments.append((start, at))
        else:
            at = text.find("*/", start + 2) + 2
            if at < 2:
                scan.unterminated = (start, "comment '/*' is never closed with '*/'")
                at = len(text)
        scan.comments.append((start, at))
        _blank(code, start, at)
        _blank(bare, start, at)
    scan.code, scan.bare = "".join(code), "".join(bare)
    return scan
