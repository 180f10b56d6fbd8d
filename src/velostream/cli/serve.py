"""What `velo-sql server`, `deploy-app` and `run --metrics-port` run: imported when one
of them runs, so that `--help`, `validate` and `run` load no web framework."""

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

import typer
import uvicorn
from rich.console import Console
from rich.markup import escape

from velostream.api.guard import DEFAULT_MAX_BODY, allowed_hosts
from velostream.cli.problems import print_problems
from velostream.cli.startup import choose_arrow_pool
from velostream.errors import ConfigurationError, VelostreamError
from velostream.fsutil import PathRoots
from velostream.observability.logging import configure_logging
from velostream.observability.manager import ObservabilityManager, StreamingConfig
from velostream.server.processors.limits import JobLimits
from velostream.server.stream_job_server import StreamJobServer
from velostream.sql.duration import parse_duration_ms
from velostream.sql.size import parse_size_bytes
from velostream.sql.variables import operator_variables

__all__ = ["ServeOptions", "listen", "serve", "serve_metrics", "wait_for_signal"]

_log = logging.getLogger("velostream.cli")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    job_memory_limit: str
    job_batch_timeout: str
    var: list[str] | None = None
    allowed_host: list[str] | None = None
    max_body: int | None = None
    allow_path: list[Path] | None = None


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


def serve(options: ServeOptions, application: Path | None = None, once: bool = False) -> int:
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
    _log.debug("Arrow memory pool: %s", choose_arrow_pool())
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
        max_body=options.max_body or DEFAULT_MAX_BODY,
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
        sock = listen(host, port)
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
                print_problems(Console(stderr=True), exc)
                return 1
            for name in names:  # as each stands now: a job may have failed already
                handle = jobs.job(name)
                state, reason = handle.state.value, handle.machine.reason
                level = logging.WARNING if state == "failed" else logging.INFO
                _log.log(level, "deployed %s: %s%s", name, state, f" ({reason})" if reason else "")
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


def listen(host: str, port: int) -> socket.socket:
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


def serve_metrics(observability: ObservabilityManager, port: int) -> tuple[uvicorn.Server, int]:
    """Serve /metrics on 127.0.0.1:`port` from a thread; OSError when it cannot listen.

    Returns the server and the port its socket is bound to: with `port` 0 the system
    picks one, and that is the one to tell the user.
    """
    from velostream.api.app import create_app

    sock = listen("127.0.0.1", port)  # bound here, so a busy port fails before any job runs
    bound = int(sock.getsockname()[1])
    config = uvicorn.Config(create_app(observability), log_level="warning")
    server = uvicorn.Server(config)
    threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="metrics-http", daemon=True
    ).start()
    return server, bound


def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
