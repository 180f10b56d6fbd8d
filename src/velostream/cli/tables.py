"""The tables of `velo-cli`: on a terminal one line a row, cut to its width; piped or
`--wide`, every value whole."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["LONG_ROOM", "fit_columns", "long_cell", "make_table", "show_table", "tail_cell"]

LONG_ROOM = 20  # what a long column (message, reason) keeps before other columns go


def fit_columns(
    columns: Sequence[str],
    rows: Sequence[Mapping[str, str | Text]],
    *,
    width: int,
    long: tuple[str, ...] = (),
    drop: tuple[str, ...] = (),
) -> list[str]:
    """The `columns` that fit `width`: those in `drop` are left out, in that order,
    until each short column's widest value and each long column's first
    `LONG_ROOM` characters fit."""
    kept = list(columns)
    for column in drop:
        if _needed(kept, rows, long) <= width:
            break
        kept.remove(column)
    return kept


def _needed(
    columns: list[str], rows: Sequence[Mapping[str, str | Text]], long: tuple[str, ...]
) -> int:
    total = 1 + 3 * len(columns)  # a border and two spaces of padding a column
    for column in columns:
        widest = max([cell_len(column), *(cell_len(str(row[column])) for row in rows)])
        total += max(cell_len(column), min(widest, LONG_ROOM)) if column in long else widest
    return total


def make_table(
    title: str,
    columns: Sequence[str],
    *,
    fit: bool,
    right: tuple[str, ...] = (),
    long: tuple[str, ...] = (),
) -> Table:
    """A table whose rows take one line each when `fit` (cells cut with an ellipsis),
    or fold to show every value whole. The `long` columns give up their room first
    (their cells come from `long_cell`); no header is ever wrapped."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        justify: Literal["left", "right"] = "right" if column in right else "left"
        short = fit and column not in long
        header = Text(column, no_wrap=True, overflow="ellipsis") if fit else column
        table.add_column(
            header,
            overflow="ellipsis" if short else "fold",
            no_wrap=short,
            justify=justify,
            min_width=cell_len(column) if fit and column in long else None,
        )
    return table


def show_table(console: Console, table: Table, fit: bool) -> None:
    """Print `table`: cut to the terminal when `fit`, else as wide as its values
    (a pipe or `--wide`: no value is folded into a column a few characters wide)."""
    if fit:
        console.print(table)
        return
    natural = console.measure(table, options=console.options.update_width(1 << 16))
    Console(width=max(console.width, natural.maximum)).print(table)


def long_cell(value: str, fit: bool) -> str | Text:
    """A long cell (message, payload, reason): its first line, cut to the room left."""
    if not fit:
        return value
    return Text(value.split("\n", 1)[0], no_wrap=True, overflow="ellipsis")


def tail_cell(value: str, fit: bool, room: int = LONG_ROOM + 4) -> str:
    """A cell whose end tells most (a position: `path:line`): cut at its start."""
    if not fit or cell_len(value) <= room:
        return value
    return "…" + value[-(room - 1) :]
