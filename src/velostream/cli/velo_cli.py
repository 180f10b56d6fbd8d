"""`velo-cli`: talk to a running `velo-sql server` over its HTTP API."""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from velostream.cli.help import fix_flag_types
from velostream.cli.startup import asks_for_help, pause_gc
from velostream.cli.tables import fit_columns, long_cell, make_table, show_table, tail_cell

if TYPE_CHECKING:
    import httpx

fix_flag_types()
app = typer.Typer(add_completion=False, no_args_is_help=True, help="Velostream client.")
console = Console()
err = Console(stderr=True)

Url = Annotated[str, typer.Option("--url", envvar="VELO_URL", help="server base URL")]
Token = Annotated[
    str | None, typer.Option("--token", envvar="VELO_API_TOKEN", help="API bearer token")
]
_DEFAULT_URL = "http://127.0.0.1:8080"

Wide = Annotated[bool, typer.Option("--wide", help="show every value whole (rows may wrap)")]
_NARROW = 120  # below this many columns, tables leave out their least useful columns


def _fits(wide: bool) -> bool:
    """Whether a table is drawn one line per row, cut with an ellipsis to the terminal:
    on a terminal unless `--wide`; a pipe gets every value whole."""
    return not wide and console.is_terminal


def _client(url: str, token: str | None) -> httpx.Client:
    import httpx  # here, not at the top: `velo-cli --help` needs no HTTP client

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
    import httpx

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
def jobs(url: Url = _DEFAULT_URL, token: Token = None, wide: Wide = False) -> None:
    """List deployed jobs."""
    doc = _get(url, token, "/jobs")
    fit = _fits(wide)
    rows = [
        {
            "name": j["name"],
            "version": j["version"] or "",
            "state": j["state"],
            "in": str(j["records_in"]),
            "out": str(j["records_out"]),
            "failed": str(j["records_failed"]),
            "dead letters": str(j["dead_letters"]),
            "reason": long_cell(j["reason"] or "", fit),
        }
        for j in doc["jobs"]
    ]
    columns = ["name", "version", "state", "in", "out", "failed", "dead letters", "reason"]
    if fit:  # the reason of a failure before the version and the counts in and out
        columns = fit_columns(
            columns, rows, width=console.width, long=("reason",), drop=("version", "in", "out")
        )
    title = f"Jobs ({len(doc['jobs'])} of max {doc['max_jobs']})"
    right = ("in", "out", "failed", "dead letters")
    table = make_table(title, columns, fit=fit, right=right, long=("reason",))
    for row in rows:
        table.add_row(*(row[c] for c in columns))
    show_table(console, table, fit)


@app.command()
def status(name: str, url: Url = _DEFAULT_URL, token: Token = None) -> None:
    """Show one job in full, with its state history."""
    console.print_json(data=_get(url, token, f"/jobs/{name}"))


@app.command()
def deploy(
    file: Annotated[Path, typer.Argument(help="SQL application file")],
    url: Url = _DEFAULT_URL,
    token: Token = None,
    server_paths: Annotated[
        bool,
        typer.Option(
            "--server-paths",
            help="send no folder: relative paths are the server's working directory's "
            "(a server on another machine)",
        ),
    ] = False,
) -> None:
    """Deploy an application: all of its jobs or none, each shown with its state.

    Its relative paths are taken from its folder, which must lie under the server's
    roots.
    """
    try:
        sql = file.read_text(encoding="utf-8")
    except OSError as exc:
        err.print(f"[red]cannot read {file}: {exc.strerror or exc}[/red]")
        raise typer.Exit(2) from exc
    body = {"sql": sql}
    if not server_paths:
        # The server takes the application's relative paths from its file's folder.
        body["base_dir"] = str(file.parent.resolve())
    doc = _call(url, token, "POST", "/jobs", json=body)
    # As Kafka Connect: the deploy succeeded once accepted (exit 0), and a job that has
    # failed already is shown failed, with its reason, not hidden behind "deployed".
    states = [_job_state(url, token, name) for name in doc["jobs"]]
    console.print(f"deployed: {', '.join(states)}", highlight=False, soft_wrap=True)


