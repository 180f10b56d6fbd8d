"""The `velo-sql` commands: the job server, and applications run in the foreground."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from velostream.cli import DATA_DIR
from velostream.cli.help import fix_flag_types

# Each command imports what it runs when it runs (`velo-sql --help` loads no server).

fix_flag_types()
app = typer.Typer(add_completion=False, no_args_is_help=True, help="Velostream streaming SQL.")

_log = logging.getLogger("velostream.cli")


def _log_level(value: str) -> str:
    """`--log-level`: a level name `parse_level` knows (trace, debug, ... critical)."""
    from velostream.observability.logging import parse_level

    try:
        parse_level(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


LogLevel = Annotated[
    str,
    typer.Option(
        "--log-level",
        envvar="VELO_LOG_LEVEL",
        callback=_log_level,
        help="trace|debug|info|warning|error|critical (debug: batches, commits, rebalances)",
    ),
]
LogFormat = Annotated[str, typer.Option("--log-format", envvar="VELO_LOG_FORMAT", help="text|json")]
LogFile = Annotated[
    str | None, typer.Option("--log-file", envvar="VELO_LOG_FILE", help="rotating log file")
]
LogSyslog = Annotated[
    str | None,
    typer.Option("--log-syslog", envvar="VELO_LOG_SYSLOG", help="/dev/log or host:port"),
]

Host = Annotated[str, typer.Option(envvar="VELO_HOST", help="bind address")]
Port = Annotated[int, typer.Option(envvar="VELO_PORT", help="HTTP port (API, /metrics, console)")]
DataDir = Annotated[
    Path, typer.Option("--data-dir", envvar="VELO_DATA_DIR", help="checkpoints and dead letters")
]
MaxJobs = Annotated[
    int,
    typer.Option("--max-jobs", envvar="VELO_MAX_JOBS", help="refuse deploys beyond this many jobs"),
]
ProcessingSlots = Annotated[
    int | None,
    typer.Option(
        "--processing-slots",
        envvar="VELO_PROCESSING_SLOTS",
        min=1,
        help="jobs processing a batch at once (default: the CPU count)",
    ),
]
Insecure = Annotated[
    bool, typer.Option("--insecure", help="allow a non-loopback bind without VELO_API_TOKEN")
]
Variables = Annotated[
    list[str] | None,
    typer.Option(
        "--var",
        metavar="NAME=VALUE",
        help="NAME=VALUE for ${NAME} in deployed SQL (repeatable); VELO_VAR_NAME also works",
    ),
]
AllowedHosts = Annotated[
    list[str] | None,
    typer.Option(
        "--allowed-host",
        metavar="NAME",
        help="a Host name the API answers to besides loopback and the bind address "
        "(repeatable; * for any)",
    ),
]
AllowPaths = Annotated[
    list[Path] | None,
    typer.Option(
        "--allow-path",
        metavar="DIR",
        help="a folder deployed jobs may read and write under (repeatable; default: the "
        "data dir and the working directory)",
    ),
]
MaxBody = Annotated[
    int | None,
    typer.Option(
        "--max-body", min=1, metavar="BYTES", help="largest request body accepted (default 1 MiB)"
    ),
]
JobMemoryLimit = Annotated[
    str,
    typer.Option(
        "--job-memory-limit",
        metavar="SIZE",
        help="memory one job's batch may take unless its job.memory.limit says otherwise",
    ),
]
JobBatchTimeout = Annotated[
    str,
    typer.Option(
        "--job-batch-timeout",
        metavar="DURATION",
        help="time one job's batch may take unless its job.batch.timeout says otherwise",
    ),
]
#: Server-wide defaults of the per-job limits (docs/security.md).
DEFAULT_JOB_MEMORY_LIMIT = "2GiB"
DEFAULT_JOB_BATCH_TIMEOUT = "60s"
ShutdownDeadline = Annotated[
    float, typer.Option("--shutdown-deadline", help="seconds jobs get to stop on SIGTERM")
]


@app.command()
def server(
    host: Host = "127.0.0.1",
    port: Port = 8080,
    data_dir: DataDir = DATA_DIR,
    max_jobs: MaxJobs = 100,
    processing_slots: ProcessingSlots = None,
    insecure: Insecure = False,
    var: Variables = None,
    allowed_host: AllowedHosts = None,
    allow_path: AllowPaths = None,
    max_body: MaxBody = None,
    job_memory_limit: JobMemoryLimit = DEFAULT_JOB_MEMORY_LIMIT,
    job_batch_timeout: JobBatchTimeout = DEFAULT_JOB_BATCH_TIMEOUT,
    shutdown_deadline: ShutdownDeadline = 30.0,
    log_level: LogLevel = "INFO",
    log_format: LogFormat = "text",
    log_file: LogFile = None,
    log_syslog: LogSyslog = None,
) -> None:
    """Start the job server: the HTTP API, /metrics and the jobs deployed to it."""
    options = dict(locals())  # before the import below adds its names
    from velostream.cli.serve import ServeOptions, serve

    raise typer.Exit(serve(ServeOptions(**options)))


@app.command("deploy-app")
def deploy_app(
    file: Annotated[Path, typer.Option("--file", "-f", help="SQL application file")],
    once: Annotated[bool, typer.Option("--once", help="exit when its bounded jobs end")] = False,
    host: Host = "127.0.0.1",
    port: Port = 8080,
    data_dir: DataDir = DATA_DIR,
    max_jobs: MaxJobs = 100,
    processing_slots: ProcessingSlots = None,
    insecure: Insecure = False,
    var: Variables = None,
    allowed_host: AllowedHosts = None,
    allow_path: AllowPaths = None,
    max_body: MaxBody = None,
    job_memory_limit: JobMemoryLimit = DEFAULT_JOB_MEMORY_LIMIT,
    job_batch_timeout: JobBatchTimeout = DEFAULT_JOB_BATCH_TIMEOUT,
    shutdown_deadline: ShutdownDeadline = 30.0,
    log_level: LogLevel = "INFO",
    log_format: LogFormat = "text",
    log_file: LogFile = None,
    log_syslog: LogSyslog = None,
) -> None:
    """Start a server with one application deployed (`--once`: run it to completion)."""
    options = {k: v for k, v in locals().items() if k not in ("file", "once")}
    from velostream.cli.serve import ServeOptions, serve

    raise typer.Exit(serve(ServeOptions(**options), application=file, once=once))


@app.command()
def init(
    name: Annotated[Path, typer.Argument(help="the application folder to create")],
) -> None:
    """Create an application folder with a sample app, its data and a README."""
    from velostream.cli.init import OUTPUT, create_application, is_free

    if not is_free(name):
        what = "a folder that is not empty" if name.is_dir() else "not a folder"
        Console(stderr=True).print(
            f"[red]{escape(str(name))} exists and is {what}: choose a new name[/red]",
            soft_wrap=True,
        )
        raise typer.Exit(2)
    try:
        written = create_application(name)
    except OSError as exc:
        reason = escape(f"{exc.strerror or exc}")
        Console(stderr=True).print(f"[red]cannot create {escape(str(name))}: {reason}[/red]")
        raise typer.Exit(1) from exc
    shown = name.as_posix().rstrip("/") or "."
    console = Console(soft_wrap=True)
    console.print(f"created {escape(shown)}/ with:", highlight=False)
    for path in written:
        console.print(f"  {escape(path.relative_to(name).as_posix())}", highlight=False)
    app_sql = escape(shlex.quote(f"{shown}/app.sql"))  # pasted into a shell as is
    console.print("next:", highlight=False)
    console.print(f"  velo-sql validate {app_sql}", highlight=False)
    console.print(f"  velo-sql run {app_sql}    # writes {escape(shown)}/{OUTPUT}", highlight=False)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="SQL application file")],
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="also say what each job reads, writes and keeps (partitioned state, "
            "repartitioning)",
        ),
    ] = False,
) -> None:
    """Check an application without running it."""
    from velostream.cli.validate import validate_file

    code = validate_file(file, explain=explain)
    if code:
        raise typer.Exit(code)


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="SQL application file")],
    metrics_port: Annotated[
        int | None,
        typer.Option("--metrics-port", help="serve /metrics on 127.0.0.1:PORT while running"),
    ] = None,
    linger: Annotated[
        bool,
        typer.Option(
            "--linger", help="with --metrics-port: keep serving after the jobs end, until Ctrl-C"
        ),
    ] = False,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", envvar="VELO_DATA_DIR", help="dead letters go here")
    ] = DATA_DIR,
    log_level: LogLevel = "WARNING",
    log_format: LogFormat = "text",
    log_file: LogFile = None,
    log_syslog: LogSyslog = None,
) -> None:
    """Run an application in the foreground until its bounded sources end.

    Ctrl-C or SIGTERM stops it gracefully: each job's final flush and commit.
    """
    from velostream.cli.run import run_file

    if linger and metrics_port is None:
        raise typer.BadParameter("--linger keeps /metrics served: give --metrics-port too")
    code = run_file(
        file,
        data_dir,
        metrics_port=metrics_port,
        linger=linger,
        log=(log_level, log_format, log_file, log_syslog),
    )
    if code:
        raise typer.Exit(code)
