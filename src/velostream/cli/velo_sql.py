"""`velo-sql`: the job server, and applications run in the foreground."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import uvicorn
from rich.console import Console
from rich.markup import escape

from velostream.api.guard import DEFAULT_MAX_BODY, allowed_hosts
from velostream.cli.help import fix_flag_types
from velostream.errors import ConfigurationError, VelostreamError
from velostream.fsutil import PathRoots
from velostream.observability.logging import configure_logging, parse_level
from velostream.observability.manager import ObservabilityManager, StreamingConfig
from velostream.server.processors.limits import JobLimits
from velostream.sql.duration import parse_duration_ms
from velostream.sql.size import parse_size_bytes
from velostream.sql.variables import operator_variables

if TYPE_CHECKING:
    from velostream.server.stream_job_server import StreamJobServer

fix_flag_types()
app = typer.Typer(add_completion=False, no_args_is_help=True, help="Velostream streaming SQL.")

_log = logging.getLogger("velostream.cli")


def _log_level(value: str) -> str:
    """`--log-level`: a level name `parse_level` knows (trace, debug, ... critical)."""
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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


Host = Annotated[str, typer.Option(envvar="VELO_HOST", help="bind address")]
Port = Annotated[int, typer.Option(envvar="VELO_PORT")]
DataDir = Annotated[
    Path, typer.Option("--data-dir", envvar="VELO_DATA_DIR", help="checkpoints and dead letters")
]
MaxJobs = Annotated[int, typer.Option("--max-jobs", envvar="VELO_MAX_JOBS")]
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
    int,
    typer.Option("--max-body", min=1, metavar="BYTES", help="largest request body accepted"),
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


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """What `velo-sql server` and `velo-sql deploy-app` share."""

    host: str
    port: int
    data_dir: Path
    max_jobs: int
    processing_slots: int | None
    insecure: bool
    shutdown_deadline: float
    log_level: str
    log_format: str
    log_file: str | None
    log_syslog: str | None
    var: list[str] | None = None
    allowed_host: list[str] | None = None
    max_body: int = DEFAULT_MAX_BODY
    allow_path: list[Path] | None = None
    job_memory_limit: str = DEFAULT_JOB_MEMORY_LIMIT
    job_batch_timeout: str = DEFAULT_JOB_BATCH_TIMEOUT


def _limits(options: ServeOptions) -> JobLimits:
    """The server-wide defaults of `job.memory.limit` and `job.batch.timeout`."""
    try:
        memory = parse_size_bytes(options.job_memory_limit)
        timeout = parse_duration_ms(options.job_batch_timeout)
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc)) from None
    if timeout < 1:
        raise typer.BadParameter("--job-batch-timeout must be above zero")
    return JobLimits(memory_bytes=memory, batch_timeout_ms=timeout)


def _serve(options: ServeOptions, application: Path | None = None, once: bool = False) -> int:
    """Run the job server until SIGTERM/SIGINT (or, with `once`, until its jobs end)."""
    from velostream.api.app import create_app
    from velostream.server.stream_job_server import StreamJobServer

    host, port, data_dir = options.host, options.port, options.data_dir
    fmt = options.log_format
    if fmt not in ("text", "json"):
        raise typer.BadParameter(f"unknown log format {fmt!r}; valid: text, json")
    token = os.environ.get("VELO_API_TOKEN") or None
    if not _is_loopback(host) and token is None and not options.insecure:
        Console(stderr=True).print(
            f"[red]refusing to bind {host}: a non-loopback address needs VELO_API_TOKEN "
            "(or --insecure to accept an unauthenticated API)[/red]"
        )
        return 2
    configure_logging(
        options.log_level,
        fmt,  # type: ignore[arg-type]
        options.log_file,
        syslog=options.log_syslog,
    )
    try:
        variables = operator_variables(os.environ, options.var or ())
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    data_dir.mkdir(parents=True, exist_ok=True)
    observability = ObservabilityManager.from_streaming_config(StreamingConfig.default())
    observability.initialize()
    jobs = StreamJobServer(
        observability,
        data_dir,
        max_jobs=options.max_jobs,
        processing_slots=options.processing_slots,
        variables=variables,
        roots=_roots(options, application),
        limits=_limits(options),
    )

    forced: list[str] = []

    def stop_jobs() -> None:
        _log.info(
            "velo-sql server shutting down: stopping its jobs (at most %gs)",
            options.shutdown_deadline,
        )
        started = time.monotonic()
        forced.extend(jobs.shutdown(options.shutdown_deadline))
        if forced:
            _log.error("forced to abandon jobs at shutdown: %s", ", ".join(forced))
        else:
            _log.info("every job committed and stopped in %.2fs", time.monotonic() - started)

    api = create_app(
        observability,
        jobs,
        token=token,
        on_shutdown=stop_jobs,
        hosts=allowed_hosts(host, options.allowed_host or ()),
        max_body=options.max_body,
    )
    config = uvicorn.Config(
        api, host=host, port=port, log_level="warning", access_log=False, lifespan="on"
    )
    http = _GracefulServer(config)
    outcome = {"code": 0}
    try:
        # Bound before any job runs (a server that cannot listen must not run jobs);
        # listening before the application is deployed, so that a client that connects
        # at once is answered once the jobs exist.
        sock = _listen(host, port)
    except OSError as exc:
        Console(stderr=True).print(
            f"[red]cannot listen on {host}:{port}: {escape(exc.strerror or str(exc))}[/red]"
        )
        observability.shutdown()
        return 1
    try:
        if application is not None:
            try:
                names = jobs.deploy(
                    application.read_text(encoding="utf-8"),
                    source_name=str(application),
                    base_dir=application.parent,
                )
            except (OSError, VelostreamError) as exc:
                _print_problems(Console(stderr=True), exc)
                return 1
            _log.info("deployed %s", ", ".join(names))
            if once:

                def wait_then_exit() -> None:
                    outcome["code"] = _run_once(jobs, names, observability)
                    http.should_exit = True

                threading.Thread(target=wait_then_exit, name="deploy-app", daemon=True).start()
        _log.info("velo-sql server on http://%s:%d (data dir %s)", host, port, data_dir)
        http.run(sockets=[sock])
    finally:
        sock.close()
        observability.shutdown()
        _log.info("velo-sql server on http://%s:%d has shut down", host, port)
    if forced:
        _exit_now(outcome["code"])
    return outcome["code"]


def _roots(options: ServeOptions, application: Path | None) -> PathRoots:
    """Where deployed jobs may read and write: `--allow-path`, else the data dir and the
    working directory; `deploy-app` adds its application's folder."""
    roots = list(options.allow_path or (options.data_dir, Path.cwd()))
    if application is not None:
        roots.append(application.parent)
    return PathRoots.of(roots)


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (IPv6 when the host is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and
    # without it a response written in two parts waits 40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _exit_now(code: int) -> None:
    """Exit without finalising the interpreter, under jobs abandoned at shutdown.

    Their threads may be inside DuckDB or Arrow; finalising the interpreter under them
    aborts the process. What they had not committed is rolled back when they resume.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


class _GracefulServer(uvicorn.Server):
    """uvicorn, minus re-raising SIGTERM/SIGINT once it has shut down.

    uvicorn re-raises a captured signal after its shutdown, so the process dies of it
    (exit status -15). Our shutdown is the graceful one: the jobs have made their
    final commit, and the process exits 0 (or with the `--once` outcome).
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def _run_once(jobs: StreamJobServer, names: list[str], observability: ObservabilityManager) -> int:
    """`--once`: wait until the bounded jobs among `names` end; print the summary.

    Returns the exit code: 0 when every job completed, 1 when one failed, 2 when no
    job is bounded (nothing would ever end). Unbounded jobs are stopped by the
    shutdown that follows.
    """
    bounded = [n for n in names if _is_bounded(jobs, n)]
    if not bounded:
        Console(stderr=True).print(
            "[red]--once: no job of the application reads a bounded source, so none would "
            "ever end; deploy it without --once[/red]"
        )
        return 2
    while any(_is_active(jobs, name) for name in bounded):
        time.sleep(0.05)
    print_summary_from_server(jobs, observability)
    return 1 if any(_state(jobs, name) == "failed" for name in names) else 0


def _is_bounded(jobs: StreamJobServer, name: str) -> bool:
    try:
        processor = jobs.job(name).processor
    except KeyError:
        return False
    return processor is not None and processor.source.bounded


def _state(jobs: StreamJobServer, name: str) -> str | None:
    try:
        return str(jobs.job(name).state.value)
    except KeyError:  # undeployed meanwhile
        return None


def _is_active(jobs: StreamJobServer, name: str) -> bool:
    try:
        return bool(jobs.job(name).state.active)
    except KeyError:
        return False


def print_summary_from_server(jobs: StreamJobServer, observability: ObservabilityManager) -> None:
    """The `run` summary for the jobs of a server."""
    from velostream.cli.run import print_summary, runs_of

    print_summary(runs_of(jobs), observability, Console())


@app.command()
def server(
    host: Host = "127.0.0.1",
    port: Port = 8080,
    data_dir: DataDir = Path("./velo-data"),
    max_jobs: MaxJobs = 100,
    processing_slots: ProcessingSlots = None,
    insecure: Insecure = False,
    var: Variables = None,
    allowed_host: AllowedHosts = None,
    allow_path: AllowPaths = None,
    max_body: MaxBody = DEFAULT_MAX_BODY,
    job_memory_limit: JobMemoryLimit = DEFAULT_JOB_MEMORY_LIMIT,
    job_batch_timeout: JobBatchTimeout = DEFAULT_JOB_BATCH_TIMEOUT,
    shutdown_deadline: ShutdownDeadline = 30.0,
    log_level: LogLevel = "INFO",
    log_format: LogFormat = "text",
    log_file: LogFile = None,
    log_syslog: LogSyslog = None,
) -> None:
    """Start the job server: the HTTP API, /metrics and the jobs deployed to it."""
    raise typer.Exit(_serve(ServeOptions(**locals())))


@app.command("deploy-app")
def deploy_app(
    file: Annotated[Path, typer.Option("--file", "-f", help="SQL application file")],
    once: Annotated[bool, typer.Option("--once", help="exit when its bounded jobs end")] = False,
    host: Host = "127.0.0.1",
    port: Port = 8080,
    data_dir: DataDir = Path("./velo-data"),
    max_jobs: MaxJobs = 100,
    processing_slots: ProcessingSlots = None,
    insecure: Insecure = False,
    var: Variables = None,
    allowed_host: AllowedHosts = None,
    allow_path: AllowPaths = None,
    max_body: MaxBody = DEFAULT_MAX_BODY,
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
    raise typer.Exit(_serve(ServeOptions(**options), application=file, once=once))


def _print_problems(console: Console, exc: Exception) -> None:
    """The error's headline, then one `error:` line per problem (each with line:column)."""
    problems = getattr(exc, "problems", None) or []
    if not problems:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return
    console.print(f"[red]{escape(str(exc).splitlines()[0])}[/red]", highlight=False)
    for problem in problems:
        console.print(f"[red]error:[/red] {escape(problem)}", highlight=False)


@app.command()
def validate(file: Annotated[Path, typer.Argument(help="SQL application file")]) -> None:
    """Check an application without running it."""
    from velostream.cli.run import validate_application

    console = Console(stderr=True)
    try:
        application = validate_application(file)
    except VelostreamError as exc:
        _print_problems(console, exc)
        raise typer.Exit(1) from exc
    for warning in application.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    jobs = ", ".join(j.name for j in application.jobs)
    Console().print(f"{file}: valid ({len(application.jobs)} job(s): {jobs})")


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
    ] = Path("./velo-data"),
    log_level: LogLevel = "WARNING",
    log_format: LogFormat = "text",
    log_file: LogFile = None,
    log_syslog: LogSyslog = None,
) -> None:
    """Run an application in the foreground until its bounded sources end."""
    from velostream.cli.run import load_application, print_summary, run_application

    configure_logging(log_level, log_format, log_file, syslog=log_syslog)  # type: ignore[arg-type]
    err = Console(stderr=True)
    if linger and metrics_port is None:
        raise typer.BadParameter("--linger keeps /metrics served: give --metrics-port too")
    try:
        application = load_application(file)
    except VelostreamError as exc:
        _print_problems(err, exc)
        raise typer.Exit(1) from exc
    for warning in application.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}")
    observability = ObservabilityManager.from_streaming_config(StreamingConfig.default())
    observability.initialize()
    server = None
    if metrics_port is not None:
        try:
            server = _serve_metrics(observability, metrics_port)
        except OSError as exc:
            observability.shutdown()
            reason = escape(exc.strerror or str(exc))
            err.print(f"[red]cannot serve /metrics on 127.0.0.1:{metrics_port}: {reason}[/red]")
            raise typer.Exit(1) from exc
        err.print(f"serving /metrics on http://127.0.0.1:{metrics_port}/metrics")
    console = Console()
    try:
        runs = run_application(
            application, observability, console, data_dir, sql=file.read_text(encoding="utf-8")
        )
        print_summary(runs, observability, console)
        if server is not None and linger:
            err.print(
                f"the jobs have ended; /metrics stays on http://127.0.0.1:{metrics_port}/metrics "
                "until Ctrl-C"
            )
            _wait_for_signal()
    finally:
        observability.shutdown()
        if server is not None:
            server.should_exit = True
    if any(r.failed for r in runs):
        raise typer.Exit(1)


def _serve_metrics(observability: ObservabilityManager, port: int) -> uvicorn.Server:
    """Serve /metrics on 127.0.0.1:`port` from a thread; OSError when it cannot listen."""
    from velostream.api.app import create_app

    sock = _listen("127.0.0.1", port)  # bound here, so a busy port fails before any job runs
    config = uvicorn.Config(create_app(observability), log_level="warning")
    server = uvicorn.Server(config)
    threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="metrics-http", daemon=True
    ).start()
    return server


def _wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


def main() -> None:
    app()


if __name__ == "__main__":
    main()
