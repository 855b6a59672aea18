"""The job runner with the in-memory store and a fake audit: every way an attempt ends."""

from __future__ import annotations

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
