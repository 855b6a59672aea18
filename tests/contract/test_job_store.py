"""The JobStore contract (jobs/store.py), run against every adapter (memory, SQLite, PostgreSQL);
then what only the SQLite adapter promises: durability across restarts and ``kill -9``,
deduplication and claiming across connections, and a full disk that fails cleanly. What only the
PostgreSQL adapter promises is in test_postgres_store.py."""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from diskaudit.adapters.sqlite_store import SCHEMA_VERSION, SQLiteJobStore
from diskaudit.jobs.memory_store import MemoryJobStore
from diskaudit.jobs.model import FINAL, Job, Status
from diskaudit.jobs.store import JobStore, LeaseLost, StoreError
from tests.pgserver import PgServer

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0
URL = "https://example.com/repo.git"


#: ``await make(owner=None)``: a store object of the adapter under test; every call on one test
#: gives another daemon's view of the same jobs.
MakeStore = Callable[..., Awaitable[JobStore]]
_databases = itertools.count()


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    opened: list[JobStore] = []
    dsn = ""
    if request.param == "postgresql":
        pg: PgServer = request.getfixturevalue("pg")
        dsn = pg.create_database(f"contract_{os.getpid()}_{next(_databases)}")

    async def make(owner: str | None = None) -> JobStore:
        s: JobStore
        if request.param == "memory":
            first = opened[0] if opened else None
            assert first is None or isinstance(first, MemoryJobStore)
            s = MemoryJobStore(owner=owner, share_with=first)
        elif request.param == "sqlite":
            s = await SQLiteJobStore.open(str(tmp_path / "data" / "diskaudit.db"), owner=owner)
        else:
            from diskaudit.adapters.postgres_store import PostgresJobStore

            s = await PostgresJobStore.open(dsn, owner=owner)
        opened.append(s)
        return s

    try:
        yield make
    finally:
        for s in opened:
            await s.close()


@pytest.fixture
async def store(make_store: MakeStore) -> JobStore:
    return await make_store()


async def running(store: JobStore, url: str = URL, ref: str | None = None, now: float = T0) -> Job:
    job, _ = await store.submit(url, ref, now=now)
    claimed = await store.claim(now=now + 1)
    assert claimed is not None
    assert claimed.id == job.id
    return claimed


# -- submit, get, list -----------------------------------------------------------------------


async def test_submit_creates_a_queued_job(store: JobStore) -> None:
    job, created = await store.submit(URL, "main", now=T0)
    assert created
    assert job.url == URL
    assert job.ref == "main"
    assert job.status == Status.QUEUED
    assert job.attempts == 0
    assert job.created_at == T0
    assert (job.started_at, job.finished_at, job.error, job.result) == (None, None, None, None)
    assert job.not_before == 0.0
    assert not job.cancel_requested
    assert job.history == ((Status.QUEUED, T0),)
    assert await store.get(job.id) == job


async def test_submit_returns_the_queued_or_running_job_for_the_same_key(store: JobStore) -> None:
    job, _ = await store.submit(URL, None, now=T0)
    again, created = await store.submit(URL, None, now=T0 + 1)
    assert not created
    assert again == job
    claimed = await store.claim(now=T0 + 2)
    assert claimed is not None
    while_running, created = await store.submit(URL, None, now=T0 + 3)
    assert not created
    assert while_running == claimed
    assert (await store.counts())[Status.RUNNING] == 1
    assert len(await store.list()) == 1


@pytest.mark.parametrize("final", [Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT])
async def test_submit_creates_a_new_job_once_the_previous_is_final(
    store: JobStore, final: Status
) -> None:
    old = await running(store)
    await store.finish(old.id, final, now=T0 + 5)
    new, created = await store.submit(URL, None, now=T0 + 6)
    assert created
    assert new.id != old.id
    assert new.status == Status.QUEUED


async def test_submit_after_a_cancelled_job_creates_a_new_one(store: JobStore) -> None:
    old, _ = await store.submit(URL, None, now=T0)
    await store.cancel(old.id, now=T0 + 1)
    new, created = await store.submit(URL, None, now=T0 + 2)
    assert created
    assert new.id != old.id


