"""The shared job store: PostgreSQL, one queue for many daemons (docs/adr/0014).

psycopg 3 with its async connection pool, on the event loop (anyio's asyncio backend). Every
method is one transaction on a pooled connection; any database or pool error rolls it back and
becomes a ``StoreError``, so a restarting server looks to callers like a full disk does: the
call failed, nothing changed, try again later. The pool checks a connection before lending it,
so after a server restart the first calls get fresh connections.

Claims use ``SELECT ... FOR UPDATE SKIP LOCKED``: daemons claiming at the same time skip each
other's rows instead of queueing behind them. A claim carries a lease (``owner``,
``lease_until``) that the running daemon renews; ``recover`` takes back jobs whose lease ran out.

The schema is versioned in ``diskaudit_schema`` and migrated at start-up under a transaction-level
advisory lock, so daemons starting together migrate once. A database newer than this code is
refused. Table names are prefixed ``diskaudit_``: the database may be shared with other uses.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar

from diskaudit.jobs.model import FINAL, Job, Status, job_from_row
from diskaudit.jobs.store import (
    DEFAULT_LEASE_S,
    RECOVER_ERROR,
    JobStore,
    LeaseLost,
    Renewal,
    StoreError,
)
from diskaudit.settings import redact_url

try:
    import psycopg
    from psycopg.rows import dict_row
    from psycopg.types.json import Jsonb
    from psycopg_pool import AsyncConnectionPool
except ImportError:  # pragma: no cover - depends on the installation
    psycopg = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

T = TypeVar("T")
Conn = Any  # psycopg.AsyncConnection[dict[str, Any]]; Any keeps the optional import optional

SCHEMA_VERSION: Final = 1
#: Key of the advisory lock held while migrating (any constant unlikely to clash).
MIGRATION_LOCK: Final = 0x6469736B  # "disk"

_STATUSES = ",".join(f"'{s.value}'" for s in Status)
_ACTIVE = "('queued','running')"

#: ``MIGRATIONS[n]`` takes the schema from version n to n + 1, in one transaction.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        f"""
        CREATE TABLE diskaudit_jobs (
            id text PRIMARY KEY,
            url text NOT NULL,
            ref text,
            status text NOT NULL CHECK (status IN ({_STATUSES})),
            attempts integer NOT NULL DEFAULT 0,
            created_at double precision NOT NULL,
            started_at double precision,
            finished_at double precision,
            not_before double precision NOT NULL DEFAULT 0,
            error text,
            result jsonb,
            cancel_requested boolean NOT NULL DEFAULT false,
            owner text,
            lease_until double precision
        )
        """,
        """
        CREATE TABLE diskaudit_job_events (
            seq bigserial PRIMARY KEY,
            job_id text NOT NULL REFERENCES diskaudit_jobs(id) ON DELETE CASCADE,
            status text NOT NULL,
            at double precision NOT NULL
        )
        """,
        "CREATE INDEX diskaudit_job_events_job ON diskaudit_job_events(job_id, seq)",
        "CREATE INDEX diskaudit_jobs_claim ON diskaudit_jobs(not_before, created_at, id)"
        " WHERE status = 'queued'",
        "CREATE INDEX diskaudit_jobs_lease ON diskaudit_jobs(lease_until) WHERE status = 'running'",
        "CREATE INDEX diskaudit_jobs_created ON diskaudit_jobs(created_at)",
        "CREATE INDEX diskaudit_jobs_finished ON diskaudit_jobs(finished_at)"
        " WHERE finished_at IS NOT NULL",
        # Deduplication across every daemon: one queued or running job per (url, ref).
        "CREATE UNIQUE INDEX diskaudit_jobs_active_key ON diskaudit_jobs(url, coalesce(ref, ''))"
        f" WHERE status IN {_ACTIVE}",
        # The cluster-wide clone limit (adapters/postgres_slots.py): one row per slot.
        """
        CREATE TABLE diskaudit_clone_slots (
            slot integer PRIMARY KEY,
            owner text,
            holder text,
            lease_until double precision
        )
        """,
    ),
)


def _need_driver() -> None:
    if psycopg is None:
        raise StoreError(
            "job-store is a PostgreSQL URL but psycopg is not installed: "
            "pip install 'diskaudit[postgresql]'"
        )


def _job(row: dict[str, Any], history: list[tuple[Status, float]]) -> Job:
    return job_from_row(row, history, result=row["result"])  # jsonb: decoded by psycopg


async def _events(conn: Conn, ids: list[str]) -> dict[str, list[tuple[Status, float]]]:
    out: dict[str, list[tuple[Status, float]]] = {}
    if not ids:
        return out
    cur = await conn.execute(
        "SELECT job_id, status, at FROM diskaudit_job_events WHERE job_id = ANY(%s) ORDER BY seq",
        (ids,),
    )
    for row in await cur.fetchall():
        out.setdefault(row["job_id"], []).append((Status(row["status"]), row["at"]))
    return out


async def _load(conn: Conn, job_id: str) -> Job | None:
    cur = await conn.execute("SELECT * FROM diskaudit_jobs WHERE id = %s", (job_id,))
    row = await cur.fetchone()
    if row is None:
        return None
    return _job(row, (await _events(conn, [job_id])).get(job_id, []))


async def _must_load(conn: Conn, job_id: str) -> Job:
    job = await _load(conn, job_id)
    if job is None:  # pragma: no cover - we are inside the transaction that wrote it
        raise StoreError(f"job {job_id} vanished inside its own transaction")
    return job


async def _transition(
    conn: Conn, job_id: str, status: Status, now: float, **changes: object
) -> None:
    sets = ", ".join(["status = %s", *(f"{column} = %s" for column in changes)])
    await conn.execute(
        f"UPDATE diskaudit_jobs SET {sets} WHERE id = %s",
        (status.value, *changes.values(), job_id),
    )
    await conn.execute(
        "INSERT INTO diskaudit_job_events (job_id, status, at) VALUES (%s, %s, %s)",
        (job_id, status.value, now),
    )


async def _migrate(conn: Conn) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute("CREATE TABLE IF NOT EXISTS diskaudit_schema (version integer NOT NULL)")
        cur = await conn.execute("SELECT version FROM diskaudit_schema")
        row = await cur.fetchone()
        version = 0 if row is None else int(row["version"])
        if row is None:
            await conn.execute("INSERT INTO diskaudit_schema (version) VALUES (0)")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the job store has schema version {version}; this diskaudit knows {SCHEMA_VERSION}"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target - 1]:
                await conn.execute(statement)
            await conn.execute("UPDATE diskaudit_schema SET version = %s", (target,))
            log.info("job store schema migrated to version %d", target)


class PostgresJobStore(JobStore):
    """Use ``await PostgresJobStore.open(dsn, owner=...)``; ``await store.close()`` at the end."""

    shared = True

    def __init__(
        self,
        dsn: str,
        *,
        owner: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        pool_size: int = 4,
        connect_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(owner=owner, lease_s=lease_s)
        _need_driver()
        self.dsn = dsn
        self._connect_timeout_s = connect_timeout_s
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=max(pool_size, 2),
            open=False,
            kwargs={"row_factory": dict_row},
            # A connection cut by a server restart is found out before it is lent.
            check=AsyncConnectionPool.check_connection,
            # How long a call waits for a connection: an API request answers 503 after this
            # while the database is unreachable.
            timeout=min(connect_timeout_s, 5.0),
            # The pool retries a lost connection with a doubling delay; giving up after 10 s and
            # starting again on the next request keeps the wait after a long outage short.
            reconnect_timeout=10.0,
            name="diskaudit-jobs",
        )

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        owner: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        pool_size: int = 4,
        connect_timeout_s: float = 10.0,
    ) -> PostgresJobStore:
        store = cls(
            dsn,
            owner=owner,
            lease_s=lease_s,
            pool_size=pool_size,
            connect_timeout_s=connect_timeout_s,
        )
        try:
            await store.pool.open(wait=True, timeout=connect_timeout_s)
            async with store.pool.connection() as conn:
                await _migrate(conn)
        except psycopg.Error as e:
            await store.pool.close()
            raise StoreError(f"the job store at {redact_url(dsn)} cannot be used: {e}") from e
        except BaseException:
            await store.pool.close()
            raise
        return store

    async def close(self) -> None:
        await self.pool.close()

    # -- plumbing ------------------------------------------------------------------------

    @asynccontextmanager
    async def connection(self, what: str) -> AsyncIterator[Conn]:
        """A pooled connection in one transaction (committed at the end, rolled back on an
        error); database and pool errors become ``StoreError`` naming ``what`` failed."""
        try:
            async with self.pool.connection() as conn, conn.transaction():
                yield conn
        except psycopg.Error as e:
            raise StoreError(f"the job store cannot {what}: {_short(e)}") from e

    async def _tx(self, what: str, fn: Callable[[Conn], Awaitable[T]]) -> T:
        async with self.connection(what) as conn:
            return await fn(conn)

    # -- the port ------------------------------------------------------------------------

    async def submit(self, url: str, ref: str | None, *, now: float) -> tuple[Job, bool]:
        async def existing(conn: Conn) -> Job | None:
            cur = await conn.execute(
                "SELECT id FROM diskaudit_jobs WHERE url = %s"
                " AND coalesce(ref, '') = coalesce(%s, '')"
                f" AND status IN {_ACTIVE}",
                (url, ref),
            )
            row = await cur.fetchone()
            return None if row is None else await _load(conn, row["id"])

        async def run(conn: Conn) -> tuple[Job, bool]:
            # Read committed: each statement sees what others committed before it. Another
            # daemon inserting the same key at the same moment makes our INSERT wait on the
            # unique index and then do nothing; the next SELECT sees its job.
            for _ in range(3):
                job = await existing(conn)
                if job is not None:
                    return job, False
                job_id = uuid.uuid4().hex
                cur = await conn.execute(
                    "INSERT INTO diskaudit_jobs (id, url, ref, status, attempts, created_at)"
                    " VALUES (%s, %s, %s, 'queued', 0, %s) ON CONFLICT DO NOTHING",
                    (job_id, url, ref, now),
                )
                if cur.rowcount:
                    await conn.execute(
                        "INSERT INTO diskaudit_job_events (job_id, status, at)"
                        " VALUES (%s, 'queued', %s)",
                        (job_id, now),
                    )
                    return await _must_load(conn, job_id), True
            raise StoreError(f"the job store could not queue {url}: it kept changing, try again")

        return await self._tx("write", run)

    async def get(self, job_id: str) -> Job | None:
        return await self._tx("read", lambda conn: _load(conn, job_id))

    async def list(self, *, status: Status | None = None, limit: int = 100) -> list[Job]:
        async def run(conn: Conn) -> list[Job]:
            where, args = ("", ()) if status is None else ("WHERE status = %s", (status.value,))
            cur = await conn.execute(
                f"SELECT * FROM diskaudit_jobs {where} ORDER BY created_at DESC, id DESC LIMIT %s",
                (*args, max(limit, 0)),
            )
            rows = await cur.fetchall()
            events = await _events(conn, [row["id"] for row in rows])
            return [_job(row, events.get(row["id"], [])) for row in rows]

        return await self._tx("read", run)

    async def claim(self, *, now: float) -> Job | None:
        asked = time.monotonic()

        async def run(conn: Conn) -> Job | None:
            start = _lease_start(now, asked)
            cur = await conn.execute(
                "SELECT id, attempts FROM diskaudit_jobs WHERE status = 'queued'"
                " AND not_before <= %s ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
                (now,),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            await _transition(
                conn,
                row["id"],
                Status.RUNNING,
                now,
                attempts=row["attempts"] + 1,
                started_at=now,
                error=None,
                cancel_requested=False,
                owner=self.owner,
                lease_until=start + self.lease_s,
            )
            return await _must_load(conn, row["id"])

        return await self._tx("write", run)

    async def renew(self, job_ids: Iterable[str], *, now: float) -> Renewal:
        ids = list(job_ids)
        if not ids:
            return Renewal(frozenset(), frozenset())

        asked = time.monotonic()

        async def run(conn: Conn) -> Renewal:
            cur = await conn.execute(
                "UPDATE diskaudit_jobs SET lease_until = %s WHERE id = ANY(%s)"
                " AND status = 'running' AND owner = %s RETURNING id, cancel_requested",
                (_lease_start(now, asked) + self.lease_s, ids, self.owner),
            )
            rows = await cur.fetchall()
            kept = {row["id"] for row in rows}
            return Renewal(
                frozenset(set(ids) - kept),
                frozenset(row["id"] for row in rows if row["cancel_requested"]),
            )

        return await self._tx("write", run)

    async def _mine(self, conn: Conn, job_id: str) -> dict[str, Any]:
        cur = await conn.execute(
            "SELECT status, owner, attempts FROM diskaudit_jobs WHERE id = %s FOR UPDATE",
            (job_id,),
        )
        row: dict[str, Any] | None = await cur.fetchone()
        if row is None:
            raise KeyError(job_id)
        if row["status"] != Status.RUNNING:
            raise LeaseLost(f"job {job_id} is {row['status']}, not running")
        if row["owner"] != self.owner:
            raise LeaseLost(f"job {job_id} runs under another daemon's lease now")
        return row

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

        async def run(conn: Conn) -> Job:
            await self._mine(conn, job_id)
            await _transition(
                conn,
                job_id,
                status,
                now,
                finished_at=now,
                error=error,
                result=None if result is None else Jsonb(result),
                lease_until=None,
            )
            return await _must_load(conn, job_id)

        return await self._tx("write", run)

    async def requeue(
        self,
        job_id: str,
        *,
        now: float,
        not_before: float,
        error: str | None = None,
        refund_attempt: bool = False,
    ) -> Job:
        async def run(conn: Conn) -> Job:
            row = await self._mine(conn, job_id)
            attempts = row["attempts"] - 1 if refund_attempt else row["attempts"]
            await _transition(
                conn,
                job_id,
                Status.QUEUED,
                now,
                attempts=attempts,
                not_before=not_before,
                error=error,
                lease_until=None,
            )
            return await _must_load(conn, job_id)

        return await self._tx("write", run)

    async def cancel(self, job_id: str, *, now: float) -> Job | None:
        async def run(conn: Conn) -> Job | None:
            cur = await conn.execute(
                "SELECT status FROM diskaudit_jobs WHERE id = %s FOR UPDATE", (job_id,)
            )
            row = await cur.fetchone()
            if row is None:
                return None
            status = Status(row["status"])
            if status == Status.QUEUED:
                await _transition(conn, job_id, Status.CANCELLED, now, finished_at=now)
            elif status == Status.RUNNING:
                # The owning daemon sees it at its next lease renewal and stops the job.
                await conn.execute(
                    "UPDATE diskaudit_jobs SET cancel_requested = true WHERE id = %s", (job_id,)
                )
            return await _must_load(conn, job_id)

        return await self._tx("write", run)

    async def recover(self, *, now: float, max_attempts: int, any_owner: bool = False) -> int:
        async def run(conn: Conn) -> int:
            # SKIP LOCKED: a job being renewed or finished right now is not expired for long.
            cur = await conn.execute(
                "SELECT id, attempts FROM diskaudit_jobs WHERE status = 'running'"
                " AND (lease_until < %s OR (%s AND coalesce(owner, '') <> %s))"
                " ORDER BY created_at, id FOR UPDATE SKIP LOCKED",
                (now, any_owner, self.owner),
            )
            rows = await cur.fetchall()
            for row in rows:
                if row["attempts"] >= max_attempts:
                    await _transition(
                        conn,
                        row["id"],
                        Status.FAILED,
                        now,
                        finished_at=now,
                        error=RECOVER_ERROR,
                        lease_until=None,
                    )
                else:
                    await _transition(
                        conn, row["id"], Status.QUEUED, now, not_before=now, lease_until=None
                    )
            return len(rows)

        return await self._tx("write", run)

    async def prune(self, *, finished_before: float) -> int:
        final = ",".join(f"'{s.value}'" for s in sorted(FINAL))

        async def run(conn: Conn) -> int:
            cur = await conn.execute(
                f"DELETE FROM diskaudit_jobs WHERE status IN ({final}) AND finished_at < %s",
                (finished_before,),
            )
            return int(cur.rowcount)

        return await self._tx("write", run)

    async def counts(self) -> dict[Status, int]:
        async def run(conn: Conn) -> dict[Status, int]:
            out = dict.fromkeys(Status, 0)
            cur = await conn.execute(
                "SELECT status, count(*) AS n FROM diskaudit_jobs GROUP BY status"
            )
            for row in await cur.fetchall():
                out[Status(row["status"])] = int(row["n"])
            return out

        return await self._tx("read", run)


def _lease_start(now: float, asked: float) -> float:
    """When a lease granted now starts: ``now`` as the caller gave it, unless getting a
    connection took long (the database was unreachable for a while): then a lease counted from
    ``now`` would be short, or over already, when it is written."""
    waited = time.monotonic() - asked
    return now + waited if waited > 1.0 else now


def _short(e: Exception) -> str:
    """The first line of a driver error (the rest repeats the query)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
