"""The embedded job store: SQLite at ``data-dir/diskaudit.db`` (docs/adr/0009).

One connection per store, used by one thread at a time: every call runs in
``anyio.to_thread.run_sync`` under the store's own ``CapacityLimiter(1)``, so calls are
serialized and the event loop never blocks on the disk. Every write is one ``BEGIN IMMEDIATE``
transaction; any SQLite error rolls it back and becomes a ``StoreError``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final, TypeVar

import anyio

from diskaudit.jobs.model import FINAL, Job, Status, job_from_row
from diskaudit.jobs.store import (
    DEFAULT_LEASE_S,
    RECOVER_ERROR,
    JobStore,
    LeaseLost,
    Renewal,
    StoreError,
)

T = TypeVar("T")

SCHEMA_VERSION: Final = 2

_ACTIVE = "('queued','running')"
_STATUSES = ",".join(f"'{s.value}'" for s in Status)

#: ``MIGRATIONS[n]`` takes the schema from version n to n + 1, in one transaction.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        f"""
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            url TEXT NOT NULL,
            ref TEXT,
            status TEXT NOT NULL CHECK (status IN ({_STATUSES})),
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            not_before REAL NOT NULL DEFAULT 0,
            error TEXT,
            result TEXT,
            cancel_requested INTEGER NOT NULL DEFAULT 0
        )
        """,
        """
        CREATE TABLE job_events (
            seq INTEGER PRIMARY KEY,
            job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            status TEXT NOT NULL,
            at REAL NOT NULL
        )
        """,
        "CREATE INDEX job_events_job ON job_events(job_id, seq)",
        "CREATE INDEX jobs_claim ON jobs(status, not_before, created_at)",
        "CREATE INDEX jobs_created ON jobs(created_at)",
        "CREATE INDEX jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL",
        # Deduplication: at most one queued or running job per (url, ref), whoever submits.
        f"CREATE UNIQUE INDEX jobs_active_key ON jobs(url, ifnull(ref, ''))"
        f" WHERE status IN {_ACTIVE}",
    ),
    # 2: claims carry an owner and a lease (docs/adr/0014).
    (
        "ALTER TABLE jobs ADD COLUMN owner TEXT",
        "ALTER TABLE jobs ADD COLUMN lease_until REAL",
    ),
)


def _migrate(conn: sqlite3.Connection) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the job store has schema version {version}; this diskaudit knows {SCHEMA_VERSION}"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[target - 1]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite may already have rolled back by itself (SQLITE_FULL, SQLITE_IOERR).
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _connect(path: str) -> sqlite3.Connection:
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: no implicit transactions; we issue BEGIN/COMMIT ourselves.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 5000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if path != ":memory:" and str(mode).lower() != "wal":
            raise StoreError(f"the job store cannot use WAL mode at {path} (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _events(conn: sqlite3.Connection, ids: Iterable[str]) -> dict[str, list[tuple[Status, float]]]:
    out: dict[str, list[tuple[Status, float]]] = {}
    ids = list(ids)
    if not ids:
        return out
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        f"SELECT job_id, status, at FROM job_events WHERE job_id IN ({marks}) ORDER BY seq", ids
    )
    for row in rows:
        out.setdefault(row["job_id"], []).append((Status(row["status"]), row["at"]))
    return out


def _job(row: sqlite3.Row, history: list[tuple[Status, float]]) -> Job:
    result: dict[str, Any] | None = None if row["result"] is None else json.loads(row["result"])
    return job_from_row(row, history, result=result)


def _load(conn: sqlite3.Connection, job_id: str) -> Job | None:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        return None
    return _job(row, _events(conn, [job_id]).get(job_id, []))


def _must_load(conn: sqlite3.Connection, job_id: str) -> Job:
    job = _load(conn, job_id)
    if job is None:  # pragma: no cover - we are inside the transaction that wrote it
        raise StoreError(f"job {job_id} vanished inside its own transaction")
    return job


def _transition(
    conn: sqlite3.Connection, job_id: str, status: Status, now: float, **changes: object
) -> None:
    sets = ", ".join(["status = ?", *(f"{column} = ?" for column in changes)])
    conn.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (status.value, *changes.values(), job_id))
    conn.execute(
        "INSERT INTO job_events (job_id, status, at) VALUES (?, ?, ?)",
        (job_id, status.value, now),
    )


def _mine(conn: sqlite3.Connection, job_id: str, owner: str) -> sqlite3.Row:
    """The row of a job running under ``owner``'s lease; KeyError or LeaseLost otherwise."""
    row: sqlite3.Row | None = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise KeyError(job_id)
    if row["status"] != Status.RUNNING:
        raise LeaseLost(f"job {job_id} is {row['status']}, not running")
    if row["owner"] != owner:
        raise LeaseLost(f"job {job_id} runs under another daemon's lease now")
    return row


