"""The job store port: what the job runner and the API need from durable storage.

Adapters: ``adapters/sqlite_store.py`` (embedded default, ``data-dir/diskaudit.db``, one
daemon), ``adapters/postgres_store.py`` (one queue shared by many daemons) and
``jobs/memory_store.py`` (tests). ``tests/contract/`` runs the same tests against every adapter;
docs/adr/0009 and 0014.

Every method is atomic: a crash between two calls loses nothing a call returned. Timestamps are
passed in (``now``) so that tests control time.

Ownership and leases
    Each store object speaks for one daemon, its ``owner``. ``claim`` gives the job to that owner
    with a lease of ``lease_s`` seconds, which the running daemon extends with ``renew``. A job
    whose lease has run out belongs to nobody: ``recover`` (run by every daemon, periodically)
    puts it back in the queue, its attempt counted, and another daemon may claim it. ``finish``
    and ``requeue`` of a job that is no longer the owner's raise ``LeaseLost``: a daemon that was
    cut off can never overwrite the outcome of the daemon that took its job over.
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from diskaudit.jobs.model import Job, Status

#: How long a claim lasts without renewal (``job-lease``).
DEFAULT_LEASE_S = 60.0
#: The error of a job ``recover`` fails: its daemon stopped during its last allowed attempt.
RECOVER_ERROR = "the daemon stopped during the last allowed attempt"


class StoreError(Exception):
    """The store cannot do what was asked now (disk full, database locked, I/O error). The
    message says why; nothing was changed."""


class LeaseLost(ValueError):
    """The job is no longer running under this store's owner: its lease ran out and it was
    recovered (and perhaps claimed by another daemon), or it was never ours."""


@dataclass(frozen=True)
class Renewal:
    #: Jobs this owner asked to renew that are not running under its lease any more: stop them
    #: and record nothing (someone else owns the outcome now).
    lost: frozenset[str]
    #: Jobs of this owner whose cancellation was asked for (possibly through another daemon's
    #: API): stop them and finish them as cancelled.
    cancel_requested: frozenset[str]


class JobStore(abc.ABC):
    #: True when several daemons may use the store at once (PostgreSQL). A store only one daemon
    #: uses may treat every running job of another owner as left by a dead daemon at start-up.
    shared: bool = False

    def __init__(self, *, owner: str | None = None, lease_s: float = DEFAULT_LEASE_S) -> None:
        #: Who this store object claims jobs for: one daemon (host name + a random part).
        self.owner = owner or uuid.uuid4().hex
        self.lease_s = lease_s

    @abc.abstractmethod
    async def submit(self, url: str, ref: str | None, *, now: float) -> tuple[Job, bool]:
        """A new queued job for (url, ref), or the existing queued or running one for the same
        (url, ref) — deduplication. Returns (job, created)."""

    @abc.abstractmethod
    async def get(self, job_id: str) -> Job | None: ...

    @abc.abstractmethod
    async def list(self, *, status: Status | None = None, limit: int = 100) -> list[Job]:
        """Newest first (by created_at)."""

    @abc.abstractmethod
    async def claim(self, *, now: float) -> Job | None:
        """Take the oldest queued job whose ``not_before`` has come: it becomes running, its
        ``attempts`` grows by one, ``started_at`` is ``now``, its owner is ``self.owner`` and its
        lease ends at ``now + self.lease_s``. None if there is none. Two claims, from one store
        object or from several sharing the database, never return the same job."""

    @abc.abstractmethod
    async def renew(self, job_ids: Iterable[str], *, now: float) -> Renewal:
        """Extend the lease of each of these jobs that still runs under ``self.owner`` to
        ``now + self.lease_s``; report the others as lost and which ones are to be cancelled."""

    @abc.abstractmethod
    async def finish(
        self,
        job_id: str,
        status: Status,
        *,
        now: float,
        error: str | None = None,
        result: dict[str, object] | None = None,
    ) -> Job:
        """A running job of ``self.owner`` ends in a final ``status``. Raises ``KeyError`` for an
        unknown id, ``ValueError`` if ``status`` is not final and ``LeaseLost`` (a ValueError)
        if the job is not running under this owner."""

    @abc.abstractmethod
    async def requeue(
        self,
        job_id: str,
        *,
        now: float,
        not_before: float,
        error: str | None = None,
        refund_attempt: bool = False,
    ) -> Job:
        """A running job of ``self.owner`` goes back to queued, not claimed before ``not_before``
        (a retry's backoff). ``refund_attempt``: the attempt did not count (graceful shutdown).
        Raises like ``finish``."""

    @abc.abstractmethod
    async def cancel(self, job_id: str, *, now: float) -> Job | None:
        """Queued: cancelled at once. Running: ``cancel_requested`` is set and the job's worker
        ends it as cancelled. Final: unchanged. None for an unknown id."""

    @abc.abstractmethod
    async def recover(self, *, now: float, max_attempts: int, any_owner: bool = False) -> int:
        """Running jobs whose lease ended before ``now`` (their daemon died or was cut off) go
        back to queued, their attempt counted, or to failed if that was their last allowed
        attempt. ``any_owner``: also running jobs of other owners whose lease has not ended —
        at the start of the only daemon using the store, they are a dead predecessor's.
        Returns how many."""

    @abc.abstractmethod
    async def prune(self, *, finished_before: float) -> int:
        """Delete final jobs that finished before the given time. Returns how many."""

    @abc.abstractmethod
    async def counts(self) -> dict[Status, int]:
        """Jobs per status (every status present, zeros included)."""

    async def close(self) -> None:  # noqa: B027 (optional for adapters)
        """Release connections."""
