"""The cluster-wide clone gate: a port the audit passes through after the daemon's own clone
limiter, held from before the clone until its directory is deleted.

One daemon needs no gate (``NoGate``). Several daemons sharing a PostgreSQL job store pass
through ``adapters/postgres_slots.py``, which keeps ``cluster-max-concurrent-clones`` slots in the
database. A gate that cannot keep a slot stops the body with ``CloneSlotLost``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class GateState:
    """For metrics: the cluster's slots and how many are taken (by any daemon), and how many
    audits of this daemon hold or wait for one."""

    total: int
    in_use: int
    held_here: int
    waiting_here: int


class CloneGate(Protocol):
    def slot(self) -> AbstractAsyncContextManager[None]:
        """Wait (under the caller's deadline) for a slot; hold it for the body."""
        ...

    def state(self) -> GateState | None:
        """None when there is no cluster limit."""
        ...


class NoGate:
    """No cluster limit: the daemon's own limiter is the only one."""

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        yield

    def state(self) -> GateState | None:
        return None
