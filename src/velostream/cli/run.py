"""`velo-sql run`: an application in the foreground.

`run` is not a runtime of its own: it deploys the application on an in-process
`StreamJobServer` (the one that `velo-sql server` runs, without HTTP and without
checkpoints, so each run reads its sources from the start) and draws its progress
table and summary on top. Whatever a deployed job can do, a `run` job does.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from velostream.cli.load import load_application
from velostream.cli.problems import print_problems
from velostream.cli.startup import choose_arrow_pool, resume_gc
from velostream.errors import VelostreamError
from velostream.observability.job_metrics import JobCounts
from velostream.observability.manager import ObservabilityManager
from velostream.server.jobs import JobState
from velostream.server.stream_job_server import JobHandle, StreamJobServer
from velostream.sql.model import Application, JobSpec

__all__ = [
    "JobRun",
    "print_summary",
    "run_application",
    "run_file",
    "runs_of",
]

# How often the live progress table is redrawn, and the loop polls for the jobs' end.
_REFRESH_SECONDS = 0.25


@dataclass(slots=True)
class JobRun:
    """One job of a foreground run, as the progress table and the summary show it."""

    job: JobSpec
    state: str = "starting"
    error: str | None = None
    #: What the job counted in this run; zeros for a job never started.
    stats: JobCounts = field(default_factory=JobCounts)
    #: Seconds the job has run.
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.error is not None


def _run_of(handle: JobHandle) -> JobRun:
    run = JobRun(handle.spec, state=handle.state.value)
    if handle.processor is not None:
        run.stats = handle.processor.stats
        run.seconds = handle.processor.duration
    if handle.state == JobState.FAILED:
        run.error = handle.machine.reason or "failed"
    return run


def runs_of(server: StreamJobServer, jobs: list[JobSpec] | None = None) -> list[JobRun]:
    """A JobRun for each of `jobs` (default: every job deployed on `server`)."""
    names = [j.name for j in jobs] if jobs is not None else [i["name"] for i in server.list_jobs()]
    runs = []
    for name in names:
        try:
            runs.append(_run_of(server.job(name)))
        except KeyError:  # undeployed meanwhile
            continue
    return runs


def _progress_table(runs: list[JobRun], observability: ObservabilityManager) -> Table:
    table = Table(title="velo-sql run", expand=False)
    for col in ("job", "state", "in", "out", "failed", "records/s", "errors"):
        table.add_column(col, justify="right" if col not in ("job", "state") else "left")
    metrics = observability.require_metrics()
    for run in runs:
        stats = run.stats
        rate = stats.records_in / max(run.seconds, 1e-9)
        buffer = metrics.job_buffer(run.job.name)
        errors = buffer.total_errors if buffer is not None else 0
        table.add_row(
            run.job.name,
            run.state,
            f"{stats.records_in:,}",
            f"{stats.records_out:,}",
            f"{stats.records_failed:,}",
            f"{rate:,.0f}",
            str(errors),
        )
    return table


def run_file(
    file: Path,
    data_dir: Path,
    *,
    metrics_port: int | None = None,
    linger: bool = False,
    log: tuple[str, str, str | None, str | None] = ("WARNING", "text", None, None),
) -> int:
    """`velo-sql run FILE`: check, run and summarise the application; its exit code.

    `log` is (level, format, file, syslog) as `configure_logging` takes them.
    """
    from velostream.observability.logging import configure_logging
    from velostream.observability.manager import StreamingConfig

    choose_arrow_pool()
    level, form, log_file, syslog = log
    configure_logging(level, form, log_file, syslog=syslog)  # type: ignore[arg-type]
    err = Console(stderr=True)
    try:
        application = load_application(file)
    except VelostreamError as exc:
        print_problems(err, exc)
        return 1
    finally:
        resume_gc()  # start-up is over: the jobs' garbage is the GC's
    for warning in application.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}")
    observability = ObservabilityManager.from_streaming_config(StreamingConfig.default())
    observability.initialize()
    server = None
    if metrics_port is not None:
        from velostream.cli.serve import serve_metrics, wait_for_signal  # HTTP: only if asked

        try:
            server, bound = serve_metrics(observability, metrics_port)
        except OSError as exc:
            observability.shutdown()
            reason = escape(exc.strerror or str(exc))
            err.print(f"[red]cannot serve /metrics on 127.0.0.1:{metrics_port}: {reason}[/red]")
            return 1
        url = f"http://127.0.0.1:{bound}/metrics"  # the port bound: --metrics-port 0 picks one
        err.print(f"serving /metrics on {url}", soft_wrap=True)
    console = Console()
    try:
        runs = run_application(
            application, observability, console, data_dir, sql=file.read_text(encoding="utf-8")
        )
        print_summary(runs, observability, console)
        if server is not None and linger:
            err.print(f"the jobs have ended; serving {url} until Ctrl-C", soft_wrap=True)
            wait_for_signal()
    finally:
        observability.shutdown()
        if server is not None:
            server.should_exit = True
    return 1 if any(r.failed for r in runs) else 0


def run_application(
    app: Application,
    observability: ObservabilityManager,
    console: Console,
    data_dir: Path,
    *,
    sql: str = "",
) -> list[JobRun]:
    """Run every job of `app` on an in-process job server until its bounded sources end.

    A deployment the server refuses (a source that cannot be opened, say) runs no job:
    each job is then reported failed with the reason. Ctrl-C shuts the server down
    gracefully (each job's final flush and commit) and reports where the jobs stood; so
    does SIGTERM, as `docker stop`, systemd and `kill` send it.
    """
    server = StreamJobServer(
        observability, data_dir, max_jobs=max(len(app.jobs), 1), checkpoints=False
    )
    try:
        server.deploy_application(app, sql)
    except VelostreamError as exc:
        return [
            JobRun(job, state="failed", error=_refusal(exc, job.name, len(app.jobs)))
            for job in app.jobs
        ]
    try:
        with _sigterm_interrupts():
            _wait(server, app, observability, console)
    except KeyboardInterrupt:
        Console(stderr=True).print("stopping: each job finishes its batch, flushes and commits")
        server.shutdown()
    return runs_of(server, list(app.jobs))


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, while the jobs run.

    Only the main thread can set a handler; elsewhere SIGTERM is left as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait(
    server: StreamJobServer, app: Application, observability: ObservabilityManager, console: Console
) -> None:
    """Until the jobs are idle, drawing the progress table on a terminal."""
    if console.is_terminal:
        from rich.live import Live  # the progress table: only on a terminal

        with Live(
            _progress_table(runs_of(server, list(app.jobs)), observability),
            console=console,
            refresh_per_second=4,
        ) as live:
            while not server.wait_idle(timeout=_REFRESH_SECONDS):
                live.update(_progress_table(runs_of(server, list(app.jobs)), observability))
            live.update(_progress_table(runs_of(server, list(app.jobs)), observability))
    else:
        server.wait_idle()


def _refusal(exc: VelostreamError, job: str, jobs: int) -> str:
    if exc.job in (None, job) or jobs == 1:
        return f"deploy rejected: {exc}"
    return f"not started: the application's deployment was rejected (job {exc.job}: {exc})"


def print_summary(
    runs: list[JobRun], observability: ObservabilityManager, console: Console
) -> None:
    metrics = observability.require_metrics()
    table = Table(title="Summary")
    for col in ("job", "result", "in", "out", "failed", "late", "seconds", "records/s"):
        table.add_column(col)
    for run in runs:
        s = run.stats
        table.add_row(
            run.job.name,
            "FAILED" if run.failed else "ok",
            f"{s.records_in:,}",
            f"{s.records_out:,}",
            f"{s.records_failed:,}",
            f"{s.late_records:,}",
            f"{run.seconds:.2f}",
            f"{s.records_in / max(run.seconds, 1e-9):,.0f}",
        )
    console.print(table)
    for run in runs:
        if run.error:
            console.print(f"[red]job {run.job.name} failed:[/red] {escape(run.error)}")
        groups = metrics.catalog.groups(job=run.job.name, limit=5)
        if groups:
            console.print(f"Top error groups of {run.job.name}:")
            for g in sorted(groups, key=lambda g: -g.count):
                ref = f" (last at {g.last_record_ref})" if g.last_record_ref else ""
                text = escape(f"[{g.stage}/{g.kind}] {g.sample_message}{ref}")
                console.print(f"  {g.count:>6}x {text}")
