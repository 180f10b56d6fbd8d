"""How `velo-sql` prints a refusal: its headline, then one line per problem."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

__all__ = ["print_problems"]


def print_problems(console: Console, exc: Exception) -> None:
    """The error's headline, then one `error:` line per problem (each with line:column)."""
    problems = getattr(exc, "problems", None) or []
    if not problems:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return
    console.print(f"[red]{escape(str(exc).splitlines()[0])}[/red]", highlight=False)
    for problem in problems:
        console.print(f"[red]error:[/red] {escape(problem)}", highlight=False)
