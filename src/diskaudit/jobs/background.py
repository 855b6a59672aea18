"""The daemon's background work around the job queue: audits of configured repositories on
their interval, pruning of old jobs, and the queue counts the metrics read."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio

from diskaudit.jobs.model import Status
from diskaudit.jobs.runner import JobRunner
from diskaudit.jobs.store import JobStore, StoreError
from diskaudit.settings import Repository

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0
COUNTS_EVERY_S = 5.0


async def enqueue_on_interval(
    store: JobStore,
    runner: JobRunner,
    repo: Repository,
    *,
    clock: Callable[[], float] = time.time,
) -> None:
    """Submit ``repo`` now and every ``repo.interval``. A submission while the previous job of
    the same (url, ref) is still queued or running returns that job: no pile-up."""
    while True:
        started = anyio.current_time()
        try:
            job, created = await store.submit(repo.url, repo.ref, now=clock())
        except StoreError as exc:
            log.error("cannot queue the scheduled audit of %s: %s", repo.url, exc)
        else:
            if created:
                runner.wake()
                log.info("job %s: scheduled audit of %s queued", job.id, repo.url)
        await anyio.sleep_until(started + repo.interval)


async def prune_forever(
    store: JobStore, retention_s: float, *, clock: Callable[[], float] = time.time
) -> None:
    while True:
        try:
            removed = await store.prune(finished_before=clock() - retention_s)
        except StoreError as exc:
            log.error("cannot prune old jobs: %s", exc)
        else:
            if removed:
                log.info("pruned %d jobs older than job-retention", removed)
        await anyio.sleep(PRUNE_EVERY_S)


class QueueCounts:
    """Jobs per status, refreshed in the background: a collector must not query the store."""

    def __init__(self) -> None:
        self.counts: dict[Status, int] = dict.fromkeys(Status, 0)
        self.ok = False

    async def refresh_forever(self, store: JobStore) -> None:
        while True:
            try:
                self.counts = await store.counts()
                self.ok = True
            except StoreError as exc:
                self.ok = False
                log.warning("cannot count jobs: %s", exc)
            await anyio.sleep(COUNTS_EVERY_S)