async def test_ref_none_and_a_named_ref_are_different_keys(store: JobStore) -> None:
    a, created_a = await store.submit(URL, None, now=T0)
    b, created_b = await store.submit(URL, "main", now=T0)
    c, created_c = await store.submit(URL, "dev", now=T0)
    d, created_d = await store.submit(URL + "x", None, now=T0)
    assert created_a
    assert created_b
    assert created_c
    assert created_d
    assert len({a.id, b.id, c.id, d.id}) == 4
    again, created = await store.submit(URL, "main", now=T0 + 1)
    assert not created
    assert again.id == b.id


async def test_concurrent_submits_of_one_key_create_one_job(store: JobStore) -> None:
    results: list[tuple[Job, bool]] = []

    async def submit() -> None:
        results.append(await store.submit(URL, "main", now=T0))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(submit)
    assert sum(created for _, created in results) == 1
    assert len({job.id for job, _ in results}) == 1


async def test_get_an_unknown_id_is_none(store: JobStore) -> None:
    assert await store.get("nope") is None


async def test_list_is_newest_first_with_status_filter_and_limit(store: JobStore) -> None:
    ids = [(await store.submit(f"{URL}/{i}", None, now=T0 + i))[0].id for i in range(5)]
    assert [j.id for j in await store.list()] == ids[::-1]
    assert [j.id for j in await store.list(limit=2)] == [ids[4], ids[3]]
    claimed = await store.claim(now=T0 + 10)
    assert claimed is not None
    assert claimed.id == ids[0]
    assert [j.id for j in await store.list(status=Status.RUNNING)] == [ids[0]]
    assert [j.id for j in await store.list(status=Status.QUEUED)] == ids[:0:-1]
    assert await store.list(status=Status.SUCCEEDED) == []
    assert await store.list(limit=0) == []
    listed = await store.list(status=Status.RUNNING)
    assert listed[0] == await store.get(ids[0])  # the history comes along


# -- claim -----------------------------------------------------------------------------------


async def test_claim_takes_the_oldest_eligible_job(store: JobStore) -> None:
    assert await store.claim(now=T0) is None
    second, _ = await store.submit(URL + "/2", None, now=T0 + 2)
    first, _ = await store.submit(URL + "/1", None, now=T0 + 1)
    job = await store.claim(now=T0 + 10)
    assert job is not None
    assert job.id == first.id
    assert job.status == Status.RUNNING
    assert job.attempts == 1
    assert job.started_at == T0 + 10
    assert job.history == ((Status.QUEUED, T0 + 1), (Status.RUNNING, T0 + 10))
    assert await store.get(job.id) == job
    nxt = await store.claim(now=T0 + 11)
    assert nxt is not None
    assert nxt.id == second.id
    assert await store.claim(now=T0 + 12) is None


async def test_claim_respects_not_before(store: JobStore) -> None:
    job = await running(store)
    await store.requeue(job.id, now=T0 + 2, not_before=T0 + 60, error="boom")
    later, _ = await store.submit(URL + "/later", None, now=T0 + 3)
    nxt = await store.claim(now=T0 + 30)  # the retry waits; the younger job goes first
    assert nxt is not None
    assert nxt.id == later.id
    assert await store.claim(now=T0 + 59.9) is None
    retried = await store.claim(now=T0 + 60)
    assert retried is not None
    assert retried.id == job.id
    assert retried.attempts == 2
    assert retried.started_at == T0 + 60
    assert retried.error is None


async def test_concurrent_claims_never_return_a_job_twice(store: JobStore) -> None:
    for i in range(20):
        await store.submit(f"{URL}/{i}", None, now=T0 + i)
    claimed: list[str] = []

    async def claimer() -> None:
        while (job := await store.claim(now=T0 + 100)) is not None:
            claimed.append(job.id)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(claimer)
    assert len(claimed) == 20
    assert {j.id for j in await store.list()} == set(claimed)
    assert (await store.counts())[Status.RUNNING] == 20


# -- finish, requeue, cancel -----------------------------------------------------------------


