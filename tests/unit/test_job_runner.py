"""The job runner with the in-memory store and a fake audit: every way an attempt ends."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import pytest

from diskaudit.audit.errors import CloneError, RefusedError
from diskaudit.audit.model import AuditResult, DiskFigures
from diskaudit.audit.sizer import SizerReport
from diskaudit.jobs.memory_store import MemoryJobStore
from diskaudit.jobs.model import Job, Status
from diskaudit.jobs.runner import JobRunner, RunnerConfig

pytestmark = pytest.mark.anyio


def a_result(url: str) -> AuditResult:
    return AuditResult(
        url=url,
        ref=None,
        head="f" * 40,
        clone_seconds=0.1,
        scan_seconds=0.1,
        sizer_seconds=0.1,
        disk=DiskFigures(1, 1, 0, 0, 1, 1, 1, 1),
        sizer=SizerReport(commit_count=1),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def run_until(
    store: MemoryJobStore,
    audit: Callable[[str, str | None], Awaitable[AuditResult]],
    done: Callable[[Job], bool],
    job_id: str,
    *,
    clock: Clock | None = None,
    **config: object,
) -> Job:
    runner = JobRunner(store, audit, RunnerConfig(poll_s=0.01, **config), clock=clock or Clock())  # type: ignore[arg-type]
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(runner.run)
            while True:
                job = await store.get(job_id)
                assert job is not None
                if done(job):
                    break
                if clock is not None:
                    clock.now += 10_000  # past any backoff
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    final = await store.get(job_id)
    assert final is not None
    return final


async def test_success_stores_the_result() -> None:
    store = MemoryJobStore()
    job, _ = await store.submit("https://h/r.git", None, now=1.0)

    async def audit(url: str, ref: str | None) -> AuditResult:
        return a_result(url)

    done = await run_until(store, audit, lambda j: j.status.final, job.id)
    assert done.status == Status.SUCCEEDED
    assert done.attempts == 1
    assert done.result is not None
    assert done.result["head"] == "f" * 40
    assert [s for s, _ in done.history] == [Status.QUEUED, Status.RUNNING, Status.SUCCEEDED]


async def test_a_transient_failure_is_retried_then_succeeds() -> None:
    store = MemoryJobStore()
    job, _ = await store.submit("https://h/r.git", None, now=1.0)
    calls = 0

    async def audit(url: str, ref: str | None) -> AuditResult:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise CloneError("HTTP 503", transient=True)
        return a_result(url)

    done = await run_until(store, audit, lambda j: j.status.final, job.id, clock=Clock())
    assert done.status == Status.SUCCEEDED
    assert done.attempts == 2
    assert [s for s, _ in done.history] == [
        Status.QUEUED,
        Status.RUNNING,
        Status.QUEUED,
        Status.RUNNING,
        Status.SUCCEEDED,
    ]


async def test_retries_stop_at_max_attempts() -> None:
    store = MemoryJobStore()
    job, _ = await store.submit("https://h/r.git", None, now=1.0)

    async def audit(url: str, ref: str | None) -> AuditResult:
        raise CloneError("connection refused", transient=True)

    done = await run_until(
        store, audit, lambda j: j.status.final, job.id, clock=Clock(), max_attempts=3
    )
    assert (done.status, done.attempts) == (Status.FAILED, 3)
    assert done.error == "connection refused"


@pytest.mark.parametrize(
    "error", [RefusedError("scheme"), CloneError("Repository not found", transient=False)]
)
async def test_permanent_failures_are_not_retried(error: Exception) -> None:
    store = MemoryJobStore()
    job, _ = await store.submit("https://h/r.git", None, now=1.0)

    async def audit(url: str, ref: str | None) -> AuditResult:
        raise error

    done = await run_until(store, audit, lambda j: j.status.final, job.id, clock=Clock())
    assert (done.status, done.attempts) == (Status.FAILED, 1)


async def test_timeouts_end_as_timed_out_after_the_last_attempt() -> None:
    store = MemoryJobStore()
    job, _ = await store.submit("https://h/r.git", None, now=1.0)

    async def audit(url: str, ref: str | None) -> AuditResult:
        await anyio.sleep_forever()
        raise AssertionError

    done = await run_until(
        store,
        audit,
        lambda j: j.status.final,
        job.id,
        clock=Clock(),
        max_attempts=2,
        job_timeout_s=0.02,
    )
    assert (done.status, done.attempts) == (Status.TIMED_OUT, 2)


async def test_cancel_of_a_running_job_and_shutdown_requeue() -> None:
    store = MemoryJobStore()
    first, _ = await store.submit("https://h/a.git", None, now=1.0)
    second, _ = await store.submit("https://h/b.git", None, now=2.0)
    started = {first.id: anyio.Event(), second.id: anyio.Event()}
    by_url = {first.url: first.id, second.url: second.id}

    async def audit(url: str, ref: str | None) -> AuditResult:
        started[by_url[url]].set()
        await anyio.sleep_forever()
        raise AssertionError

    runner = JobRunner(store, audit, RunnerConfig(workers=2, poll_s=0.01))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(runner.run)
            await started[first.id].wait()
            await started[second.id].wait()
            await store.cancel(first.id, now=3.0)
            assert runner.cancel_running(first.id)
            while runner.running_jobs == 2:  # noqa: ASYNC110 (polling the runner is the point)
                await anyio.sleep(0.01)
            await runner.shutdown(grace_s=0.05)
            tg.cancel_scope.cancel()
    a, b = await store.get(first.id), await store.get(second.id)
    assert a is not None
    assert a.status == Status.CANCELLED
    # Stopped by the shutdown: queued again with its attempt given back.
    assert b is not None
    assert (b.status, b.attempts) == (Status.QUEUED, 0)


async def test_recovery_requeues_running_jobs_at_start() -> None:
    store = MemoryJobStore()
    job, _ = await store.submit("https://h/r.git", None, now=1.0)
    await store.claim(now=2.0)  # a daemon took it, then died

    async def audit(url: str, ref: str | None) -> AuditResult:
        return a_result(url)

    done = await run_until(store, audit, lambda j: j.status.final, job.id)
    assert done.status == Status.SUCCEEDED
    assert done.attempts == 2  # the lost attempt counts


# -- leases: several daemons on one store -------------------------------------------------------


class SharedMemoryStore(MemoryJobStore):
    """The memory store posing as a shared one (like PostgreSQL): no take-back at start-up."""

    shared = True


async def wait_until(what: str, check: Callable[[], Awaitable[bool]], timeout_s: float = 5) -> None:
    with anyio.fail_after(timeout_s):
        while True:
            if await check():
                return
            await anyio.sleep(0.01)


async def status_of(store: MemoryJobStore, job_id: str) -> Job:
    job = await store.get(job_id)
    assert job is not None
    return job


async def test_a_job_taken_over_by_another_daemon_is_stopped_and_not_recorded() -> None:
    here = SharedMemoryStore(owner="here", lease_s=0.3)
    other = SharedMemoryStore(owner="other", lease_s=0.3, share_with=here)
    job, _ = await here.submit("https://h/r.git", None, now=time.time())
    started, stopped = anyio.Event(), anyio.Event()

    async def audit(url: str, ref: str | None) -> AuditResult:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            stopped.set()
        raise AssertionError("unreachable")

    runner = JobRunner(here, audit, RunnerConfig(poll_s=0.01, workers=1))
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        await started.wait()
        # Cut off from the store past its lease: the other daemon recovers and claims the job.
        later = time.time() + 1
        assert await other.recover(now=later, max_attempts=3) == 1
        taken = await other.claim(now=later)
        assert taken is not None
        with anyio.fail_after(5):
            await stopped.wait()  # the next renewal finds the lease lost
        await wait_until("the runner let go", lambda: _async(runner.running_jobs == 0))
        tg.cancel_scope.cancel()
    after = await status_of(here, job.id)
    assert after.status == Status.RUNNING
    assert after.owner == "other"
    assert after.attempts == 2
    assert [s for s, _ in after.history][-1] == Status.RUNNING  # nothing recorded by "here"


async def _async(value: bool) -> bool:
    return value


async def test_a_cancel_asked_through_another_daemon_stops_the_job() -> None:
    here = SharedMemoryStore(owner="here", lease_s=0.3)
    other = SharedMemoryStore(owner="other", share_with=here)
    job, _ = await here.submit("https://h/r.git", None, now=time.time())
    started = anyio.Event()

    async def audit(url: str, ref: str | None) -> AuditResult:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    runner = JobRunner(here, audit, RunnerConfig(poll_s=0.01))
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        await started.wait()
        requested = await other.cancel(job.id, now=time.time())
        assert requested is not None
        assert requested.cancel_requested
        assert not runner.cancel_running("0" * 32)
        await wait_until("cancelled", lambda: _final(here, job.id), timeout_s=5)
        tg.cancel_scope.cancel()
    done = await status_of(here, job.id)
    assert done.status == Status.CANCELLED


async def _final(store: MemoryJobStore, job_id: str) -> bool:
    return (await status_of(store, job_id)).status.final


async def test_an_outcome_waits_for_the_store_to_come_back() -> None:
    store = MemoryJobStore(lease_s=4.0)
    job, _ = await store.submit("https://h/r.git", None, now=time.time())

    async def audit(url: str, ref: str | None) -> AuditResult:
        store.fail_writes = "the job store cannot write: server closed the connection"
        return a_result(url)

    runner = JobRunner(store, audit, RunnerConfig(poll_s=0.01))
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        await wait_until("the audit ran", lambda: _async(store.fail_writes is not None))
        await anyio.sleep(0.6)  # a few failed attempts to store the outcome
        assert (await status_of(store, job.id)).status == Status.RUNNING
        store.fail_writes = None
        await wait_until("stored", lambda: _final(store, job.id), timeout_s=10)
        tg.cancel_scope.cancel()
    done = await status_of(store, job.id)
    assert done.status == Status.SUCCEEDED
    assert done.attempts == 1


async def test_jobs_of_a_dead_daemon_are_taken_once_their_lease_runs_out() -> None:
    here = SharedMemoryStore(owner="here", lease_s=0.4)
    dead = SharedMemoryStore(owner="dead", lease_s=0.4, share_with=here)
    job, _ = await dead.submit("https://h/r.git", None, now=time.time())
    assert await dead.claim(now=time.time()) is not None
    ran: list[str] = []

    async def audit(url: str, ref: str | None) -> AuditResult:
        ran.append(url)
        return a_result(url)

    runner = JobRunner(here, audit, RunnerConfig(poll_s=0.01))
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        # Not at start-up (a shared store: the lease still holds)...
        assert (await status_of(here, job.id)).owner == "dead"
        # ...but once the lease has run out.
        await wait_until("taken over", lambda: _final(here, job.id), timeout_s=5)
        tg.cancel_scope.cancel()
    done = await status_of(here, job.id)
    assert done.status == Status.SUCCEEDED
    assert done.owner == "here"
    assert done.attempts == 2
    assert ran == ["https://h/r.git"]