def _job_state(url: str, token: str | None, name: str) -> str:
    """`name (state)`, a failure's reason included, in red."""
    job = _get(url, token, f"/jobs/{name}")
    if job["state"] == "failed":
        return f"{escape(name)} [red](failed: {escape(str(job['reason']))})[/red]"
    return f"{escape(name)} ({job['state']})"


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
    limit: Annotated[int, typer.Option("--limit", help="show at most this many")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per letter")] = False,
    url: Url = _DEFAULT_URL,
    token: Token = None,
    wide: Wide = False,
) -> None:
    """Show a job's dead letters, or replay them."""
    if replay:
        doc = _call(url, token, "POST", f"/jobs/{name}/dlq/replay")
        console.print(f"replayed {doc['replayed']} dead letters; {doc['rows_out']} rows written")
        return
    doc = _get(url, token, f"/jobs/{name}/dlq", {"limit": limit})
    if as_json:
        for letter in doc["letters"]:
            sys.stdout.write(_json_line(letter))
        return
    fit = _fits(wide)
    rows = [
        {
            "position": tail_cell(str(d["position"]), fit),
            "stage": d["stage"],
            "kind": d["kind"],
            "message": long_cell(d["message"], fit),
            "payload": long_cell(d.get("payload", d.get("payload_base64", "")), fit),
            "replayed": "yes" if d.get("replayed") else "",
        }
        for d in doc["letters"]
    ]
    columns = ["position", "stage", "kind", "message", "payload", "replayed"]
    long = ("message", "payload")
    if fit:  # why a record failed, and where, before what it held
        columns = fit_columns(
            columns, rows, width=console.width, long=long, drop=("replayed", "kind", "payload")
        )
    table = make_table(f"Dead letters of {name}", columns, fit=fit, long=long)
    for row in rows:
        table.add_row(*(row[c] for c in columns))
    show_table(console, table, fit)


def _ts(value: float) -> str:
    return datetime.fromtimestamp(value).strftime("%H:%M:%S")


@app.command()
def errors(
    job: Annotated[str | None, typer.Option("--job", help="only this job's groups")] = None,
    stage: Annotated[
        str | None, typer.Option("--stage", help="only this stage's (deserialize, sink, ...)")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="show at most this many groups")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per group")] = False,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="keep watching: a live table, or with --json a line per new or changed group",
        ),
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="seconds between polls with --follow")
    ] = 1.0,
    url: Url = _DEFAULT_URL,
    token: Token = None,
    wide: Wide = False,
) -> None:
    """List error groups, most recently seen first (`--follow`: live)."""
    if follow:
        watch = _ErrorWatch(url, token, job=job, stage=stage)
        try:
            if as_json:
                _stream_groups(watch, limit, interval)
            else:
                _live_table(watch, limit, interval)
        except KeyboardInterrupt:
            pass
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, and let the exit not flush.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        finally:
            watch.close()
        return
    doc = _get(url, token, "/errors", {"job": job, "stage": stage, "limit": limit})
    groups = doc["groups"]
    if as_json:
        for group in groups:
            sys.stdout.write(_json_line(group))
        return
    title = f"Error groups ({doc['total_groups']} tracked)"
    fit = _fits(wide)
    show_table(console, _groups_table(groups, title, width=console.width if fit else None), fit)


def _groups_table(
    groups: list[dict[str, Any]],
    title: str,
    changes: dict[str, str] | None = None,
    width: int | None = None,
) -> Table:
    """Groups as a table.

    With `changes` (follow mode) a "Δ" column marks new groups and risen counts. With a
    `width` (a terminal, live or not, without `--wide`) each group takes one line, its
    message cut with an ellipsis, and a terminal narrower than 120 columns drops first
    seen, node and version to leave the message room (and under 100, last seen).
    """
    live = changes is not None
    fit = width is not None
    roomy = width is None or width >= _NARROW
    columns = ["job", "stage", "kind", "count"]
    columns += ["Δ"] if live else []
    if roomy:
        columns += ["first", "last", "node", "version"]
    elif width is not None and width >= _NARROW - 20:
        columns += ["last"]
    columns += ["message"]
    table = make_table(title, columns, fit=fit, right=("count", "Δ"), long=("message",))
    for g in groups:
        change = changes.get(_group_key(g), "") if changes is not None else ""
        values: dict[str, str | Text] = {
            "job": g["job"],
            "stage": g["stage"],
            "kind": g["kind"],
            "count": str(g["count"]),
            "Δ": change,
            "first": _ts(g["first_seen"]),
            "last": _ts(g["last_seen"]),
            "node": g["node_id"] or "",
            "version": g["version"] or "",
            "message": long_cell(g["message"], fit),
        }
        style = "bold yellow" if change == "new" else "bold" if change else None
        table.add_row(*(values[c] for c in columns), style=style)
    return table


def _group_key(group: dict[str, Any]) -> str:
    return f"{group['job']}\x1f{group['fingerprint']}"