async def test_finish_stores_result_and_error(store: JobStore) -> None:
    result: dict[str, object] = {
        "url": URL,
        "bytes": 123456789012,
        "ratio": 0.25,
        "ok": True,
        "none": None,
        "dirs": [{"path": "a/b", "sizes": [1, 2, 3]}, {"path": "ü €", "sizes": []}],
        "nested": {"deep": {"deeper": ["x", {"y": -1}]}},
    }
    job = await running(store)
    done = await store.finish(job.id, Status.SUCCEEDED, now=T0 + 9, result=result)
    assert done.status == Status.SUCCEEDED
    assert done.finished_at == T0 + 9
    assert done.result == result
    assert done.error is None
    assert await store.get(job.id) == done

    other = await running(store, URL + "/2")
    failed = await store.finish(other.id, Status.FAILED, now=T0 + 9, error="repository not found")
    assert failed.error == "repository not found"
    assert failed.result is None
    assert await store.get(other.id) == failed


async def test_finish_only_from_running_and_only_to_final(store: JobStore) -> None:
    with pytest.raises(KeyError):
        await store.finish("nope", Status.SUCCEEDED, now=T0)
    queued, _ = await store.submit(URL, None, now=T0)
    with pytest.raises(ValueError, match="not running"):
        await store.finish(queued.id, Status.SUCCEEDED, now=T0 + 1)
    job = await store.claim(now=T0 + 1)
    assert job is not None
    for status in (Status.QUEUED, Status.RUNNING):
        with pytest.raises(ValueError, match="not a final status"):
            await store.finish(job.id, status, now=T0 + 2)
    assert await store.get(job.id) == job
    await store.finish(job.id, Status.TIMED_OUT, now=T0 + 3, error="past job-timeout")
    with pytest.raises(ValueError, match="not running"):
        await store.finish(job.id, Status.SUCCEEDED, now=T0 + 4)
    final = await store.get(job.id)
    assert final is not None
    assert final.status == Status.TIMED_OUT


async def test_requeue_with_backoff_and_refund(store: JobStore) -> None:
    job = await running(store)
    retry = await store.requeue(job.id, now=T0 + 2, not_before=T0 + 30, error="HTTP 503")
    assert retry.status == Status.QUEUED
    assert retry.attempts == 1
    assert retry.not_before == T0 + 30
    assert retry.error == "HTTP 503"
    assert await store.get(job.id) == retry
    again = await store.claim(now=T0 + 30)
    assert again is not None
    assert again.attempts == 2
    back = await store.requeue(job.id, now=T0 + 31, not_before=T0 + 31, refund_attempt=True)
    assert back.attempts == 1
    assert back.error is None
    with pytest.raises(ValueError, match="not running"):
        await store.requeue(job.id, now=T0 + 32, not_before=T0 + 32)
    with pytest.raises(KeyError):
        await store.requeue("nope", now=T0 + 32, not_before=T0 + 32)


async def test_cancel(store: JobStore) -> None:
    assert await store.cancel("nope", now=T0) is None

    queued, _ = await store.submit(URL + "/q", None, now=T0)
    cancelled = await store.cancel(queued.id, now=T0 + 1)
    assert cancelled is not None
    assert cancelled.status == Status.CANCELLED
    assert cancelled.finished_at == T0 + 1
    assert cancelled.history[-1] == (Status.CANCELLED, T0 + 1)
    assert await store.get(queued.id) == cancelled
    assert await store.claim(now=T0 + 2) is None

    job = await running(store, URL + "/r", now=T0 + 2)
    asked = await store.cancel(job.id, now=T0 + 4)
    assert asked is not None
    assert asked.status == Status.RUNNING
    assert asked.cancel_requested
    assert asked.finished_at is None
    assert asked.history == job.history
    assert await store.get(job.id) == asked
    ended = await store.finish(job.id, Status.CANCELLED, now=T0 + 5)
    assert ended.finished_at == T0 + 5

    done = await running(store, URL + "/d", now=T0 + 6)
    done = await store.finish(done.id, Status.SUCCEEDED, now=T0 + 8, result={"n": 1})
    assert await store.cancel(done.id, now=T0 + 9) == done
    assert await store.get(done.id) == done


# -- recover, prune, counts, history ---------------------------------------------------------


