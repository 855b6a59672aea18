"""What only the PostgreSQL adapter promises (the port's contract is in test_job_store.py):
schema migration by several daemons at once, a refused newer schema, errors as ``StoreError``
while the server is down and recovery after its restart, and the cluster-wide clone slots.

A real PostgreSQL (tests/pgserver.py); skipped where it is not installed, failed under CI.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import anyio.lowlevel
import pytest

from diskaudit.adapters.postgres_slots import PostgresCloneSlots
from diskaudit.adapters.postgres_store import SCHEMA_VERSION, PostgresJobStore
from diskaudit.audit.errors import CloneSlotLost
from diskaudit.jobs.model import Status
from diskaudit.jobs.store import StoreError
from tests.daemon import free_port
from tests.pgserver import PgServer

pytestmark = pytest.mark.anyio

URL = "https://example.com/repo.git"
_databases = itertools.count()

Open = Callable[..., Awaitable[PostgresJobStore]]


@pytest.fixture
def dsn(pg: PgServer) -> str:
    return pg.create_database(f"pgstore_{os.getpid()}_{next(_databases)}")


@pytest.fixture
async def open_store(dsn: str) -> AsyncIterator[Open]:
    opened: list[PostgresJobStore] = []

    async def make(
        owner: str | None = None, lease_s: float = 60.0, connect_timeout_s: float = 10.0
    ) -> PostgresJobStore:
        store = await PostgresJobStore.open(
            dsn, owner=owner, lease_s=lease_s, connect_timeout_s=connect_timeout_s
        )
        opened.append(store)
        return store

    try:
        yield make
    finally:
        for store in opened:
            await store.close()


async def test_daemons_starting_together_migrate_once(dsn: str, pg: PgServer) -> None:
    stores: list[PostgresJobStore] = []

    async def start(i: int) -> None:
        stores.append(await PostgresJobStore.open(dsn, owner=f"d{i}"))

    try:
        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(start, i)
        assert len(stores) == 4
    finally:
        for s in stores:
            await s.close()
    dbname = dsn.rsplit("/", 1)[1].split("?")[0]
    assert pg.psql("SELECT version FROM diskaudit_schema", dbname) == str(SCHEMA_VERSION)
    assert pg.psql("SELECT count(*) FROM diskaudit_schema", dbname) == "1"


async def test_a_newer_schema_is_refused(dsn: str, pg: PgServer, open_store: Open) -> None:
    await open_store()
    dbname = dsn.rsplit("/", 1)[1].split("?")[0]
    pg.psql("UPDATE diskaudit_schema SET version = 99", dbname)
    with pytest.raises(StoreError, match="schema version 99"):
        await PostgresJobStore.open(dsn)


async def test_an_unreachable_server_is_a_store_error_without_the_password() -> None:
    dsn = f"postgresql://diskaudit:hunter2@127.0.0.1:{free_port()}/x?connect_timeout=2"
    with anyio.fail_after(30), pytest.raises(StoreError) as caught:
        await PostgresJobStore.open(dsn, connect_timeout_s=2)
    assert "hunter2" not in str(caught.value)
    assert "diskaudit:***@127.0.0.1" in str(caught.value)


async def test_calls_fail_cleanly_while_the_server_is_down_and_work_after(
    pg: PgServer, open_store: Open
) -> None:
    store = await open_store(connect_timeout_s=1.5)  # each failing call waits this long
    job, _ = await store.submit(URL, None, now=1.0)
    pg.stop()
    try:
        with anyio.fail_after(30):
            for call in (
                store.get(job.id),
                store.submit(URL + "/2", None, now=2.0),
                store.claim(now=3.0),
                store.counts(),
            ):
                with pytest.raises(StoreError, match="the job store cannot"):
                    await call
    finally:
        pg.start()
    # The same store object, new connections (the pool reconnects within seconds): nothing was
    # lost, nothing half-written.
    with anyio.fail_after(40):
        while True:
            try:
                claimed = await store.claim(now=4.0)
                break
            except StoreError:
                await anyio.sleep(0.5)
    assert claimed is not None
    assert claimed.id == job.id
    counts = await store.counts()
    assert counts[Status.RUNNING] == 1
    assert sum(counts.values()) == 1


# -- the cluster-wide clone slots ------------------------------------------------------------


async def test_slots_hold_the_cluster_limit_across_daemons(open_store: Open) -> None:
    gates = []
    for i in range(3):
        gate = PostgresCloneSlots(await open_store(f"d{i}"), 2, poll_s=0.02)
        await gate.prepare()
        gates.append(gate)
    inside = 0
    most = 0
    done = 0

    async def clone(gate: PostgresCloneSlots) -> None:
        nonlocal inside, most, done
        async with gate.slot():
            inside += 1
            most = max(most, inside)
            await anyio.sleep(0.05)
            inside -= 1
        done += 1

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(clone, gates[i % 3])
    assert done == 12
    assert most == 2
    await gates[0].renew_once()
    assert gates[0].state().in_use == 0


async def test_a_dead_daemons_slot_frees_itself_after_its_lease(open_store: Open) -> None:
    dead = PostgresCloneSlots(await open_store("dead", lease_s=1.0), 1)
    await dead.prepare()
    # The dead daemon took the only slot and never gave it back or renewed it.
    taken = await dead._try_take("its-holder")
    assert taken is not None
    assert taken[0] == 0
    alive = PostgresCloneSlots(await open_store("alive", lease_s=1.0), 1, poll_s=0.05)
    started = anyio.current_time()
    with anyio.fail_after(10):
        async with alive.slot():
            waited = anyio.current_time() - started
    assert waited >= 0.5  # it waited for the lease, not merely for a poll


async def test_a_slot_that_cannot_be_kept_stops_its_clone(dsn: str, pg: PgServer) -> None:
    store = await PostgresJobStore.open(dsn, owner="here", lease_s=3.0)
    try:
        gate = PostgresCloneSlots(store, 1)
        await gate.prepare()
        stopped = False

        async def clone() -> None:
            nonlocal stopped
            async with gate.slot():
                dbname = dsn.rsplit("/", 1)[1].split("?")[0]
                # Another daemon took it after an (assumed) lease expiry.
                pg.psql("UPDATE diskaudit_clone_slots SET holder = 'thief'", dbname)
                await gate.renew_once()
                try:
                    await anyio.sleep(5)
                finally:
                    stopped = True

        with anyio.fail_after(10), pytest.raises(CloneSlotLost, match="taken over"):
            await clone()
        assert stopped
    finally:
        await store.close()


async def test_a_slot_not_renewed_in_time_stops_its_clone_before_the_lease_ends(
    open_store: Open,
) -> None:
    now = [time.time()]
    gate = PostgresCloneSlots(await open_store("here", lease_s=10.0), 1, clock=lambda: now[0])
    await gate.prepare()

    async def clone() -> None:
        async with gate.slot():
            now[0] += 5.0  # renewals failed for half the lease: not yet
            gate.check_expiring()
            await anyio.lowlevel.checkpoint()
            now[0] += 1.5  # 65 % of the lease: stop now, before another daemon may take it
            gate.check_expiring()
            await anyio.sleep(5)

    with anyio.fail_after(10), pytest.raises(CloneSlotLost, match="could not be renewed for 6s"):
        await clone()
