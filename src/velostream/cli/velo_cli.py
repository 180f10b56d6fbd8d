"""`velo-cli`: talk to a running `velo-sql server` over its HTTP API."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Velostream client.")
console = Console()
err = Console(stderr=True)

Url = Annotated[str, typer.Option("--url", envvar="VELO_URL", help="server base URL")]
Token = Annotated[
    str | None, typer.Option("--token", envvar="VELO_API_TOKEN", help="API bearer token")
]
_DEFAULT_URL = "http://127.0.0.1:8080"


def _client(url: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=10.0)


def _call(
    url: str,
    token: str | None,
    method: str,
    path: str,
    *,
    params: dict[str, Any] | None = None,
    json: Any = None,
    ok_statuses: tuple[int, ...] = (),
) -> Any:
    try:
        with _client(url, token) as client:
            response = client.request(
                method,
                path,
                params={k: v for k, v in (params or {}).items() if v is not None},
                json=json,
            )
    except httpx.HTTPError as exc:
        err.print(f"[red]cannot reach {url}: {exc}[/red]")
        raise typer.Exit(2) from exc
    if response.status_code >= 400 and response.status_code not in ok_statuses:
        _print_problem(response)
        raise typer.Exit(1)
    return response.json()


def _print_problem(response: httpx.Response) -> None:
    try:
        doc = response.json()
    except ValueError:
        err.print(f"[red]{response.status_code}: {response.text}[/red]")
        return
    err.print(f"[red]{response.status_code} {doc.get('title', '')}: {doc.get('detail', '')}[/red]")
    for problem in doc.get("problems", []):
        err.print(f"  [red]-[/red] {problem}", highlight=False)


def _get(url: str, token: str | None, path: str, params: dict[str, Any] | None = None) -> Any:
    return _call(url, token, "GET", path, params=params)


@app.command()
def health(url: Url = _DEFAULT_URL, token: Token = None) -> None:
    """Show the server's health (exit 1 when critical)."""
    doc = _call(url, token, "GET", "/health", ok_statuses=(503,))
    console.print_json(data=doc)
    if doc.get("status") != "ok":
        raise typer.Exit(1)


@app.command()
def jobs(url: Url = _DEFAULT_URL, token: Token = None) -> None:
    """List deployed jobs."""
    doc = _get(url, token, "/jobs")
    table = Table(title=f"Jobs ({len(doc['jobs'])} of max {doc['max_jobs']})")
    for column in ("name", "version", "state", "in", "out", "failed", "dead letters", "reason"):
        table.add_column(column, overflow="fold")
    for j in doc["jobs"]:
        table.add_row(
            j["name"],
            j["version"] or "",
            j["state"],
            str(j["records_in"]),
            str(j["records_out"]),
            str(j["records_failed"]),
            str(j["dead_letters"]),
            j["reason"] or "",
        )
    console.print(table)


@app.command()
def status(name: str, url: Url = _DEFAULT_URL, token: Token = None) -> None:
    """Show one job in full, with its state history."""
    console.print_json(data=_get(url, token, f"/jobs/{name}"))


@app.command()
def deploy(
    file: Annotated[Path, typer.Argument(help="SQL application file")],
    url: Url = _DEFAULT_URL,
    token: Token = None,
) -> None:
    """Deploy an application (all of its jobs or none)."""
    try:
        sql = file.read_text(encoding="utf-8")
    except OSError as exc:
        err.print(f"[red]cannot read {file}: {exc.strerror or exc}[/red]")
        raise typer.Exit(2) from exc
    doc = _call(url, token, "POST", "/jobs", json={"sql": sql})
    console.print(f"deployed: {', '.join(doc['jobs'])}")


@app.command()
def undeploy(name: str, url: Url = _DEFAULT_URL, token: Token = None) -> None:
    """Stop a job and remove it."""
    _call(url, token, "DELETE", f"/jobs/{name}")
    console.print(f"undeployed {name}")


def _control(action: str) -> Any:
    def command(name: str, url: Url = _DEFAULT_URL, token: Token = None) -> None:
        doc = _call(url, token, "POST", f"/jobs/{name}/{action}")
        console.print(f"{name}: {doc['state']}")

    command.__doc__ = f"{action.capitalize()} a job."
    return command


for _action in ("pause", "resume", "restart"):
    app.command(_action)(_control(_action))


@app.command()
def dlq(
    name: str,
    replay: Annotated[
        bool, typer.Option("--replay", help="send them through the job again")
    ] = False,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    url: Url = _DEFAULT_URL,
    token: Token = None,
) -> None:
    """Show a job's dead letters, or replay them."""
    if replay:
        doc = _call(url, token, "POST", f"/jobs/{name}/dlq/replay")
        console.print(f"replayed {doc['replayed']} dead letters; {doc['rows_out']} rows written")
        return
    doc = _get(url, token, f"/jobs/{name}/dlq", {"limit": limit})
    if as_json:
        for letter in doc["letters"]:
            sys.stdout.write(orjson.dumps(letter).decode() + "\n")
        return
    table = Table(title=f"Dead letters of {name}")
    for column in ("position", "stage", "kind", "message", "payload", "replayed"):
        table.add_column(column, overflow="fold")
    for d in doc["letters"]:
        payload = d.get("payload", d.get("payload_base64", ""))
        table.add_row(
            str(d["position"]),
            d["stage"],
            d["kind"],
            d["message"],
            payload,
            "yes" if d.get("replayed") else "",
        )
    console.print(table)


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