async def test_recover_requeues_or_fails_running_jobs(store: JobStore) -> None:
    fresh = await running(store, URL + "/a")
    last = await running(store, URL + "/b")
    await store.requeue(last.id, now=T0 + 2, not_before=T0 + 2)
    last2 = await store.claim(now=T0 + 3)
    assert last2 is not None
    assert last2.attempts == 2
    waiting, _ = await store.submit(URL + "/c", None, now=T0 + 3)

    assert await store.recover(now=T0 + 100, max_attempts=2) == 2

    back = await store.get(fresh.id)
    assert back is not None
    assert back.status == Status.QUEUED
    assert back.attempts == 1  # the attempt counted
    assert back.not_before == T0 + 100
    assert back.history[-1] == (Status.QUEUED, T0 + 100)
    dead = await store.get(last.id)
    assert dead is not None
    assert dead.status == Status.FAILED
    assert dead.finished_at == T0 + 100
    assert dead.error
    assert await store.get(waiting.id) == waiting
    assert await store.recover(now=T0 + 101, max_attempts=2) == 0


async def test_prune_deletes_only_old_final_jobs(store: JobStore) -> None:
    old = await running(store, URL + "/old")
    await store.finish(old.id, Status.SUCCEEDED, now=T0 + 10, result={"a": 1})
    edge = await running(store, URL + "/edge")
    await store.finish(edge.id, Status.FAILED, now=T0 + 20, error="x")
    young_cancel, _ = await store.submit(URL + "/young", None, now=T0)
    await store.cancel(young_cancel.id, now=T0 + 30)
    old_cancel, _ = await store.submit(URL + "/oc", None, now=T0)
    await store.cancel(old_cancel.id, now=T0 + 5)
    still_running = await running(store, URL + "/run")
    still_queued, _ = await store.submit(URL + "/queued", None, now=T0)

    assert await store.prune(finished_before=T0 + 20) == 2
    assert await store.get(old.id) is None
    assert await store.get(old_cancel.id) is None
    kept = {j.id for j in await store.list()}
    assert kept == {edge.id, young_cancel.id, still_running.id, still_queued.id}
    assert await store.prune(finished_before=T0 + 1000) == 2
    assert {j.id for j in await store.list()} == {still_running.id, still_queued.id}


async def test_counts_has_every_status(store: JobStore) -> None:
    assert await store.counts() == dict.fromkeys(Status, 0)
    job = await running(store, URL + "/1", now=T0)
    await store.finish(job.id, Status.SUCCEEDED, now=T0 + 3)
    await store.submit(URL + "/2", None, now=T0 + 3)
    await store.submit(URL + "/3", None, now=T0 + 4)
    counts = await store.counts()
    assert set(counts) == set(Status)
    assert counts[Status.QUEUED] == 2
    assert counts[Status.SUCCEEDED] == 1
    assert sum(counts.values()) == 3


async def test_history_records_every_transition(store: JobStore) -> None:
    job, _ = await store.submit(URL, None, now=T0)
    await store.claim(now=T0 + 1)
    await store.requeue(job.id, now=T0 + 2, not_before=T0 + 3, error="503")
    await store.claim(now=T0 + 3)
    t4 = T0 + 4 + store.lease_s  # the lease has run out
    await store.recover(now=t4, max_attempts=5)
    await store.claim(now=t4 + 1)
    await store.cancel(job.id, now=t4 + 2)  # running: a request, not a transition
    await store.finish(job.id, Status.CANCELLED, now=t4 + 3)
    got = await store.get(job.id)
    assert got is not None
    assert got.history == (
        (Status.QUEUED, T0),
        (Status.RUNNING, T0 + 1),
        (Status.QUEUED, T0 + 2),
        (Status.RUNNING, T0 + 3),
        (Status.QUEUED, t4),
        (Status.RUNNING, t4 + 1),
        (Status.CANCELLED, t4 + 3),
    )
    assert got.attempts == 3
    assert all(s in FINAL for s, _ in got.history[-1:])


# -- owners and leases (several daemons on one store) ------------------------------------------


async def test_claim_gives_the_job_to_the_owner_with_a_lease(make_store: MakeStore) -> None:
    a = await make_store("daemon-a")
    job = await running(a)
    assert job.owner == "daemon-a"
    assert job.lease_until == T0 + 1 + a.lease_s
    renewal = await a.renew([job.id], now=T0 + 20)
    assert renewal.lost == frozenset()
    assert renewal.cancel_requested == frozenset()
    renewed = await a.get(job.id)
    assert renewed is not None
    assert renewed.lease_until == T0 + 20 + a.lease_s
    # A renewed lease is not recovered when the first one would have run out.
    assert await a.recover(now=T0 + 2 + a.lease_s, max_attempts=3) == 0
    assert await a.renew([], now=T0 + 21) == renewal


