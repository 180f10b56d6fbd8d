"""`velo-cli`: talk to a running `velo-sql server` over its HTTP API."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Velostream client.")
console = Console()

Url = Annotated[str, typer.Option("--url", envvar="VELO_URL", help="server base URL")]
Token = Annotated[
    str | None, typer.Option("--token", envvar="VELO_API_TOKEN", help="API bearer token")
]
_DEFAULT_URL = "http://127.0.0.1:8080"


def _client(url: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=10.0)


def _get(url: str, token: str | None, path: str, params: dict[str, Any] | None = None) -> Any:
    try:
        with _client(url, token) as client:
            response = client.get(path, params={k: v for k, v in (params or {}).items() if v})
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach {url}: {exc}[/red]")
        raise typer.Exit(2) from exc
    if response.status_code >= 400:
        console.print(f"[red]{response.status_code} from {path}: {response.text}[/red]")
        raise typer.Exit(1)
    return response.json()


@app.command()
def health(url: Url = _DEFAULT_URL, token: Token = None) -> None:
    """Show the server's health."""
    doc = _get(url, token, "/health")
    console.print_json(data=doc)
    if doc.get("status") != "ok":
        raise typer.Exit(1)


def _ts(value: float) -> str:
    return datetime.fromtimestamp(value).strftime("%H:%M:%S")


@app.command()
def errors(
    job: Annotated[str | None, typer.Option("--job")] = None,
    stage: Annotated[str | None, typer.Option("--stage")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per group")] = False,
    url: Url = _DEFAULT_URL,
    token: Token = None,
) -> None:
    """List error groups, most recently seen first."""
    doc = _get(url, token, "/errors", {"job": job, "stage": stage, "limit": limit})
    groups = doc["groups"]
    if as_json:
        for group in groups:
            sys.stdout.write(orjson.dumps(group).decode() + "\n")
        return
    table = Table(title=f"Error groups ({doc['total_groups']} tracked)")
    for column in ("job", "stage", "kind", "count", "first", "last", "node", "version", "message"):
        table.add_column(column, overflow="fold")
    for g in groups:
        table.add_row(
            g["job"],
            g["stage"],
            g["kind"],
            str(g["count"]),
            _ts(g["first_seen"]),
            _ts(g["last_seen"]),
            g["node_id"] or "",
            g["version"] or "",
            g["message"],
        )
    console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