class _ErrorWatch:
    """Polls /errors with the cursor: each poll returns only the groups that changed."""

    # A full poll now and then drops groups the server no longer has (evicted, undeployed).
    FULL_EVERY = 30

    def __init__(self, url: str, token: str | None, *, job: str | None, stage: str | None):
        self.url = url
        self.client = _client(url, token)
        self.params = {k: v for k, v in {"job": job, "stage": stage}.items() if v is not None}
        self.cursor: int | None = None
        self.polls = 0
        self.total = 0

    def poll(self) -> tuple[list[dict[str, Any]], bool]:
        """(groups changed since the last poll, oldest change first; whether a full list)."""
        full = self.cursor is None or self.polls % self.FULL_EVERY == 0
        params: dict[str, Any] = {**self.params, "limit": 10_000}
        if not full:
            params["cursor"] = self.cursor
        response = self.client.get("/errors", params=params)
        if response.status_code >= 400:
            _print_problem(response)
            raise typer.Exit(1)
        doc = response.json()
        self.polls += 1
        self.cursor = doc["cursor"]
        self.total = doc["total_groups"]
        return list(reversed(doc["groups"])), full

    def first_poll(self) -> tuple[list[dict[str, Any]], bool]:
        import httpx

        try:
            return self.poll()
        except httpx.HTTPError as exc:
            err.print(f"[red]cannot reach {self.url}: {exc}[/red]")
            raise typer.Exit(2) from exc

    def close(self) -> None:
        self.client.close()


def _stream_groups(watch: _ErrorWatch, limit: int, interval: float) -> None:
    """One JSON line per group: the newest `limit` first, then each new or changed one."""
    import httpx

    changed, _ = watch.first_poll()
    seen = {_group_key(g): g["seq"] for g in changed}
    for group in changed[-limit:]:
        sys.stdout.write(_json_line(group))
    sys.stdout.flush()
    down = False
    while True:
        time.sleep(interval)
        try:
            changed, _ = watch.poll()
        except httpx.HTTPError as exc:
            if not down:
                err.print(f"[red]cannot reach {watch.url}: {exc}; retrying[/red]")
            down = True
            continue
        down = False
        for group in changed:
            key = _group_key(group)
            if seen.get(key) != group["seq"]:  # a full poll repeats unchanged groups
                seen[key] = group["seq"]
                sys.stdout.write(_json_line(group))
        sys.stdout.flush()


def _live_table(watch: _ErrorWatch, limit: int, interval: float) -> None:
    """A table of the newest groups, redrawn in place after every poll.

    A group that is new, or whose count rose, is marked for a few seconds ("new",
    "+3"), long enough to be noticed between two redraws.
    """
    import httpx

    groups: dict[str, dict[str, Any]] = {}
    # key -> (count when the mark began, None for a new group; when the mark ends)
    marks: dict[str, tuple[int | None, float]] = {}
    mark_seconds = max(5.0, 3 * interval)
    status = ""

    def merge(changed: list[dict[str, Any]], full: bool) -> None:
        nonlocal groups
        now = time.monotonic()
        fresh = {} if full else dict(groups)
        for group in changed:
            key = _group_key(group)
            before = groups.get(key)
            mark = marks.get(key)
            if mark is not None and mark[1] > now:
                marks[key] = (mark[0], now + mark_seconds)
            elif before is None and watch.polls > 1:
                marks[key] = (None, now + mark_seconds)
            elif before is not None and before["seq"] != group["seq"]:
                marks[key] = (before["count"], now + mark_seconds)
            fresh[key] = group
        # Only the newest `limit` can be shown; an older group comes back when it changes.
        newest = sorted(fresh.values(), key=lambda g: g["seq"], reverse=True)[:limit]
        groups = {_group_key(g): g for g in newest}
        for key in [k for k, (_, until) in marks.items() if until <= now or k not in groups]:
            del marks[key]

    def render() -> Table:
        rows = list(groups.values())
        if console.is_terminal:  # what fits under the title, header and caption
            rows = rows[: max(console.height - 7, 1)]
        changes = {
            key: "new" if base is None else f"+{groups[key]['count'] - base}"
            for key, (base, _) in marks.items()
        }
        where = ", ".join(f"{k} {v}" for k, v in watch.params.items())
        title = f"Error groups ({watch.total} tracked{'; ' + where if where else ''})"
        table = _groups_table(rows, title, changes, console.width)
        table.caption = status or (
            f"updated {datetime.now().strftime('%H:%M:%S')}; newest first; Ctrl-C to stop"
        )
        return table

    from rich.live import Live  # only when following on a terminal

    merge(*watch.first_poll())
    with Live(render(), console=console, auto_refresh=False) as live:
        while True:
            time.sleep(interval)
            try:
                merge(*watch.poll())
                status = ""
            except httpx.HTTPError as exc:
                status = f"cannot reach {watch.url}: {exc}; retrying"
            live.update(render(), refresh=True)


def _json_line(value: Any) -> str:
    """`value` as one line of JSON (orjson is imported by the commands that print it)."""
    import orjson

    return orjson.dumps(value).decode() + "\n"


def main() -> None:
    """The `velo-cli` console script."""
    if asks_for_help(sys.argv[1:]):
        pause_gc()  # it prints and ends (velostream.cli.startup)
    app()


if __name__ == "__main__":
    main()