async def test_renew_reports_lost_and_cancel_requested_jobs(make_store: MakeStore) -> None:
    a = await make_store("daemon-a")
    b = await make_store("daemon-b")
    mine = await running(a, URL + "/mine")
    theirs = await running(b, URL + "/theirs")
    done = await running(a, URL + "/done")
    await a.finish(done.id, Status.SUCCEEDED, now=T0 + 2)
    await b.cancel(mine.id, now=T0 + 3)  # asked through the other daemon's API
    renewal = await a.renew([mine.id, theirs.id, done.id, "0" * 32], now=T0 + 4)
    assert renewal.lost == {theirs.id, done.id, "0" * 32}
    assert renewal.cancel_requested == {mine.id}
    await a.finish(mine.id, Status.CANCELLED, now=T0 + 5, error="cancelled")
    got = await b.get(mine.id)
    assert got is not None
    assert got.status == Status.CANCELLED


async def test_another_daemon_takes_over_a_job_whose_lease_ran_out(make_store: MakeStore) -> None:
    a = await make_store("daemon-a")
    b = await make_store("daemon-b")
    job = await running(a)
    # b cannot finish a's job, and does not take it while a's lease holds.
    with pytest.raises(LeaseLost):
        await b.finish(job.id, Status.SUCCEEDED, now=T0 + 2)
    with pytest.raises(LeaseLost):
        await b.requeue(job.id, now=T0 + 2, not_before=T0 + 2)
    assert await b.recover(now=T0 + a.lease_s, max_attempts=3) == 0
    assert await b.claim(now=T0 + a.lease_s) is None
    # a dies; its lease runs out; b recovers the job (the attempt counted) and claims it.
    late = T0 + 2 + a.lease_s
    assert await b.recover(now=late, max_attempts=3) == 1
    taken = await b.claim(now=late + 1)
    assert taken is not None
    assert taken.id == job.id
    assert taken.owner == "daemon-b"
    assert taken.attempts == 2
    # a comes back from a network partition: its outcome is refused, b's stands.
    with pytest.raises(LeaseLost):
        await a.finish(job.id, Status.SUCCEEDED, now=late + 2, result={"from": "a"})
    assert (await a.renew([job.id], now=late + 2)).lost == {job.id}
    await b.finish(job.id, Status.SUCCEEDED, now=late + 3, result={"from": "b"})
    done = await a.get(job.id)
    assert done is not None
    assert done.result == {"from": "b"}
    assert [s for s, _ in done.history].count(Status.SUCCEEDED) == 1


async def test_recover_any_owner_takes_unexpired_jobs_of_other_owners(
    make_store: MakeStore,
) -> None:
    old = await make_store("old-daemon")
    job = await running(old)
    new = await make_store("new-daemon")
    mine = await running(new, URL + "/new")
    assert await new.recover(now=T0 + 2, max_attempts=3) == 0
    assert await new.recover(now=T0 + 2, max_attempts=3, any_owner=True) == 1
    back = await new.get(job.id)
    assert back is not None
    assert back.status == Status.QUEUED
    assert back.attempts == 1
    still = await new.get(mine.id)
    assert still is not None
    assert still.status == Status.RUNNING


async def test_dedup_and_claims_across_daemons(make_store: MakeStore) -> None:
    daemons = [await make_store(f"daemon-{i}") for i in range(3)]
    results: list[tuple[Job, bool]] = []

    async def submit(s: JobStore) -> None:
        results.append(await s.submit(URL, "main", now=T0))

    async with anyio.create_task_group() as tg:
        for s in daemons * 3:
            tg.start_soon(submit, s)
    assert sum(created for _, created in results) == 1
    assert len({job.id for job, _ in results}) == 1
    for i in range(6):
        await daemons[0].submit(f"{URL}/{i}", None, now=T0 + i)
    claimed: list[Job] = []

    async def claim(s: JobStore) -> None:
        while (job := await s.claim(now=T0 + 10)) is not None:
            claimed.append(job)

    async with anyio.create_task_group() as tg:
        for s in daemons:
            tg.start_soon(claim, s)
    assert len(claimed) == 7
    assert len({j.id for j in claimed}) == 7


