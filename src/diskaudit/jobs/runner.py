"""The job runner: ``job-workers`` consumers that claim jobs from the store and audit them.

Each attempt runs under its own deadline (``job-timeout``), born here when the attempt starts:
a job may wait in the queue for hours, and that wait must not eat its time. The deadline
reaches the clone slot wait, git and every walk (see ``audit/service.py``).

How an attempt ends
    success                      -> succeeded, with the result
    refused URL or ref           -> failed (permanent: a retry cannot help)
    permanent clone failure      -> failed
    transient failure, timeout   -> queued again after a backoff, until ``max-attempts``; then
                                    failed (or timed_out)
    cancel requested (API)       -> cancelled (also when asked through another daemon: the
                                    lease renewal reports it)
    daemon shutting down         -> queued again, the attempt given back
    daemon killed                -> still "running" in the store until its lease runs out; then
                                    ``recover`` (any daemon, periodically, and this one at its
                                    next start) puts it back to queued, the attempt counted
    lease lost (cut off from the -> stopped, nothing recorded: the job was recovered, perhaps
    store longer than the lease)    claimed by another daemon, which owns the outcome now

Leases
    While jobs run, their leases are renewed every ``lease_s / 3``; every ``lease_s / 2`` the
    runner recovers jobs whose lease ran out (another daemon died). See jobs/store.py.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import anyio.abc

from diskaudit.audit.errors import AuditError, RefusedError
from diskaudit.audit.model import AuditResult
from diskaudit.jobs.model import Job, Status
from diskaudit.jobs.store import JobStore, LeaseLost, StoreError
from diskaudit.logs import current_job

log = logging.getLogger(__name__)

Audit = Callable[[str, str | None], Awaitable[AuditResult]]


@dataclass(frozen=True)
class RunnerConfig:
    workers: int = 2
    max_attempts: int = 3
    job_timeout_s: float = 900.0
    #: Backoff before retry n (1-based) is ``backoff_s * 4 ** (n - 1)``, at most ``max_backoff_s``.
    backoff_s: float = 30.0
    max_backoff_s: float = 3600.0
    #: How often an idle worker looks for due jobs (submissions wake it at once).
    poll_s: float = 1.0


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        audit: Audit,
        config: RunnerConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._audit = audit
        self.config = config
        self._clock = clock
        self._wakeup = anyio.Event()
        self._running: dict[str, anyio.CancelScope] = {}
        #: Why a running job's scope was cancelled: "cancel" (API) or "shutdown".
        self._reasons: dict[str, str] = {}
        self._accepting = True
        self._none_running = anyio.Event()
        self._none_running.set()
        self._workers_left = config.workers
        self._stopped = anyio.Event()

    # -- control -----------------------------------------------------------------------------

    def wake(self) -> None:
        """A job was submitted: idle workers look now instead of at their next poll."""
        self._wakeup.set()
        self._wakeup = anyio.Event()

    def cancel_running(self, job_id: str) -> bool:
        """Stop a running job of this daemon (its git process group is killed, its clone
        deleted); it ends as cancelled. False if this daemon is not running it."""
        return self._stop(job_id, "cancel")

    def _stop(self, job_id: str, reason: str) -> bool:
        scope = self._running.get(job_id)
        if scope is None:
            return False
        self._reasons.setdefault(job_id, reason)
        scope.cancel()
        return True

    @property
    def running_jobs(self) -> int:
        return len(self._running)

    async def shutdown(self, grace_s: float) -> None:
        """Stop claiming; give running jobs ``grace_s`` to finish, then cancel them: they go
        back to queued, their attempt given back."""
        self._accepting = False
        self.wake()
        with anyio.move_on_after(grace_s):
            await self._none_running.wait()
        for job_id, scope in list(self._running.items()):
            self._reasons[job_id] = "shutdown"
            scope.cancel()
        await self._none_running.wait()

    # -- the workers -------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        # At start-up, the only daemon of a store takes back every running job at once (they
        # are its dead predecessor's); a shared store waits for the leases to run out.
        try:
            recovered = await self.store.recover(
                now=self._clock(),
                max_attempts=self.config.max_attempts,
                any_owner=not self.store.shared,
            )
        except StoreError as exc:
            log.error("cannot recover jobs left running: %s (retrying in the background)", exc)
            recovered = 0
        if recovered:
            log.warning("%d jobs were running when the daemon stopped: queued again", recovered)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._keep_leases)
            tg.start_soon(self._recover_expired)
            for n in range(self.config.workers):
                tg.start_soon(self._worker, n)
            task_status.started()
            await self._stopped.wait()
            tg.cancel_scope.cancel()  # the lease keepers; the workers have returned

    async def _keep_leases(self) -> None:
        """Renew the leases of the jobs running here; stop the ones that were lost or whose
        cancellation was asked for through the store."""
        while True:
            await anyio.sleep(self.store.lease_s / 3)
            ids = list(self._running)
            if not ids:
                continue
            try:
                renewal = await self.store.renew(ids, now=self._clock())
            except StoreError as exc:
                log.warning("cannot renew the leases of %d running jobs: %s", len(ids), exc)
                continue
            for job_id in renewal.lost:
                if self._stop(job_id, "lost"):
                    log.warning(
                        "job %s: its lease ran out (the store was unreachable?); it was taken "
                        "back by the queue: stopping it here",
                        job_id,
                    )
            for job_id in renewal.cancel_requested:
                if self._stop(job_id, "cancel"):
                    log.info("job %s: cancellation requested through the store", job_id)

    async def _recover_expired(self) -> None:
        """Jobs of daemons that died go back to the queue once their lease has run out."""
        while True:
            await anyio.sleep(self.store.lease_s / 2)
            try:
                n = await self.store.recover(
                    now=self._clock(), max_attempts=self.config.max_attempts
                )
            except StoreError as exc:
                log.warning("cannot look for jobs with expired leases: %s", exc)
                continue
            if n:
                log.warning("%d jobs of a daemon that stopped renewing: queued again", n)
                self.wake()

    async def _worker(self, n: int) -> None:
        try:
            await self._work(n)
        finally:
            self._workers_left -= 1
            if not self._workers_left:
                self._stopped.set()

    async def _work(self, n: int) -> None:
        while self._accepting:
            wakeup = self._wakeup
            try:
                job = await self.store.claim(now=self._clock())
            except StoreError as exc:
                log.error("job worker %d cannot claim jobs: %s", n, exc)
                job = None
            if job is None:
                with anyio.move_on_after(self.config.poll_s):
                    await wakeup.wait()
                continue
            await self._run_job(job)

    async def _run_job(self, job: Job) -> None:
        token = current_job.set(job.id)  # every log line of this attempt carries the job's id
        try:
            await self._attempt(job)
        finally:
            current_job.reset(token)

    async def _attempt(self, job: Job) -> None:
        scope = anyio.CancelScope()
        if self._none_running.is_set():
            self._none_running = anyio.Event()
        self._running[job.id] = scope
        log.info("job %s: attempt %d: auditing %s", job.id, job.attempts, job.url)
        # Stays so only if the daemon itself is cancelled around us (a forced stop): the job
        # goes back to the queue like in a graceful shutdown.
        outcome: tuple[str, object] = ("shutdown", "")
        try:
            with scope:
                try:
                    # The attempt's one deadline.
                    with anyio.fail_after(self.config.job_timeout_s):
                        outcome = ("succeeded", await self._audit(job.url, job.ref))
                except TimeoutError:
                    limit = self.config.job_timeout_s
                    outcome = ("timeout", f"did not finish within job-timeout ({limit:g}s)")
                except RefusedError as exc:
                    outcome = ("permanent", f"refused: {exc}")
                except AuditError as exc:
                    outcome = ("transient" if exc.transient else "permanent", str(exc))
                except Exception as exc:  # a bug: record it on the job, keep the daemon up
                    log.exception("job %s: unexpected error", job.id)
                    outcome = ("permanent", f"internal error: {type(exc).__name__}: {exc}")
            if scope.cancelled_caught:
                outcome = (self._reasons.get(job.id, "shutdown"), "")
        finally:
            # Shielded: the outcome of an attempt must reach the store even while the daemon
            # is being cancelled; only then does the job stop counting as running here.
            with anyio.CancelScope(shield=True):
                if outcome[0] != "lost":
                    await self._record_with_retries(job, *outcome)
            self._running.pop(job.id, None)
            self._reasons.pop(job.id, None)
            if not self._running:
                self._none_running.set()

    async def _record_with_retries(self, job: Job, kind: str, detail: object) -> None:
        """``_record``, tried again while the store is unreachable (a database restarting) for
        up to half the lease; after that the lease runs out and the queue takes the job back."""
        delay = 0.25
        with anyio.move_on_after(self.store.lease_s / 2):
            while True:
                try:
                    await self._record(job, kind, detail)
                    return
                except StoreError as exc:
                    log.warning("job %s: cannot store its outcome yet: %s", job.id, exc)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)
        # The job stays "running" in the store; when its lease runs out it is queued again.
        log.error("job %s: its outcome could not be stored; the queue will run it again", job.id)

    async def _record(self, job: Job, kind: str, detail: object) -> None:
        """Store the attempt's outcome. Raises StoreError (nothing stored)."""
        now = self._clock()
        try:
            if kind == "succeeded":
                assert isinstance(detail, AuditResult)
                await self.store.finish(job.id, Status.SUCCEEDED, now=now, result=detail.to_json())
                log.info("job %s: succeeded", job.id)
            elif kind == "cancel":
                await self.store.finish(job.id, Status.CANCELLED, now=now, error="cancelled")
                log.info("job %s: cancelled", job.id)
            elif kind == "shutdown":
                await self.store.requeue(
                    job.id, now=now, not_before=now, error=None, refund_attempt=True
                )
                log.info("job %s: queued again (daemon stopping)", job.id)
            elif kind in ("transient", "timeout") and job.attempts < self.config.max_attempts:
                delay = self.backoff(job.attempts)
                await self.store.requeue(job.id, now=now, not_before=now + delay, error=str(detail))
                log.warning(
                    "job %s: attempt %d failed (%s); retry in %.0fs",
                    job.id,
                    job.attempts,
                    detail,
                    delay,
                )
            else:
                status = Status.TIMED_OUT if kind == "timeout" else Status.FAILED
                await self.store.finish(job.id, status, now=now, error=str(detail))
                log.warning("job %s: %s: %s", job.id, status.value, detail)
        except LeaseLost as exc:
            # Recovered and perhaps claimed again elsewhere: that attempt owns the outcome.
            log.warning("job %s: outcome of this attempt dropped: %s", job.id, exc)

    def backoff(self, attempt: int) -> float:
        return float(
            min(self.config.max_backoff_s, self.config.backoff_s * math.pow(4, attempt - 1))
        )
