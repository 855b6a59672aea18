"""An in-memory job store, for tests (and for users' tests). Same contract as the SQLite and
PostgreSQL ones, minus durability. ``MemoryJobStore(share_with=other)`` is a second daemon's view
of the same jobs (for tests of leases and take-over)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import replace

from diskaudit.jobs.model import FINAL, Job, Status
from diskaudit.jobs.store import (
    DEFAULT_LEASE_S,
    RECOVER_ERROR,
    JobStore,
    LeaseLost,
    Renewal,
    StoreError,
)


class MemoryJobStore(JobStore):
    def __init__(
        self,
        *,
        owner: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        share_with: MemoryJobStore | None = None,
    ) -> None:
        super().__init__(owner=owner, lease_s=lease_s)
        self._jobs: dict[str, Job] = {} if share_with is None else share_with._jobs
        #: Set to make every write fail, as a full disk would.
        self.fail_writes: str | None = None

    def _check_writable(self) -> None:
        if self.fail_writes is not None:
            raise StoreError(self.fail_writes)

    def _put(self, job: Job, status: Status, now: float, **changes: object) -> Job:
        new = replace(job, status=status, history=(*job.history, (status, now)), **changes)  # type: ignore[arg-type]
        self._jobs[job.id] = new
        return new

    async def submit(self, url: str, ref: str | None, *, now: float) -> tuple[Job, bool]:
        for job in self._jobs.values():
            if (job.url, job.ref) == (url, ref) and job.status in (Status.QUEUED, Status.RUNNING):
                return job, False
        self._check_writable()
        job = Job(
            id=uuid.uuid4().hex,
            url=url,
            ref=ref,
            status=Status.QUEUED,
            attempts=0,
            created_at=now,
            history=((Status.QUEUED, now),),
        )
        self._jobs[job.id] = job
        return job, True

    async def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    async def list(self, *, status: Status | None = None, limit: int = 100) -> list[Job]:
        jobs = [j for j in self._jobs.values() if status is None or j.status == status]
        return sorted(jobs, key=lambda j: (j.created_at, j.id), reverse=True)[:limit]

    async def claim(self, *, now: float) -> Job | None:
        ready = [
            j for j in self._jobs.values() if j.status == Status.QUEUED and j.not_before <= now
        ]
        if not ready:
            return None
        self._check_writable()
        job = min(ready, key=lambda j: (j.created_at, j.id))
        return self._put(
            job,
            Status.RUNNING,
            now,
            attempts=job.attempts + 1,
            started_at=now,
            error=None,
            cancel_requested=False,
            owner=self.owner,
            lease_until=now + self.lease_s,
        )

    async def renew(self, job_ids: Iterable[str], *, now: float) -> Renewal:
        lost, cancel = set(), set()
        for job_id in job_ids:
            job = self._jobs.get(job_id)
            if job is None or job.status != Status.RUNNING or job.owner != self.owner:
                lost.add(job_id)
                continue
            self._check_writable()
            self._jobs[job_id] = replace(job, lease_until=now + self.lease_s)
            if job.cancel_requested:
                cancel.add(job_id)
        return Renewal(frozenset(lost), frozenset(cancel))

    def _mine(self, job_id: str) -> Job:
        job = self._jobs[job_id]
        if job.status != Status.RUNNING:
            raise LeaseLost(f"job {job_id} is {job.status}, not running")
        if job.owner != self.owner:
            raise LeaseLost(f"job {job_id} runs under another daemon's lease now")
        return job

    async def finish(
        self,
        job_id: str,
        status: Status,
        *,
        now: float,
        error: str | None = None,
        result: dict[str, object] | None = None,
    ) -> Job:
        if status not in FINAL:
            raise ValueError(f"{status} is not a final status")
        job = self._mine(job_id)
        self._check_writable()
        return self._put(
            job, status, now, finished_at=now, error=error, result=result, lease_until=None
        )

    async def requeue(
        self,
        job_id: str,
        *,
        now: float,
        not_before: float,
        error: str | None = None,
        refund_attempt: bool = False,
    ) -> Job:
        job = self._mine(job_id)
        self._check_writable()
        attempts = job.attempts - 1 if refund_attempt else job.attempts
        return self._put(
            job,
            Status.QUEUED,
            now,
            attempts=attempts,
            not_before=not_before,
            error=error,
            lease_until=None,
        )

    async def cancel(self, job_id: str, *, now: float) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or job.status.final:
            return job
        self._check_writable()
        if job.status == Status.QUEUED:
            return self._put(job, Status.CANCELLED, now, finished_at=now)
        new = replace(job, cancel_requested=True)
        self._jobs[job_id] = new
        return new

    async def recover(self, *, now: float, max_attempts: int, any_owner: bool = False) -> int:
        stuck = sorted(
            (
                j
                for j in self._jobs.values()
                if j.status == Status.RUNNING
                and (
                    (j.lease_until is not None and j.lease_until < now)
                    or (any_owner and j.owner != self.owner)
                )
            ),
            key=lambda j: (j.created_at, j.id),
        )
        for job in stuck:
            if job.attempts >= max_attempts:
                self._put(
                    job, Status.FAILED, now, finished_at=now, error=RECOVER_ERROR, lease_until=None
                )
            else:
                self._put(job, Status.QUEUED, now, not_before=now, lease_until=None)
        return len(stuck)

    async def prune(self, *, finished_before: float) -> int:
        old = [
            j.id
            for j in self._jobs.values()
            if j.status.final and j.finished_at is not None and j.finished_at < finished_before
        ]
        for job_id in old:
            del self._jobs[job_id]
        return len(old)

    async def counts(self) -> dict[Status, int]:
        out = dict.fromkeys(Status, 0)
        for job in self._jobs.values():
            out[job.status] += 1
        return out