# -- SQLite only -----------------------------------------------------------------------------


async def test_sqlite_schema_and_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "diskaudit.db"
    store = await SQLiteJobStore.open(str(path))
    try:
        pragmas = await store._call(
            lambda c: [
                c.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            ]
        )
        assert pragmas == ["wal", 2, 5000, 1]  # synchronous 2 = FULL
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        insert = "INSERT INTO jobs (id, url, ref, status, created_at) VALUES (?, 'u', NULL, ?, 0)"
        conn.execute(insert, ("a", "queued"))
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            conn.execute(insert, ("b", "running"))
        conn.execute(insert, ("c", "failed"))  # final jobs do not count
        plan = " ".join(
            str(row[-1])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE status = 'queued'"
                " AND not_before <= 5 ORDER BY created_at, id LIMIT 1"
            )
        )
        assert "jobs_claim" in plan
        conn.rollback()
        conn.execute("PRAGMA user_version = 99")
    finally:
        conn.close()
    with pytest.raises(StoreError, match="schema version 99"):
        await SQLiteJobStore.open(str(path))


async def test_sqlite_data_survives_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "diskaudit.db")
    store = await SQLiteJobStore.open(path)
    job = await running(store)
    await store.finish(job.id, Status.SUCCEEDED, now=T0 + 2, result={"a": [1, {"b": None}]})
    queued, _ = await store.submit(URL + "/2", "main", now=T0 + 3)
    before = await store.list()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.get(job.id)

    store = await SQLiteJobStore.open(path)
    try:
        assert await store.list() == before
        again, created = await store.submit(URL + "/2", "main", now=T0 + 4)
        assert not created
        assert again == queued
    finally:
        await store.close()


KILL_SCRIPT = """
import os, signal, sys
import anyio
from diskaudit.adapters.sqlite_store import SQLiteJobStore

async def main() -> None:
    store = await SQLiteJobStore.open(sys.argv[1])
    for i in range(20):
        await store.submit(f"https://example.com/{i}.git", None, now=1000.0 + i)
    print("done", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

anyio.run(main)
"""


async def test_sqlite_jobs_survive_kill_9(tmp_path: Path) -> None:
    path = str(tmp_path / "diskaudit.db")
    proc = await anyio.run_process([sys.executable, "-c", KILL_SCRIPT, path], check=False)
    assert proc.stdout.decode().strip() == "done", proc.stderr.decode()
    assert proc.returncode == -signal.SIGKILL
    store = await SQLiteJobStore.open(path)
    try:
        jobs = await store.list()
        assert sorted(j.url for j in jobs) == sorted(
            f"https://example.com/{i}.git" for i in range(20)
        )
        assert all(j.history == ((Status.QUEUED, j.created_at),) for j in jobs)
    finally:
        await store.close()


async def test_sqlite_two_connections_dedup_and_claim(tmp_path: Path) -> None:
    """Two stores on one file (as two daemons would be): each has its own connection and
    thread, so only SQLite's locking keeps submit and claim atomic."""
    path = str(tmp_path / "diskaudit.db")
    a = await SQLiteJobStore.open(path)
    b = await SQLiteJobStore.open(path)
    try:
        submitted: list[tuple[Job, bool]] = []

        async def submit(s: JobStore) -> None:
            submitted.append(await s.submit(URL, None, now=T0))

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(submit, (a, b)[i % 2])
        assert sum(created for _, created in submitted) == 1
        assert len({job.id for job, _ in submitted}) == 1

        for i in range(30):
            await (a, b)[i % 2].submit(f"{URL}/{i}", None, now=T0 + i)
        claimed: list[str] = []

        async def claimer(s: JobStore) -> None:
            while (job := await s.claim(now=T0 + 100)) is not None:
                claimed.append(job.id)

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(claimer, (a, b)[i % 2])
        assert len(claimed) == 31
        assert len(set(claimed)) == 31
    finally:
        await a.close()
        await b.close()


async def count_rows(store: SQLiteJobStore) -> tuple[int, int, int]:
    def run(c: sqlite3.Connection) -> tuple[int, int, int]:
        jobs = c.execute("SELECT count(*) FROM jobs").fetchone()[0]
        events = c.execute("SELECT count(*) FROM job_events").fetchone()[0]
        bare = c.execute(
            "SELECT count(*) FROM jobs WHERE id NOT IN (SELECT job_id FROM job_events)"
        ).fetchone()[0]
        return int(jobs), int(events), int(bare)

    return await store._call(run)


