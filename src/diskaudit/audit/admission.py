"""Admission of clones by what the machine has: available memory and free disk in data-dir.

Why
    A fixed count of clones is a guess: repositories range from 1 MB to many GB and the daemon
    runs on 512 MB to 2 GB machines. So the clone limiter (an ``anyio.CapacityLimiter``, FIFO) has
    its token total set from a reading of the machine, and a clone starts only while the machine
    keeps its reserves (docs/adr/0013-clone-admission-by-machine-resources.md).

The rule, in one place (``Admission.tokens_for``)
    ``slots = in_use + floor((available - pending - memory_reserve) / memory_estimate)``,
    clamped to ``[1, max_clones]``. ``pending`` is the part of the estimates of admitted clones
    not yet seen in their git processes' RSS: memory they are expected to take but have not
    taken yet, which ``available`` cannot show.

The gate (``Admission.admit``)
    After its slots, a clone waits (polling, under the caller's deadline: a queue, never a
    failure by itself) until ``available - pending(others) >= memory_reserve`` and
    ``disk_free - pending_disk(others) >= disk_reserve + expected size``.

The stop (``Admission.check``)
    While a clone runs, its watcher reports its RSS and size; when available memory or free disk
    falls under half its reserve, the youngest clone still cloning is told to stop.

Reading the machine (``MachineProbe``) is a handful of tiny procfs/cgroupfs reads and one
``statvfs``; it runs in a worker thread (``statvfs`` of a network file system can block), at
most once per ``poll_s / 2`` however many tasks ask.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio

if TYPE_CHECKING:
    from diskaudit.settings import Settings

log = logging.getLogger(__name__)

MIB = 1024 * 1024
#: A cgroup v1 memory limit at or above this means "no limit" (the kernel reports
#: PAGE_COUNTER_MAX pages, about 2**63 bytes).
_V1_UNLIMITED = 1 << 60


# --- reading the machine --------------------------------------------------------------------


@dataclass(frozen=True)
class MachineReading:
    """What the machine has now. ``None``: unknown (that check is then skipped)."""

    memory_available: int | None
    disk_free: int | None


class Probe(Protocol):
    def read(self) -> MachineReading:
        """Read the machine now. Blocking (called in a worker thread)."""
        ...


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if text == "max":
        return None
    return int(text) if text.isdigit() else None


def _stat_value(path: Path, key: str) -> int:
    """One ``key value`` line of a cgroup ``memory.stat``; 0 when absent."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except (OSError, UnicodeDecodeError):
        pass
    return 0


class MachineProbe:
    """Reads available memory and free disk of ``data_dir``.

    Memory available is the smaller of ``/proc/meminfo``'s MemAvailable and what every memory
    cgroup limit above this process leaves: ``limit - (usage - inactive file cache)`` at each
    level from the process's own cgroup to the root (a limit is often set on a parent slice).
    Inactive file cache is subtracted because the kernel reclaims it before the limit bites;
    counted as used, the page cache of the clones themselves would look like a shortage.
    Both cgroup v2 (``memory.max``/``memory.current``) and v1 (``memory.limit_in_bytes``/
    ``memory.usage_in_bytes``) are read. Paths are injectable so tests feed fake files.
    """

    def __init__(
        self, data_dir: str, *, proc: str = "/proc", cgroup_root: str = "/sys/fs/cgroup"
    ) -> None:
        self.data_dir = data_dir
        self.proc = Path(proc)
        self.cgroup_root = Path(cgroup_root)

    def read(self) -> MachineReading:
        return MachineReading(self.memory_available(), self.disk_free())

    def memory_available(self) -> int | None:
        found = [v for v in (self._meminfo_available(), self._cgroup_available()) if v is not None]
        return max(0, min(found)) if found else None

    def disk_free(self) -> int | None:
        """Bytes an unprivileged writer can still use in data-dir (``f_bavail``)."""
        try:
            st = os.statvfs(self.data_dir)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    def _meminfo_available(self) -> int | None:
        try:
            text = (self.proc / "meminfo").read_text()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("MemAvailable:"):
                fields = line.split()
                if len(fields) >= 2 and fields[1].isdigit():
                    return int(fields[1]) * 1024
        return None

    def _cgroup_dirs(self) -> list[tuple[Path, bool]]:
        """The memory cgroup directories of this process, own first then its ancestors, each
        with ``True`` for cgroup v2. From ``/proc/self/cgroup``."""
        try:
            lines = (self.proc / "self" / "cgroup").read_text().splitlines()
        except OSError:
            return []
        dirs: list[tuple[Path, bool]] = []
        for line in lines:
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            hierarchy, controllers, rel = parts
            if hierarchy == "0" and controllers == "":
                # v2: mounted at the root (unified) or at root/unified (hybrid).
                base = self.cgroup_root
                if not (base / "cgroup.controllers").exists():
                    base = base / "unified"
                dirs += [(d, True) for d in _ancestors(base, rel)]
            elif "memory" in controllers.split(","):
                dirs += [(d, False) for d in _ancestors(self.cgroup_root / "memory", rel)]
        return dirs

    def _cgroup_available(self) -> int | None:
        best: int | None = None
        for directory, v2 in self._cgroup_dirs():
            if v2:
                limit = _read_int(directory / "memory.max")
                usage = _read_int(directory / "memory.current")
                inactive = _stat_value(directory / "memory.stat", "inactive_file")
            else:
                limit = _read_int(directory / "memory.limit_in_bytes")
                if limit is not None and limit >= _V1_UNLIMITED:
                    limit = None
                usage = _read_int(directory / "memory.usage_in_bytes")
                inactive = _stat_value(directory / "memory.stat", "total_inactive_file")
            if limit is None or usage is None:
                continue
            left = limit - max(0, usage - inactive)
            best = left if best is None else min(best, left)
        return best


