"""A short tour of the error system: a simulated job records errors at several stages.

Prints the seed's error report, the error groups and the /metrics text.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from velostream.errors import ErrorKind, Stage
from velostream.observability.error_tracker import DeploymentContext
from velostream.observability.logging import configure_logging
from velostream.observability.manager import ObservabilityManager, StreamingConfig
from velostream.server.processors.error_tracking_helper import ErrorTracker


def main() -> None:
    configure_logging("INFO")
    node = DeploymentContext(node_id="demo-node-1", node_name="Velostream demo", region="local")
    manager = ObservabilityManager.from_streaming_config(
        StreamingConfig.default().with_node_context(node), CollectorRegistry()
    )
    manager.initialize()
    job = "big_trades"
    manager.set_deployment_context_for_job(
        job,
        DeploymentContext(
            node_id="demo-node-1", node_name="Velostream demo", region="local", version="1.2.0"
        ),
    )
    metrics = manager.require_metrics()
    metrics.set_job_status(job, "running")
    metrics.add_records_in(job, 1000)
    for line in (17, 42, 99):
        ErrorTracker.record_error(
            manager,
            job,
            f"column 'price': cannot convert 'n/a' to DOUBLE (line {line})",
            stage=Stage.DESERIALIZE,
            kind=ErrorKind.TYPE,
            record_ref=f"trades.csv:{line}",
        )
    ErrorTracker.record_error(
        manager,
        job,
        "Conversion Error: Could not convert string 'x' to INT32",
        stage=Stage.PROCESS,
        kind=ErrorKind.TYPE,
        record_ref="trades.csv:311",
    )
    ErrorTracker.record_error(
        manager,
        job,
        "sink ./output/big_trades.csv: No space left on device",
        stage=Stage.SINK,
        exc=OSError(28, "No space left on device"),
    )
    metrics.add_records_failed(job, 4)
    metrics.add_records_out(job, 996)
    manager.shutdown()

    print("\n--- error report (GET /errors/report) ---")
    print(metrics.buffer.format_for_report())
    print("--- error groups (GET /errors) ---")
    for group in metrics.catalog.groups():
        print(
            f"{group.count:3d}x [{group.job}/{group.stage}/{group.kind}] {group.normalized}"
            f"  (last record {group.last_record_ref})"
        )
    print("\n--- /metrics (velo_* families) ---")
    for line in metrics.get_metrics_text().splitlines():
        if line.startswith("velo_") and "_created" not in line:
            print(line)


if __name__ == "__main__":
    main()