async def submit_until_error(store: JobStore, start: int) -> StoreError:
    """Submit new jobs until one needs a page (or a disk block) that is not there."""
    for i in range(start, start + 500):
        try:
            await store.submit(f"{URL}/{i}", None, now=T0 + i)
        except StoreError as e:
            return e
    raise AssertionError("the store never ran out of space")


async def test_sqlite_full_database_fails_cleanly(tmp_path: Path) -> None:
    """SQLITE_FULL without a full disk: ``max_page_count`` caps the file at its current size."""
    path = str(tmp_path / "diskaudit.db")
    store = await SQLiteJobStore.open(path)
    try:
        kept = [(await store.submit(f"{URL}/{i}", None, now=T0 + i))[0] for i in range(5)]
        await store._call(lambda c: c.execute("PRAGMA max_page_count = 1"))  # = current size
        error = await submit_until_error(store, 5)
        assert str(error) == "the job store cannot write: database or disk is full"
        jobs, events, bare = await count_rows(store)
        assert bare == 0  # no half-written job
        assert events == jobs
        await store._call(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))
        job, created = await store.submit(URL + "/after", None, now=T0 + 1000)
        assert created
        await store.close()

        store = await SQLiteJobStore.open(path)
        listed = {j.id: j for j in await store.list(limit=1000)}
        assert len(listed) == jobs + 1
        assert all(listed[k.id] == k for k in kept)
        assert listed[job.id] == job
    finally:
        await store.close()


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real full disk needs root to mount a tmpfs (max_page_count test covers)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            "cannot mount a tmpfs here (max_page_count test covers): "
            + mounted.stderr.decode(errors="replace").strip()
        )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = 64 * 1024
        while chunk:
            try:
                os.write(fd, b"\0" * chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                chunk //= 2
    finally:
        os.close(fd)


async def test_sqlite_on_a_full_disk(tiny_tmpfs: Path) -> None:
    path = str(tiny_tmpfs / "diskaudit.db")
    filler = tiny_tmpfs / "filler"
    store = await SQLiteJobStore.open(path)
    try:
        kept = [(await store.submit(f"{URL}/{i}", None, now=T0 + i))[0] for i in range(3)]
        running_job = await store.claim(now=T0 + 10)
        assert running_job is not None
        await anyio.to_thread.run_sync(fill, filler)
        assert "full" in str(await submit_until_error(store, 3))
        with pytest.raises(StoreError, match="full"):
            await store.finish(running_job.id, Status.SUCCEEDED, now=T0 + 11, result={"x": 1})
        jobs, _, bare = await count_rows(store)
        assert bare == 0
        await anyio.Path(filler).unlink()

        still = await store.get(running_job.id)
        assert still == running_job
        done = await store.finish(running_job.id, Status.SUCCEEDED, now=T0 + 12, result={"x": 1})
        await store.close()
        store = await SQLiteJobStore.open(path)
        listed = {j.id: j for j in await store.list(limit=1000)}
        assert len(listed) == jobs
        assert all(listed[k.id] == k for k in kept if k.id != done.id)
        assert listed[done.id] == done
    finally:
        await store.close()


async def test_sqlite_version_1_database_is_migrated_in_place(tmp_path: Path) -> None:
    from diskaudit.adapters.sqlite_store import MIGRATIONS

    path = tmp_path / "diskaudit.db"
    conn = sqlite3.connect(path)
    try:
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO jobs (id, url, ref, status, attempts, created_at, started_at)"
            " VALUES ('a' , ?, NULL, 'running', 1, ?, ?)",
            (URL, T0, T0 + 1),
        )
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
    finally:
        conn.close()
    store = await SQLiteJobStore.open(str(path))
    try:
        job = await store.get("a")
        assert job is not None
        assert (job.status, job.owner, job.lease_until) == (Status.RUNNING, None, None)
        # Left running by a daemon of the old version: taken back at the next start.
        assert await store.recover(now=T0 + 2, max_attempts=3) == 0
        assert await store.recover(now=T0 + 2, max_attempts=3, any_owner=True) == 1
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    finally:
        conn.close()
