"""`velo-sql run` and `velo-sql validate`: an application in the foreground."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from velostream.datasource.registry import create_sink, create_source
from velostream.dlq import FileDeadLetterQueue
from velostream.errors import Stage, VelostreamError
from velostream.observability.error_tracker import DeploymentContext
from velostream.observability.manager import ObservabilityManager
from velostream.server.processors.error_tracking_helper import ErrorTracker
from velostream.server.processors.processor import JobProcessor, JobStats
from velostream.sql.check import check_application
from velostream.sql.model import Application, JobSpec

__all__ = ["JobRun", "load_application", "run_application", "validate_application"]


@dataclass(slots=True)
class JobRun:
    """One job of a foreground run: its processor, thread and outcome."""

    job: JobSpec
    processor: JobProcessor | None = None
    thread: threading.Thread | None = None
    error: str | None = None
    stats: JobStats = field(default_factory=JobStats)

    @property
    def failed(self) -> bool:
        return self.error is not None


def load_application(path: Path) -> Application:
    """Parse and plan an application file; raises VelostreamError listing every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise VelostreamError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return check_application(text, base_dir=path.parent, source_name=str(path))


def validate_application(path: Path) -> Application:
    return load_application(path)


def _start_job(
    run: JobRun, observability: ObservabilityManager, app_name: str, data_dir: Path
) -> None:
    job = run.job
    observability.set_deployment_context_for_job(
        job.name, DeploymentContext.from_env(version=job.version)
    )
    metrics = observability.require_metrics()
    metrics.set_job_status(job.name, "starting")
    try:
        if len(job.sources) != 1:
            raise VelostreamError(f"job {job.name} needs exactly one source")
        src = job.sources[0]
        source = create_source(src.name, src.type, src.properties)
        sinks = [create_sink(s.name, s.type, s.properties) for s in job.sinks]
        dlq = FileDeadLetterQueue(
            Path(job.properties.get("dlq.path") or data_dir / "dlq" / f"{job.name}.jsonl")
        )
        run.processor = JobProcessor(job, source, sinks, observability, app_name=app_name, dlq=dlq)
        run.stats = run.processor.stats
    except Exception as exc:
        run.error = str(exc)
        ErrorTracker.record_error(observability, job.name, str(exc), stage=Stage.DEPLOY, exc=exc)
        metrics.set_job_status(job.name, "failed")
        return

    def target() -> None:
        assert run.processor is not None
        metrics.set_job_status(job.name, "running")
        try:
            run.processor.run()
            metrics.set_job_status(job.name, "completed")
        except Exception as exc:
            run.error = str(exc)
            ErrorTracker.record_error(
                observability, job.name, f"job failed: {exc}", stage=Stage.JOB, exc=exc
            )
            metrics.set_job_status(job.name, "failed")

    run.thread = threading.Thread(target=target, name=f"job-{job.name}", daemon=True)
    run.thread.start()


def _progress_table(runs: list[JobRun], observability: ObservabilityManager) -> Table:
    table = Table(title="velo-sql run", expand=False)
    for col in ("job", "state", "in", "out", "failed", "records/s", "errors"):
        table.add_column(col, justify="right" if col not in ("job", "state") else "left")
    metrics = observability.require_metrics()
    for run in runs:
        stats = run.stats
        state = (
            "failed"
            if run.failed
            else ("running" if run.thread is not None and run.thread.is_alive() else "done")
        )
        rate = stats.records_in / max(stats.duration, 1e-9)
        buffer = metrics.job_buffer(run.job.name)
        errors = buffer.total_errors if buffer is not None else 0
        table.add_row(
            run.job.name,
            state,
            f"{stats.records_in:,}",
            f"{stats.records_out:,}",
            f"{stats.records_failed:,}",
            f"{rate:,.0f}",
            str(errors),
        )
    return table


def run_application(
    app: Application, observability: ObservabilityManager, console: Console, data_dir: Path
) -> list[JobRun]:
    """Run every job of `app` until its bounded sources end (or Ctrl-C)."""
    runs = [JobRun(job) for job in app.jobs]
    for run in runs:
        _start_job(run, observability, app.name, data_dir)
    live_display = console.is_terminal
    try:
        if live_display:
            with Live(
                _progress_table(runs, observability), console=console, refresh_per_second=4
            ) as live:
                while any(r.thread is not None and r.thread.is_alive() for r in runs):
                    time.sleep(0.25)
                    live.update(_progress_table(runs, observability))
                live.update(_progress_table(runs, observability))
        else:
            for run in runs:
                if run.thread is not None:
                    run.thread.join()
    except KeyboardInterrupt:
        for run in runs:
            if run.processor is not None:
                run.processor.stop()
        for run in runs:
            if run.thread is not None:
                run.thread.join(timeout=30)
    return runs


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
            f"{s.duration:.2f}",
            f"{s.records_in / max(s.duration, 1e-9):,.0f}",
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