def _ancestors(base: Path, rel: str) -> list[Path]:
    """``base/rel`` and each parent up to ``base``, those that exist."""
    parts = [p for p in rel.strip().split("/") if p and p not in (".", "..")]
    out = []
    for n in range(len(parts), -1, -1):
        d = base.joinpath(*parts[:n])
        if d.is_dir():
            out.append(d)
    return out


def process_group_rss(pgid: int, proc: str = "/proc") -> int:
    """Resident bytes of every process in process group ``pgid`` (git and its children: they
    share the group gitproc started). One pass over ``/proc/*/stat``. Blocking."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    with os.scandir(proc) as it:
        for entry in it:
            if not entry.name.isdigit():
                continue
            try:
                with open(os.path.join(entry.path, "stat"), "rb") as f:
                    stat = f.read()
            except OSError:
                continue  # ended meanwhile
            # Fields after the command name (which may hold spaces and parentheses): state is
            # field 3, pgrp field 5, rss (pages) field 24.
            fields = stat[stat.rfind(b")") + 2 :].split()
            if len(fields) > 21 and int(fields[2]) == pgid:
                total += int(fields[21]) * page
    return total


# --- admission --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdmissionConfig:
    """The settings admission follows. A reserve or estimate of 0 turns that part off."""

    max_clones: int
    memory_reserve: int = 0
    memory_estimate: int = 0
    disk_reserve: int = 0
    #: How often waiting admissions read the machine again.
    poll_s: float = 0.5

    @classmethod
    def from_settings(cls, settings: Settings) -> AdmissionConfig:
        return cls(
            max_clones=settings.max_concurrent_clones,
            memory_reserve=settings.clone_memory_reserve,
            memory_estimate=settings.clone_memory_estimate,
            disk_reserve=settings.clone_disk_reserve,
        )


@dataclass(frozen=True)
class CloneSlots:
    """The clone admission's state, for metrics. Headrooms are ``None`` when not measured."""

    total: int
    in_use: int
    waiting: int
    #: Admissions holding their slots but waiting for memory or disk.
    waiting_for_resources: int = 0
    memory_headroom: int | None = None
    disk_headroom: int | None = None
    #: Clones stopped by reason ("memory", "disk", "max_repo_bytes"), sorted.
    stopped: tuple[tuple[str, int], ...] = ()


@dataclass(eq=False)
class Ticket:
    """One admitted clone: its weight in slots and what it was seen to use so far."""

    weight: int
    #: Disk the clone is expected to take (its size at its last audit; 0 if never audited).
    expected_bytes: int = 0
    #: Peak RSS of its git processes and its directory size, reported by its watcher.
    memory_seen: int = 0
    disk_seen: int = 0
    #: True once past the wait for the reserves.
    started: bool = False
    #: True while git clones (the watcher runs); only such clones are stopped for shortage.
    cloning: bool = False
    borrowers: list[object] = field(default_factory=list)


