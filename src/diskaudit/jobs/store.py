"""The job store port: what the job runner and the API need from durable storage.

Adapters: ``adapters/sqlite_store.py`` (embedded default, ``data-dir/diskaudit.db``) and
``jobs/memory_store.py`` (tests). A shared store for many daemons (PostgreSQL with
``SELECT ... FOR UPDATE SKIP LOCKED`` in ``claim``) implements the same methods; see
docs/adr/0009. ``tests/contract/`` runs the same tests against every adapter.

Every method is atomic: a crash between two calls loses nothing a call returned. Timestamps are
passed in (``now``) so that tests control time.
"""

from __future__ import annotations

import abc

from diskaudit.jobs.model import Job, Status


class StoreError(Exception):
    """The store cannot do what was asked now (disk full, database locked, I/O error). The
    message says why; nothing was changed."""


class JobStore(abc.ABC):
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
        ``attempts`` grows by one, ``started_at`` is ``now``. None if there is none. Two
        claims never return the same job."""

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
        """A running job ends in a final ``status``. Raises ``KeyError`` for an unknown id and
        ``ValueError`` if the job is not running or ``status`` is not final."""

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
        """A running job goes back to queued, not claimed before ``not_before`` (a retry's
        backoff). ``refund_attempt``: the attempt did not count (graceful shutdown)."""

    @abc.abstractmethod
    async def cancel(self, job_id: str, *, now: float) -> Job | None:
        """Queued: cancelled at once. Running: ``cancel_requested`` is set and the job's worker
        ends it as cancelled. Final: unchanged. None for an unknown id."""

    @abc.abstractmethod
    async def recover(self, *, now: float, max_attempts: int) -> int:
        """At start-up: jobs left running by a daemon that died go back to queued (their attempt
        counted), or to failed if that was their last allowed attempt. Returns how many."""

    @abc.abstractmethod
    async def prune(self, *, finished_before: float) -> int:
        """Delete final jobs that finished before the given time. Returns how many."""

    @abc.abstractmethod
    async def counts(self) -> dict[Status, int]:
        """Jobs per status (every status present, zeros included)."""

    async def close(self) -> None:  # noqa: B027 (optional for adapters)
        """Release connections."""
