"""Which files and topics a job writes, and the refusal of a deploy that would share one.

Two jobs writing one file corrupt each other: each commits the file's length in its
checkpoint, a transactional job cuts a torn tail back to its own length after a
crash, and a truncating sink starts the file over. Two jobs on one Kafka topic mix
their records and their keys. So every file a job writes (each file sink's `path`, its
file dead-letter queue) and every topic it writes (each Kafka sink) is claimed by that
job for as long as it is deployed, in any state: a stopped or failed job may be
restarted and resume writing.

Files are compared by their resolved path (`~`, `..` and symbolic links followed, a
relative path taken from the working directory, as connectors open it); topics by name
on the same cluster, i.e. bootstrap lists sharing a server. Kafka dead-letter topics
are not claimed: one DLQ topic shared by many jobs is a common Kafka Connect layout,
and each letter names its job.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from velostream.errors import SinkConflictError
from velostream.server.connectors import file_dlq_path
from velostream.sql.model import Application, JobSpec

__all__ = ["Claim", "check_sink_claims", "claims_of"]

_FILE_SINKS = frozenset({"file_sink"})
_TOPIC_SINKS = frozenset({"kafka_sink"})


@dataclass(frozen=True, slots=True)
class Claim:
    """One file or topic a job writes, and which of its parts writes it."""

    job: str
    what: str
    """The part of the job writing it: `sink 'out'` or `dead-letter file`."""
    kind: str
    """`file` or `topic`."""
    name: str
    """The resolved path, or the topic."""
    servers: frozenset[str] = frozenset()
    """A topic's bootstrap servers."""

    @property
    def target(self) -> str:
        """What is written, as messages name it: `file /srv/out.csv`, `topic t on b:9092`."""
        if self.kind == "topic":
            return f"topic {self.name} on {','.join(sorted(self.servers))}"
        return f"file {self.name}"

    def overlaps(self, other: Claim) -> bool:
        if self.kind != other.kind or self.name != other.name:
            return False
        # One cluster, however listed: any server in common (an empty list is unknown).
        return self.kind == "file" or not self.servers or bool(self.servers & other.servers)


def _resolved(path: str) -> str:
    candidate = Path(os.path.expanduser(path))
    if not candidate.is_absolute():
        candidate = Path.cwd() / candidate
    return str(candidate.resolve())


def claims_of(job: JobSpec, data_dir: Path) -> list[Claim]:
    """What `job` writes: its file sinks, its Kafka sinks and its file dead-letter queue
    (`dlq.path`, default `<data_dir>/dlq/<job>.jsonl`, as the server opens it)."""
    claims: list[Claim] = []
    for sink in job.sinks:
        kind = sink.type.strip().lower()
        props = sink.properties
        what = f"sink {sink.name!r}"
        if kind in _FILE_SINKS and props.get("path"):
            claims.append(Claim(job.name, what, "file", _resolved(str(props["path"]))))
        elif kind in _TOPIC_SINKS:
            topic = str(props.get("topic") or props.get("topic.name") or sink.name).strip()
            listed = str(props.get("bootstrap.servers") or props.get("brokers") or "")
            servers = frozenset(s.strip().lower() for s in listed.split(",") if s.strip())
            claims.append(Claim(job.name, what, "topic", topic, servers))
    dlq = file_dlq_path(job, data_dir)
    if dlq is not None:
        claims.append(Claim(job.name, "dead-letter file", "file", _resolved(str(dlq))))
    return claims


def check_sink_claims(
    app: Application, deployed: Iterable[tuple[str, JobSpec]], data_dir: Path
) -> None:
    """Refuse `app` if two of its jobs, or one of them and a `deployed` job (application
    name, spec) it does not replace (an upgrade replaces its own old version), write the
    same file or topic. Raises SinkConflictError naming both jobs and the target.
    """
    replaced = {job.name for job in app.jobs}
    owners: dict[str, str] = {}
    held: list[Claim] = []
    for owner, spec in deployed:
        if spec.name not in replaced:
            owners[spec.name] = owner
            held.extend(claims_of(spec, data_dir))
    mine: list[Claim] = []
    for job in app.jobs:
        for claim in claims_of(job, data_dir):
            for other in mine:
                if claim.overlaps(other):
                    raise _conflict(
                        claim,
                        other,
                        f"{_part(claim)} and {_part(other)} of application {app.name!r} both "
                        f"write {claim.target}; each sink needs its own",
                    )
            for other in held:
                if claim.overlaps(other):
                    of_app = f" of application {owners[other.job]!r}"
                    raise _conflict(
                        claim,
                        other,
                        f"{_part(claim)} would write {claim.target}, which job "
                        f"{other.job!r}{of_app} already writes (its {other.what}); undeploy "
                        f"{other.job!r} first, or write elsewhere",
                    )
            mine.append(claim)


def _part(claim: Claim) -> str:
    return f"{claim.what} of job {claim.job!r}"


def _conflict(claim: Claim, other: Claim, message: str) -> SinkConflictError:
    return SinkConflictError(message, job=claim.job, other_job=other.job, target=claim.target)