class SQLiteJobStore(JobStore):
    """Use ``await SQLiteJobStore.open(path)``; ``await store.close()`` at the end."""

    def __init__(
        self, path: str, *, owner: str | None = None, lease_s: float = DEFAULT_LEASE_S
    ) -> None:
        super().__init__(owner=owner, lease_s=lease_s)
        self.path = path
        self._conn: sqlite3.Connection | None = None
        #: The one worker slot: all database work for this store runs under it, one at a time.
        self._limiter = anyio.CapacityLimiter(1)

    @classmethod
    async def open(
        cls, path: str, *, owner: str | None = None, lease_s: float = DEFAULT_LEASE_S
    ) -> SQLiteJobStore:
        store = cls(path, owner=owner, lease_s=lease_s)
        await store.connect()
        return store

    async def connect(self) -> None:
        """Create the file and the schema (or migrate it) and set the pragmas."""
        if self._conn is not None:
            return
        try:
            self._conn = await anyio.to_thread.run_sync(_connect, self.path, limiter=self._limiter)
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"the job store cannot open {self.path}: {e}") from e

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    # -- plumbing ------------------------------------------------------------------------

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` in the store's worker slot. Not a transaction by itself."""
        conn = self._conn
        if conn is None:
            raise StoreError("the job store is closed")
        return await anyio.to_thread.run_sync(fn, conn, limiter=self._limiter)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in one read transaction: one consistent snapshot even if others write."""

        def run(conn: sqlite3.Connection) -> T:
            try:
                conn.execute("BEGIN")
                try:
                    return fn(conn)
                finally:
                    _rollback(conn)
            except sqlite3.Error as e:
                raise StoreError(f"the job store cannot read: {e}") from e

        return await self._call(run)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in one write transaction: all of it is committed, or none of it."""

        def run(conn: sqlite3.Connection) -> T:
            try:
                # IMMEDIATE takes the write lock now, so that what fn reads is still true when it
                # writes, also for other processes on the same file.
                conn.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
                return out
            except sqlite3.Error as e:
                raise StoreError(f"the job store cannot write: {e}") from e

        return await self._call(run)

    # -- the port ------------------------------------------------------------------------

    async def submit(self, url: str, ref: str | None, *, now: float) -> tuple[Job, bool]:
        def existing(conn: sqlite3.Connection) -> Job | None:
            row = conn.execute(
                "SELECT id FROM jobs WHERE url = ? AND ifnull(ref, '') = ifnull(?, '')"
                f" AND status IN {_ACTIVE}",
                (url, ref),
            ).fetchone()
            return None if row is None else _load(conn, row["id"])

        def run(conn: sqlite3.Connection) -> tuple[Job, bool]:
            job = existing(conn)
            if job is not None:
                return job, False
            job_id = uuid.uuid4().hex
            inserted = conn.execute(
                "INSERT INTO jobs (id, url, ref, status, attempts, created_at)"
                " VALUES (?, ?, ?, 'queued', 0, ?) ON CONFLICT DO NOTHING",
                (job_id, url, ref, now),
            ).rowcount
            if not inserted:  # pragma: no cover - the write lock makes this unreachable
                job = existing(conn)
                if job is None:
                    raise StoreError(f"the job store refused a job for {url}")
                return job, False
            conn.execute(
                "INSERT INTO job_events (job_id, status, at) VALUES (?, 'queued', ?)",
                (job_id, now),
            )
            return _must_load(conn, job_id), True

        return await self._write(run)

    async def get(self, job_id: str) -> Job | None:
        return await self._read(lambda conn: _load(conn, job_id))

    async def list(self, *, status: Status | None = None, limit: int = 100) -> list[Job]:
        def run(conn: sqlite3.Connection) -> list[Job]:
            where, args = ("", ()) if status is None else ("WHERE status = ?", (status.value,))
            rows = conn.execute(
                f"SELECT * FROM jobs {where} ORDER BY created_at DESC, id DESC LIMIT ?",
                (*args, max(limit, 0)),
            ).fetchall()
            events = _events(conn, (row["id"] for row in rows))
            return [_job(row, events.get(row["id"], [])) for row in rows]

        return await self._read(run)

    async def claim(self, *, now: float) -> Job | None:
        def run(conn: sqlite3.Connection) -> Job | None:
            row = conn.execute(
                "SELECT id, attempts FROM jobs WHERE status = 'queued' AND not_before <= ?"
                " ORDER BY created_at, id LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            job_id: str = row["id"]
            _transition(
                conn,
                job_id,
                Status.RUNNING,
                now,
                attempts=row["attempts"] + 1,
                started_at=now,
                error=None,
                cancel_requested=0,
                owner=self.owner,
                lease_until=now + self.lease_s,
            )
            return _must_load(conn, job_id)

        return await self._write(run)

    async def renew(self, job_ids: Iterable[str], *, now: float) -> Renewal:
        ids = list(job_ids)

        def run(conn: sqlite3.Connection) -> Renewal:
            lost, cancel = set(), set()
            for job_id in ids:
                row = conn.execute(
                    "UPDATE jobs SET lease_until = ? WHERE id = ? AND status = 'running'"
                    " AND owner = ? RETURNING cancel_requested",
                    (now + self.lease_s, job_id, self.owner),
                ).fetchone()
                if row is None:
                    lost.add(job_id)
                elif row["cancel_requested"]:
                    cancel.add(job_id)
            return Renewal(frozenset(lost), frozenset(cancel))

        if not ids:
            return Renewal(frozenset(), frozenset())
        return await self._write(run)

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
        encoded = None if result is None else json.dumps(result)

        def run(conn: sqlite3.Connection) -> Job:
            _mine(conn, job_id, self.owner)
            _transition(
                conn,
                job_id,
                status,
                now,
                finished_at=now,
                error=error,
                result=encoded,
                lease_until=None,
            )
            return _must_load(conn, job_id)

        return await self._write(run)

    async def requeue(
        self,
        job_id: str,
        *,
        now: float,
        not_before: float,
        error: str | None = None,
        refund_attempt: bool = False,
    ) -> Job:
        def run(conn: sqlite3.Connection) -> Job:
            row = _mine(conn, job_id, self.owner)
            attempts = row["attempts"] - 1 if refund_attempt else row["attempts"]
            _transition(
                conn,
                job_id,
                Status.QUEUED,
                now,
                attempts=attempts,
                not_before=not_before,
                error=error,
                lease_until=None,
            )
            return _must_load(conn, job_id)

        return await self._write(run)

    async def cancel(self, job_id: str, *, now: float) -> Job | None:
        def run(conn: sqlite3.Connection) -> Job | None:
            job = _load(conn, job_id)
            if job is None or job.status.final:
                return job
            if job.status == Status.QUEUED:
                _transition(conn, job_id, Status.CANCELLED, now, finished_at=now)
            else:
                conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return _must_load(conn, job_id)

        return await self._write(run)

    async def recover(self, *, now: float, max_attempts: int, any_owner: bool = False) -> int:
        def run(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "SELECT id, attempts FROM jobs WHERE status = 'running'"
                " AND (lease_until < ? OR (? AND ifnull(owner, '') != ?))"
                " ORDER BY created_at, id",
                (now, any_owner, self.owner),
            ).fetchall()
            for row in rows:
                if row["attempts"] >= max_attempts:
                    _transition(
                        conn,
                        row["id"],
                        Status.FAILED,
                        now,
                        finished_at=now,
                        error=RECOVER_ERROR,
                        lease_until=None,
                    )
                else:
                    _transition(
                        conn, row["id"], Status.QUEUED, now, not_before=now, lease_until=None
                    )
            return len(rows)

        return await self._write(run)

    async def prune(self, *, finished_before: float) -> int:
        final = ",".join(f"'{s.value}'" for s in sorted(FINAL))

        def run(conn: sqlite3.Connection) -> int:
            # job_events go with their job (ON DELETE CASCADE).
            return conn.execute(
                f"DELETE FROM jobs WHERE status IN ({final}) AND finished_at < ?",
                (finished_before,),
            ).rowcount

        return await self._write(run)

    async def counts(self) -> dict[Status, int]:
        def run(conn: sqlite3.Connection) -> dict[Status, int]:
            out = dict.fromkeys(Status, 0)
            for row in conn.execute("SELECT status, count(*) AS n FROM jobs GROUP BY status"):
                out[Status(row["status"])] = row["n"]
            return out

        return await self._read(run)
