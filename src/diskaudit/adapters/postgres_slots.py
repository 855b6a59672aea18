"""The cluster-wide clone limit in PostgreSQL (``cluster-max-concurrent-clones``; docs/adr/0014).

A table of N slot rows, ``diskaudit_clone_slots(slot, owner, holder, lease_until)``. An audit
takes a free slot (no holder, or a lease that ran out) with ``UPDATE ... WHERE slot = (SELECT ...
FOR UPDATE SKIP LOCKED)`` — daemons taking slots at once skip each other's rows — after the
daemon's own ``CapacityLimiter`` and holds it until its clone directory is deleted. The daemon
renews the leases of the slots it holds, like the leases of its jobs; a daemon that dies stops
renewing and its slots free themselves when their lease runs out.

Why a table and not session advisory locks: a lock dies with its connection, and so with every
restart of the server, while the clones it guarded go on; after the restart other daemons would
take the "free" locks and the cluster would run more clones than its limit. A slot row survives
the restart with its lease. The price: a dead daemon's slot is free only after ``job-lease``.

A daemon that cannot renew a slot for most of the lease (the database unreachable) stops that
clone itself, before another daemon can take the slot: the body raises ``CloneSlotLost``, a
transient failure that the job queue retries.

Waiting for a slot polls every ``poll_s`` (with jitter), under the audit's deadline. Waiters of
different daemons are not served in order; within a daemon, the ``CapacityLimiter`` in front
keeps them in order.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio

from diskaudit.adapters.postgres_store import Conn, PostgresJobStore
from diskaudit.audit.errors import CloneSlotLost
from diskaudit.audit.gate import GateState
from diskaudit.jobs.store import StoreError

log = logging.getLogger(__name__)

#: A held slot not renewed for this part of the lease is given up (its clone stopped), so that
#: it is stopped before the lease runs out and another daemon may take the slot.
GIVE_UP_AFTER = 0.6


@dataclass
class _Held:
    slot: int
    renewed_at: float
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    reason: str = ""


class PostgresCloneSlots:
    def __init__(
        self,
        store: PostgresJobStore,
        total: int,
        *,
        poll_s: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.total = total
        self.lease_s = store.lease_s
        self.owner = store.owner
        self._poll_s = poll_s
        self._clock = clock
        self._held: dict[str, _Held] = {}
        self._waiting = 0
        #: Slots taken across the cluster at the last refresh (for metrics).
        self._in_use = 0

    async def prepare(self) -> None:
        """Make sure rows 0..total-1 exist (daemons with a larger total add rows; each daemon
        only takes slots below its own total: give every daemon the same value)."""

        async def run(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO diskaudit_clone_slots (slot)"
                " SELECT generate_series(0, %s - 1) ON CONFLICT DO NOTHING",
                (self.total,),
            )

        await self._store._tx("write", run)

    # -- the gate --------------------------------------------------------------------------

    def state(self) -> GateState:
        return GateState(self.total, self._in_use, len(self._held), self._waiting)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        holder = uuid.uuid4().hex
        self._waiting += 1
        try:
            number_and_time = await self._acquire(holder)
        finally:
            self._waiting -= 1
        number, taken_at = number_and_time
        held = _Held(number, renewed_at=taken_at)
        self._held[holder] = held
        try:
            with held.scope:
                yield
            if held.scope.cancelled_caught:
                raise CloneSlotLost(held.reason)
        finally:
            del self._held[holder]
            with anyio.CancelScope(shield=True):
                await self._release(number, holder)

    async def _acquire(self, holder: str) -> tuple[int, float]:
        """Wait for a free slot; under the caller's deadline. A database error is waited out
        like a full cluster (logged), not raised: the deadline decides when to give up."""
        while True:
            try:
                taken = await self._try_take(holder)
            except StoreError as exc:
                log.warning("cannot take a cluster clone slot yet: %s", exc)
                taken = None
            if taken is not None:
                return taken
            await anyio.sleep(self._poll_s * (0.5 + random.random()))

    async def _try_take(self, holder: str) -> tuple[int, float] | None:
        """(slot, time its lease counts from), or None if every slot is taken."""

        async def run(conn: Conn) -> tuple[int, float] | None:
            # The time is read once the connection is ours: waiting for a connection (up to
            # the pool's timeout while the database is unreachable) must not shorten the lease
            # or make a slot look free that is not.
            now = self._clock()
            cur = await conn.execute(
                "UPDATE diskaudit_clone_slots SET owner = %s, holder = %s, lease_until = %s"
                " WHERE slot = (SELECT slot FROM diskaudit_clone_slots WHERE slot < %s"
                " AND (holder IS NULL OR lease_until < %s)"
                " ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING slot",
                (self.owner, holder, now + self.lease_s, self.total, now),
            )
            row = await cur.fetchone()
            return None if row is None else (int(row["slot"]), now)

        return await self._store._tx("write", run)

    async def _release(self, number: int, holder: str) -> None:
        async def run(conn: Conn) -> None:
            await conn.execute(
                "UPDATE diskaudit_clone_slots SET owner = NULL, holder = NULL, lease_until = NULL"
                " WHERE slot = %s AND holder = %s",
                (number, holder),
            )

        for delay in (0.0, 0.5, 2.0):
            await anyio.sleep(delay)
            try:
                await self._store._tx("write", run)
                return
            except StoreError as exc:
                log.warning("cannot give back cluster clone slot %d: %s", number, exc)
        log.warning("cluster clone slot %d frees itself when its lease runs out", number)

    # -- in the background -------------------------------------------------------------------

    async def keep_leases(self) -> None:
        """Renew the slots held here; stop clones whose slot could not be kept; refresh the
        cluster's count for metrics. Runs for the daemon's life.

        The watchdog runs apart from the renewals: a renewal may hang on an unreachable
        database (up to the pool's wait), and the clone must be stopped before its lease runs
        out whatever the renewal is doing."""
        interval = min(self.lease_s / 4, 5.0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watchdog)
            while True:
                await anyio.sleep(interval)
                with anyio.move_on_after(interval):
                    await self.renew_once()

    async def _watchdog(self) -> None:
        while True:
            await anyio.sleep(min(self.lease_s / 20, 0.5))
            self.check_expiring()

    def check_expiring(self) -> None:
        """Stop every clone whose slot was last renewed more than GIVE_UP_AFTER of the lease
        ago: its lease may run out soon, and then another daemon may take the slot."""
        now = self._clock()
        for holder, held in list(self._held.items()):
            if now - held.renewed_at > self.lease_s * GIVE_UP_AFTER:
                self._stop(
                    holder,
                    f"the cluster clone slot could not be renewed for {now - held.renewed_at:.0f}s"
                    " (job store unreachable): stopped to keep the cluster limit",
                )

    async def renew_once(self) -> None:
        holders = list(self._held)
        now = self._clock()

        async def run(conn: Conn) -> tuple[set[str], int]:
            nonlocal now
            now = self._clock()  # once the connection is ours (see _try_take)
            kept: set[str] = set()
            if holders:
                cur = await conn.execute(
                    "UPDATE diskaudit_clone_slots SET lease_until = %s"
                    " WHERE owner = %s AND holder = ANY(%s) RETURNING holder",
                    (now + self.lease_s, self.owner, holders),
                )
                kept = {row["holder"] for row in await cur.fetchall()}
            cur = await conn.execute(
                "SELECT count(*) AS n FROM diskaudit_clone_slots"
                " WHERE holder IS NOT NULL AND lease_until >= %s",
                (now,),
            )
            row = await cur.fetchone()
            return kept, int(row["n"]) if row else 0

        try:
            kept, self._in_use = await self._store._tx("write", run)
        except StoreError as exc:
            log.warning("cannot renew %d cluster clone slots: %s", len(holders), exc)
            return
        for holder in holders:
            held_now = self._held.get(holder)
            if held_now is None:
                continue
            if holder in kept:
                # The new lease counts from when the renewal started, not from its answer.
                held_now.renewed_at = max(held_now.renewed_at, now)
            else:
                self._stop(holder, "the cluster clone slot was taken over (its lease ran out)")

    def _stop(self, holder: str, reason: str) -> None:
        held = self._held.get(holder)
        if held is None or held.scope.cancel_called:
            return
        log.warning("stopping a clone: %s", reason)
        held.reason = reason
        held.scope.cancel()