class Admission:
    """Admits clones through an ``anyio.CapacityLimiter`` whose token total follows the
    machine (``probe``); without a probe it is the plain fixed limiter."""

    def __init__(
        self,
        limiter: anyio.CapacityLimiter,
        config: AdmissionConfig,
        probe: Probe | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limiter = limiter
        self.config = config
        self.probe = probe
        self._clock = clock
        self._active: list[Ticket] = []
        self._reading: MachineReading | None = None
        self._read_at = -math.inf
        # One admission at a time takes its slots: two weight-2 admissions each holding one of
        # two slots would otherwise wait for each other forever.
        self._taking = anyio.Lock()
        self._waiting_for_slots = 0
        self._waiting_for_resources = 0
        self.stopped: Counter[str] = Counter()

    @classmethod
    def fixed(cls, limiter: anyio.CapacityLimiter) -> Admission:
        """The limiter alone: its total never changes, nothing is measured."""
        return cls(limiter, AdmissionConfig(max_clones=max(1, int(limiter.total_tokens))))

    @classmethod
    def from_settings(cls, settings: Settings) -> Admission:
        config = AdmissionConfig.from_settings(settings)
        return cls(
            anyio.CapacityLimiter(config.max_clones), config, MachineProbe(settings.data_dir)
        )

    # -- the rule --------------------------------------------------------------------------

    def _others(self, exclude: Ticket | None) -> list[Ticket]:
        """Tickets holding slots; with ``exclude``, only the started ones but that one. (A
        ticket's own wait for the reserves never counts tickets still waiting too: they
        would wait for each other.)"""
        if exclude is None:
            return self._active
        return [t for t in self._active if t.started and t is not exclude]

    def pending_memory(self, exclude: Ticket | None = None) -> int:
        """Memory admitted clones are expected to take but have not been seen to take."""
        per = self.config.memory_estimate
        return sum(max(0, per * len(t.borrowers) - t.memory_seen) for t in self._others(exclude))

    def pending_disk(self, exclude: Ticket | None = None) -> int:
        """Disk admitted clones are expected to take (from history) beyond what they hold."""
        return sum(max(0, t.expected_bytes - t.disk_seen) for t in self._others(exclude))

    def tokens_for(self, reading: MachineReading | None, in_use: int) -> int:
        """How many slots the limiter should have: those in use plus as many clones' estimates
        as fit in available memory above the reserve and the pending estimates; 1 to max."""
        cfg = self.config
        if reading is None or reading.memory_available is None or cfg.memory_estimate <= 0:
            return cfg.max_clones
        # Slots just handed over by the limiter to a task that has not resumed yet belong to no
        # ticket so far: they count at a full estimate each.
        unclaimed = max(0, in_use - sum(len(t.borrowers) for t in self._active))
        pending = self.pending_memory() + unclaimed * cfg.memory_estimate
        spare = reading.memory_available - pending - cfg.memory_reserve
        more = spare // cfg.memory_estimate if spare > 0 else 0
        return max(1, min(cfg.max_clones, in_use + more))

    def weight_for(self, last_size: int | None) -> int:
        """Slots for a repository: 2 if it measured larger than one clone's memory estimate
        at its last audit (git's memory grows with the pack up to its configured bounds), else
        1; never more than max_clones."""
        est = self.config.memory_estimate
        heavy = last_size is not None and est > 0 and last_size > est
        return min(self.config.max_clones, 2 if heavy else 1)

    def _retune(self) -> None:
        """Set the limiter's total from the latest reading (no I/O). Raising it wakes waiters."""
        if self.probe is None:
            return
        total = self.tokens_for(self._reading, self.limiter.borrowed_tokens)
        if total != self.limiter.total_tokens:
            self.limiter.total_tokens = total

    async def refresh(self, max_age: float = 0.0) -> MachineReading | None:
        """Read the machine (unless the last reading is younger than ``max_age``) and retune."""
        if self.probe is None:
            return None
        if self._clock() - self._read_at > max_age:
            self._reading = await anyio.to_thread.run_sync(self.probe.read)
            self._read_at = self._clock()
        self._retune()
        return self._reading

    async def refresh_forever(self, interval_s: float = 5.0) -> None:
        """Keep the reading (and so the metrics) fresh while nothing else reads the machine."""
        while True:
            await self.refresh(max_age=interval_s / 2)
            await anyio.sleep(interval_s)

    # -- admitting -------------------------------------------------------------------------

    @asynccontextmanager
    async def admit(self, weight: int = 1, expected_bytes: int = 0) -> AsyncIterator[Ticket]:
        """Hold ``weight`` slots (fewer if the total is smaller: such a clone runs alone) and
        wait for the reserves; give everything back on leaving, whatever happens."""
        ticket = Ticket(max(1, min(weight, self.config.max_clones)), max(0, expected_bytes))
        try:
            await self._take_slots(ticket)
            await self._wait_for_resources(ticket)
            ticket.started = True
            yield ticket
        finally:
            with suppress(ValueError):
                self._active.remove(ticket)
            for borrower in reversed(ticket.borrowers):
                self.limiter.release_on_behalf_of(borrower)
            self._retune()

    async def _take_slots(self, ticket: Ticket) -> None:
        self._waiting_for_slots += 1
        try:
            async with self._taking:
                for _ in range(ticket.weight):
                    if not await self._take_one(ticket):
                        break  # capped at the current total: this clone will run alone
        finally:
            self._waiting_for_slots -= 1

    async def _take_one(self, ticket: Ticket) -> bool:
        """Wait for one more slot while re-reading the machine (which may raise the total).
        False if the ticket already holds as many slots as there are."""
        held = len(ticket.borrowers)
        await self.refresh(max_age=self.config.poll_s / 2)  # a burst meets the current total
        if held and held >= self.limiter.total_tokens:
            return False
        borrower = object()
        async with anyio.create_task_group() as tg:

            async def retune() -> None:
                while True:
                    await anyio.sleep(self.config.poll_s)
                    await self.refresh(max_age=self.config.poll_s / 2)
                    if held and held >= self.limiter.total_tokens:
                        tg.cancel_scope.cancel()

            tg.start_soon(retune)
            await self.limiter.acquire_on_behalf_of(borrower)
            ticket.borrowers.append(borrower)
            if ticket not in self._active:  # counted as pending from its first slot on
                self._active.append(ticket)
            tg.cancel_scope.cancel()
        return borrower in ticket.borrowers

    def _shortage(self, reading: MachineReading | None, ticket: Ticket) -> str | None:
        """Why ``ticket`` may not start yet, or None."""
        if reading is None:
            return None
        cfg = self.config
        if cfg.memory_reserve and reading.memory_available is not None:
            left = reading.memory_available - self.pending_memory(exclude=ticket)
            if left < cfg.memory_reserve:
                return f"memory: {left // MIB} MiB available, reserve {cfg.memory_reserve // MIB}"
        if cfg.disk_reserve and reading.disk_free is not None:
            left = reading.disk_free - self.pending_disk(exclude=ticket)
            need = cfg.disk_reserve + ticket.expected_bytes
            if left < need:
                return f"disk: {left // MIB} MiB free in data-dir, {need // MIB} MiB needed"
        return None

    async def _wait_for_resources(self, ticket: Ticket) -> None:
        reason = self._shortage(await self.refresh(max_age=self.config.poll_s / 2), ticket)
        if reason is None:
            return
        log.info("clone waiting for resources (%s)", reason)
        self._waiting_for_resources += 1
        try:
            while reason is not None:
                await anyio.sleep(self.config.poll_s)
                reason = self._shortage(await self.refresh(self.config.poll_s / 2), ticket)
        finally:
            self._waiting_for_resources -= 1

    # -- watching a running clone ----------------------------------------------------------

    async def check(self, ticket: Ticket, *, rss: int, disk_bytes: int) -> str | None:
        """Record what a cloning ``ticket`` uses; the reason to stop it, if the machine fell
        under half a reserve and it is the youngest clone still cloning (one clone at a time
        is stopped, the newest: the others are further along)."""
        ticket.cloning = True
        ticket.memory_seen = max(ticket.memory_seen, rss)
        ticket.disk_seen = disk_bytes
        reading = await self.refresh(max_age=self.config.poll_s / 2)
        if reading is None:
            return None
        youngest = next((t for t in reversed(self._active) if t.cloning), None)
        if youngest is not ticket:
            return None
        cfg = self.config
        mem = reading.memory_available
        if cfg.memory_reserve and mem is not None and mem < cfg.memory_reserve // 2:
            self.stopped["memory"] += 1
            return (
                "stopped: the machine's available memory fell under half of "
                f"clone-memory-reserve ({mem // MIB} MiB left, reserve "
                f"{cfg.memory_reserve // MIB} MiB; this clone's git used {rss // MIB} MiB)"
            )
        disk = reading.disk_free
        if cfg.disk_reserve and disk is not None and disk < cfg.disk_reserve // 2:
            self.stopped["disk"] += 1
            return (
                "stopped: free space in data-dir fell under half of clone-disk-reserve "
                f"({disk // MIB} MiB left, reserve {cfg.disk_reserve // MIB} MiB; this clone "
                f"took {disk_bytes // MIB} MiB)"
            )
        return None

    def record_stop(self, reason: str) -> None:
        """Count a clone stopped for another reason (``max_repo_bytes``), for metrics."""
        self.stopped[reason] += 1

    # -- metrics ---------------------------------------------------------------------------

    def slots(self) -> CloneSlots:
        s = self.limiter.statistics()
        reading, cfg = self._reading, self.config
        mem = disk = None
        if reading is not None and reading.memory_available is not None:
            mem = reading.memory_available - self.pending_memory() - cfg.memory_reserve
        if reading is not None and reading.disk_free is not None:
            disk = reading.disk_free - self.pending_disk() - cfg.disk_reserve
        return CloneSlots(
            total=int(s.total_tokens),
            in_use=s.borrowed_tokens,
            waiting=self._waiting_for_slots,
            waiting_for_resources=self._waiting_for_resources,
            memory_headroom=mem,
            disk_headroom=disk,
            stopped=tuple(sorted(self.stopped.items())),
        )
