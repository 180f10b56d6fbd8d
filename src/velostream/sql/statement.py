"""One statement's structure: `CREATE STREAM|TABLE name AS SELECT ...`, EMIT and WITH.

The statement parser reads tokens of the scanned text (comments and quoted text
blanked) and finds the SELECT's sources in FROM/JOIN, its `PRIMARY KEY` columns, the
EMIT mode and where the WITH clause's body lies; everything else of the SELECT is left
to the planner.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from velostream.sql.annotations import Annotation
from velostream.sql.model import EmitMode, Position, StatementKind
from velostream.sql.properties import Report
from velostream.sql.scan import Scan

__all__ = ["Locate", "Statement", "StatementParser", "StatementParts", "statement_name"]

Locate = Callable[[int], Position]
"""Maps an offset in the scanned text to its position in the original text."""


@dataclass(slots=True)
class Statement:
    """Where one statement lies in the text, and the annotations given to it."""

    number: int
    start: int  # segment start (after the previous ';')
    create: int  # first character of code
    end: int  # the ';' or the end of the text
    annotations: list[Annotation] = field(default_factory=list)
    name: str = "?"


_TOKEN = re.compile(
    r"(?P<word>[^\W\d]\w*)|(?P<quoted>\"[^\"]*\"|'[^']*')|(?P<number>\d[\w.]*)|(?P<punct>\S)"
)
_CLAUSES = frozenset(
    {"WHERE", "GROUP", "HAVING", "ORDER", "LIMIT", "WINDOW", "ON", "USING", "UNION", "EXCEPT"}
    | {"INTERSECT", "QUALIFY", "LEFT", "RIGHT", "INNER", "FULL", "CROSS", "OUTER", "NATURAL"}
)
_FORMS = (
    "a statement must start with CREATE STREAM <name> AS SELECT ... "
    "or CREATE TABLE <name> AS SELECT ..."
)
_IDENT = r'(?:[^\W\d]\w*|"(?:[^"]|"")+")'
_ALIASED = re.compile(rf"^.*\S\s+AS\s+({_IDENT})$", re.IGNORECASE | re.DOTALL)
_COLUMN = re.compile(rf"^(?:{_IDENT}\s*\.\s*)*({_IDENT})$")


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str  # from the code text: quoted tokens keep their content
    start: int
    end: int

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else self.text


@dataclass(slots=True)
class StatementParts:
    """What the statement parser found; offsets are into the scanned text."""

    kind: StatementKind
    name: str
    select_offset: int
    select_sql: str = ""
    sources: list[str] = field(default_factory=list)
    source_offsets: dict[str, int] = field(default_factory=dict)
    primary_keys: tuple[str, ...] = ()
    emit: EmitMode | None = None
    with_span: tuple[int, int] | None = None


def _tokenize(scan: Scan, start: int, end: int) -> list[_Token]:
    return [
        _Token(m.lastgroup or "", scan.code[m.start() : m.end()], m.start(), m.end())
        for m in _TOKEN.finditer(scan.bare, start, end)
    ]


def _unquote(identifier: str) -> str:
    if identifier.startswith('"'):
        return identifier[1:-1].replace('""', '"')
    return identifier


def _describe(tokens: list[_Token], index: int) -> str:
    return f"'{tokens[index].text}'" if index < len(tokens) else "the end of the statement"


def statement_name(bare: str, statement: Statement) -> str | None:
    """The name after `CREATE STREAM|TABLE`, read early so problems can name the statement."""
    match = re.compile(r"CREATE\s+(?:STREAM|TABLE)\s+(?!AS\b)([^\W\d]\w*)", re.I).match(
        bare, statement.create, statement.end
    )
    return match.group(1) if match else None


class StatementParser:
    """Finds a statement's header, SELECT, sources, PRIMARY KEYs, EMIT and WITH."""

    def __init__(self, scan: Scan, statement: Statement, locate: Locate, report: Report) -> None:
        self.scan = scan
        self.tokens = _tokenize(scan, statement.create, statement.end)
        self.end = statement.end
        self.at = locate
        self.report = report

    def problem(self, index: int, message: str) -> None:
        offset = self.tokens[index].start if index < len(self.tokens) else self.end
        self.report(self.at(offset), message)

    def parse(self) -> StatementParts | None:
        t = self.tokens
        if t[0].upper != "CREATE":
            self.problem(0, f"{_FORMS}, found {_describe(t, 0)}")
            return None
        if len(t) < 2 or t[1].upper not in ("STREAM", "TABLE"):
            self.problem(1, f"expected STREAM or TABLE after CREATE, found {_describe(t, 1)}")
            return None
        if len(t) < 3 or t[2].kind != "word" or t[2].upper == "AS":
            found = _describe(t, 2)
            self.problem(2, f"expected the statement's name after {t[1].upper}, found {found}")
            return None
        for index, word in ((3, "AS"), (4, "SELECT")):
            if len(t) <= index or t[index].upper != word:
                found = _describe(t, index)
                self.problem(index, f"expected AS SELECT after '{t[2].text}', found {found}")
                return None
        if not self._balanced():
            return None
        parts = StatementParts(StatementKind(t[1].upper), t[2].text, t[4].start)
        tail = self._select(parts)
        if tail is None:
            return None
        self._tail(parts, tail)
        return parts

    def _balanced(self) -> bool:
        opened: list[int] = []
        for index, token in enumerate(self.tokens):
            if token.text == "(":
                opened.append(index)
            elif token.text == ")":
                if not opened:
                    self.problem(index, "unbalanced parenthesis: ')' has no matching '('")
                    return False
                opened.pop()
        if opened:
            self.problem(opened[-1], "unbalanced parenthesis: '(' is never closed")
            return False
        return True

    def _select(self, parts: StatementParts) -> int | None:
        """Collect sources and PRIMARY KEYs; return the index where EMIT/WITH starts."""
        t = self.tokens
        frames = [[True, False]]  # per parenthesis level: has SELECT, in a FROM list
        removed: list[tuple[int, int]] = []
        keys: list[str] = []
        item_start, top_from = 5, False
        index = 4
        while index < len(t):
            token, frame, upper = t[index], frames[-1], t[index].upper
            top = len(frames) == 1
            if token.text == "(":
                frames.append([False, False])
            elif token.text == ")":
                frames.pop()
            elif top and upper in ("EMIT", "WITH"):
                break
            elif top and upper == "CREATE":
                self.problem(index, "CREATE inside a statement: is a ';' missing before it?")
                return None
            elif upper == "SELECT":
                frame[:] = [True, False]
                if top and index == 4 and index + 1 < len(t) and t[5].upper in ("DISTINCT", "ALL"):
                    item_start = 6
            elif upper in ("FROM", "JOIN") and frame[0] and t[index - 1].upper != "DISTINCT":
                # The statement's stream is its top-level FROM: first among its sources,
                # whatever a subquery before it names.
                self._source(parts, index + 1, stream=top and not top_from and upper == "FROM")
                top_from = top_from or top
                frame[1] = upper == "FROM"
            elif upper in _CLAUSES:
                frame[1] = False
            elif token.text == "," and frame[0] and frame[1]:
                self._source(parts, index + 1)
            elif token.text == "," and top and not top_from:
                item_start = index + 1
            elif upper == "PRIMARY" and index + 1 < len(t) and t[index + 1].upper == "KEY":
                key = self._primary_key(item_start, index, top and not top_from)
                if key is not None:
                    removed.append((t[index - 1].end, t[index + 1].end))
                    if key in keys:
                        self.problem(index, f"column '{key}' is marked PRIMARY KEY twice")
                    keys.append(key)
                index += 1
            index += 1
        select_end = t[index].start if index < len(t) else self.end
        if not parts.sources:
            self.problem(
                4,
                "the SELECT has no FROM source: a job reads from a source named "
                "in FROM and configured in WITH",
            )
        parts.primary_keys = tuple(keys)
        parts.select_sql = self._select_text(t[4].start, select_end, removed)
        return index

    def _source(self, parts: StatementParts, index: int, *, stream: bool = False) -> None:
        t = self.tokens
        if (
            index >= len(t)
            or t[index].kind not in ("word", "quoted")
            or t[index].upper in ("SELECT", "LATERAL")
        ):
            return
        if t[index].text.startswith("'"):
            self.problem(
                index,
                f"reading {t[index].text} directly is not supported: name a source in FROM "
                "and configure it in WITH",
            )
            return
        if index + 1 < len(t) and t[index + 1].text == "(":
            self.problem(
                index,
                f"table function {t[index].text}(...) in FROM is not "
                "supported: read from a source named in FROM and configured in WITH",
            )
            return
        if index + 2 < len(t) and t[index + 1].text == ".":
            self.problem(
                index,
                f"qualified name '{t[index].text}.{t[index + 2].text}' is not "
                "supported: name the source with a plain identifier",
            )
            return
        name = _unquote(t[index].text)
        known = next((s for s in parts.sources if s.lower() == name.lower()), None)
        if known is None:
            parts.sources.insert(0 if stream else len(parts.sources), name)
            parts.source_offsets[name] = t[index].start
        elif stream:
            parts.sources.remove(known)
            parts.sources.insert(0, known)

    def _primary_key(self, item_start: int, index: int, allowed: bool) -> str | None:
        if not allowed:
            self.problem(
                index,
                "PRIMARY KEY is only allowed after a column of the outer "
                "SELECT list: 'col PRIMARY KEY' or 'expr AS alias PRIMARY KEY'",
            )
            return None
        item = ""
        if item_start < index:
            item = self.scan.code[self.tokens[item_start].start : self.tokens[index].start].strip()
        match = _ALIASED.match(item) or _COLUMN.match(item)
        if match is None:
            self.problem(
                index,
                f"PRIMARY KEY must follow a column name or 'expression AS alias', found {item!r}",
            )
            return None
        return _unquote(match.group(1))

    def _select_text(self, start: int, end: int, removed: list[tuple[int, int]]) -> str:
        pieces, at = [], start
        for cut_start, cut_end in removed:
            pieces.append(self.scan.code[at:cut_start])
            at = cut_end
        pieces.append(self.scan.code[at:end])
        lines = "".join(pieces).split("\n")
        return "\n".join(line.rstrip() for line in lines).strip()

    def _tail(self, parts: StatementParts, index: int) -> None:
        t = self.tokens
        while index < len(t):
            upper = t[index].upper
            if upper == "EMIT":
                mode = t[index + 1].upper if index + 1 < len(t) else ""
                if mode not in ("CHANGES", "FINAL"):
                    self.problem(
                        index + 1,
                        "EMIT must be followed by CHANGES or FINAL, "
                        f"found {_describe(t, index + 1)}",
                    )
                elif parts.emit is not None:
                    self.problem(index, "EMIT is given twice")
                else:
                    parts.emit = EmitMode(mode)
                index += 2
            elif upper == "WITH" and index + 1 < len(t) and t[index + 1].text == "(":
                close, depth = index + 1, 0
                for close in range(index + 1, len(t)):
                    depth += {"(": 1, ")": -1}.get(t[close].text, 0)
                    if depth == 0:
                        break
                if parts.with_span is not None:
                    self.problem(index, "WITH ( ... ) is given twice")
                else:
                    parts.with_span = (t[index + 1].end, t[close].start)
                index = close + 1
            else:
                what = (
                    "the WITH must be followed by ( 'key' = 'value', ... )"
                    if upper == "WITH"
                    else "is a ';' missing before it?"
                    if upper == "CREATE"
                    else "only EMIT CHANGES|FINAL and WITH ( ... ) may follow the SELECT"
                )
                self.problem(index, f"unexpected {_describe(t, index)}: {what}")
                index = len(t) if upper == "CREATE" else self._skip_to_clause(index + 1)

    def _skip_to_clause(self, index: int) -> int:
        """The index of the next top-level EMIT or WITH, to resume after a problem."""
        depth = 0
        for at in range(index, len(self.tokens)):
            token = self.tokens[at]
            depth += {"(": 1, ")": -1}.get(token.text, 0)
            if depth == 0 and token.upper in ("EMIT", "WITH"):
                return at
        return len(self.tokens)
