"""`velo-sql`: run the server (and, as they land, applications)."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Annotated

import typer

from velostream.observability.logging import configure_logging
from velostream.observability.manager import ObservabilityManager, StreamingConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Velostream streaming SQL.")

_log = logging.getLogger("velostream.cli")

LogLevel = Annotated[str, typer.Option("--log-level", envvar="VELO_LOG_LEVEL")]
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


@app.command()
def server(
    host: Annotated[str, typer.Option(envvar="VELO_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="VELO_PORT")] = 8080,
    data_dir: Annotated[Path, typer.Option("--data-dir", envvar="VELO_DATA_DIR")] = Path(
        "./velo-data"
    ),
    log_level: LogLevel = "INFO",
    log_format: LogFormat = "text",
    log_file: LogFile = None,
    log_syslog: LogSyslog = None,
) -> None:
    """Start the job server with its HTTP API and /metrics."""
    import uvicorn

    from velostream.api.app import create_app

    if log_format not in ("text", "json"):
        raise typer.BadParameter(f"unknown log format {log_format!r}; valid: text, json")
    configure_logging(log_level, log_format, log_file, syslog=log_syslog)  # type: ignore[arg-type]
    data_dir.mkdir(parents=True, exist_ok=True)
    observability = ObservabilityManager.from_streaming_config(StreamingConfig.default())
    observability.initialize()
    api = create_app(observability)
    _log.info("velo-sql server on http://%s:%d (data dir %s)", host, port, data_dir)
    try:
        uvicorn.run(api, host=host, port=port, log_level="warning", access_log=False)
    finally:
        observability.shutdown()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
