"""A repository audit job and its states. The state machine is drawn in docs/jobs.md.

queued ──claim──▶ running ──▶ succeeded | failed | timed_out | cancelled
  ▲                  │
  └── retry, shutdown, crash recovery
queued ──cancel──▶ cancelled
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class Status(StrEnum):
    #: Waiting to be claimed by a job worker: new, a retry waiting for ``not_before``, or put
    #: back by a graceful shutdown or by recovery after a crash.
    QUEUED = "queued"
    #: Claimed by a job worker of a running daemon: cloning, scanning or measuring.
    RUNNING = "running"
    #: The audit finished; ``result`` holds it.
    SUCCEEDED = "succeeded"
    #: The audit failed for a reason a retry cannot fix, or ``max-attempts`` were used up.
    FAILED = "failed"
    #: The audit passed ``job-timeout`` (on its last allowed attempt).
    TIMED_OUT = "timed_out"
    #: Cancelled through the API (``DELETE /api/v1/jobs/{id}``) or the CLI.
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL


FINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT, Status.CANCELLED})


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Job:
    id: str
    url: str
    ref: str | None
    status: Status
    #: Attempts started (a claim counts one; a shutdown gives it back).
    attempts: int
    created_at: float  # unix time
    started_at: float | None = None  # of the current or last attempt
    finished_at: float | None = None
    #: A queued job is not claimed before this unix time (retry backoff).
    not_before: float = 0.0
    error: str | None = None
    #: ``AuditResult.to_json()`` of a succeeded job.
    result: dict[str, Any] | None = None
    #: A cancellation was asked for while the job was running; its worker stops it.
    cancel_requested: bool = False
    #: Every transition: (status, unix time).
    history: tuple[tuple[Status, float], ...] = field(default=())
    #: The daemon that claimed the job last (store owner id), and until when its claim holds
    #: unless renewed. Kept after the job ends: which daemon ran it.
    owner: str | None = None
    lease_until: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "ref": self.ref,
            "status": self.status.value,
            "attempts": self.attempts,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "not_before": iso(self.not_before) if self.not_before else None,
            "error": self.error,
            "result": self.result,
            "cancel_requested": self.cancel_requested,
            "owner": self.owner,
            "history": [{"status": s.value, "at": iso(t)} for s, t in self.history],
        }


class Row(Protocol):
    """A stored job row by column name (sqlite3.Row, a psycopg dict row)."""

    def __getitem__(self, key: str, /) -> Any: ...


def job_from_row(
    row: Row, history: list[tuple[Status, float]], *, result: dict[str, Any] | None
) -> Job:
    """A ``Job`` from a row of the stores' ``jobs`` table (same columns in SQLite and
    PostgreSQL); ``result`` already decoded, since each database stores JSON its own way."""
    return Job(
        id=row["id"],
        url=row["url"],
        ref=row["ref"],
        status=Status(row["status"]),
        attempts=row["attempts"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        not_before=row["not_before"],
        error=row["error"],
        result=result,
        cancel_requested=bool(row["cancel_requested"]),
        history=tuple(history),
        owner=row["owner"],
        lease_until=row["lease_until"],
    )
