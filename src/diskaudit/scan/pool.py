"""The scan pool: ``max-procs`` worker slots in one anyio task group, each driving one worker
process, sharing the work of every scan by directory.

How work moves
    A scan starts as one unit (the root). A slot that finds no queued unit asks a busy worker to
    *split*: at its next chunk boundary the worker gives away directories it has not entered yet,
    which become units for idle slots. So one root with one huge subtree keeps every worker
    busy, and nothing is split while every worker already has work.

Where the deadline goes
    ``scan()`` reads ``anyio.current_effective_deadline()`` of its caller. Every unit carries it:
    the slot running the unit enters ``CancelScope(deadline=...)`` around it (the caller's scope
    does not reach the slot's task), and the worker process checks the same monotonic clock at
    each chunk boundary. On cancellation or deadline the slot kills its worker process, so a walk
    stops within one chunk at the latest, and the caller sees anyio's TimeoutError or its own
    cancellation.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from diskaudit.scan.aggregate import RootAccumulator
from diskaudit.scan.model import RootUsage
from diskaudit.scan.protocol import HEADER_BYTES, ProtocolError, body_length, decode, encode
from diskaudit.scan.walk import O_DIR, DirItem, WalkOptions

log = logging.getLogger(__name__)

#: Where this package is imported from, for the workers' PYTHONPATH.
_SRC_DIR = str(Path(__file__).resolve().parents[2])

#: A worker process idle this long is stopped; the next unit starts a new one.
WORKER_IDLE_TIMEOUT_S = 60.0
#: Grace for a worker to exit after its stdin is closed, before it is killed.
WORKER_STOP_GRACE_S = 2.0


class ScanError(Exception):
    """A root cannot be scanned at all (missing, not a directory, unreadable)."""


class WorkerError(Exception):
    """A worker process died or failed while walking; the scan of that root failed."""


@dataclass(frozen=True, slots=True)
class ScanConfig:
    """How to scan one root (from settings)."""

    dir_level: int = 2
    chunk_size: int = 1000
    follow_symlinks: bool = False
    one_file_system: bool = False
    #: Absolute paths or fnmatch globs of directories never entered nor counted.
    ignore_dirs: tuple[str, ...] = ()
    #: Entries per second at most for this root, shared by the workers (None: unlimited).
    io_budget: int | None = None
    #: Count files per size bucket (``SIZE_BOUNDS``) in every reported directory.
    size_buckets: bool = False
    #: Report this many of the root's largest files (0: none).
    top_files: int = 0


#: Upper bounds of the file size buckets, in bytes: 4 KiB, 64 KiB, 1 MiB, 16 MiB, 256 MiB,
#: 4 GiB; a last bucket holds the larger files. Powers of 16 apart: a few series per directory
#: that still tell "many small files" from "a few huge ones".
SIZE_BOUNDS = (4096, 65536, 1 << 20, 16 << 20, 256 << 20, 4 << 30)


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    workers: int
    busy_workers: int
    running_processes: int
    pending_units: int
    active_scans: int
    #: Entries examined by all scans since the pool started.
    entries_scanned: int
    #: The same, per worker slot: shows whether the work was shared.
    worker_entries: tuple[int, ...]


def split_ignore(patterns: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    """Exact paths go to a set lookup; only real globs cost a regex match per directory."""
    exact = {os.path.normpath(p) for p in patterns if not any(c in p for c in "*?[")}
    globs = tuple(p for p in patterns if any(c in p for c in "*?["))
    return frozenset(exact), globs


class _Job:
    """One root being scanned."""

    def __init__(self, acc: RootAccumulator, options: WalkOptions) -> None:
        self.acc = acc
        self.options = options
        self.pending: deque[list[DirItem]] = deque()
        self.running = 0
        self.scopes: set[anyio.CancelScope] = set()
        self.finished = anyio.Event()
        #: Set once the job has finished and no unit of it runs any more.
        self.stopped = anyio.Event()
        self.error: BaseException | None = None
        self.started = time.monotonic()

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.pending.clear()
        for scope in self.scopes:
            scope.cancel()
        self.finished.set()

    def check_done(self) -> None:
        if not self.pending and self.running == 0:
            self.finished.set()
        if self.finished.is_set() and self.running == 0:
            self.stopped.set()


class _Slot:
    """One of the pool's workers: a task and, while it has work, one worker process."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: anyio.abc.Process | None = None
        self._reader: BufferedByteReceiveStream | None = None
        self._send_lock = anyio.Lock()
        self.job: _Job | None = None
        self.split_pending = False
        self.entries = 0
        self.implementation = "unknown"

    async def start(self) -> None:
        if self.proc is not None:
            if self.proc.returncode is None:
                return
            # It died while idle (killed from outside): reap it and start another.
            with anyio.CancelScope(shield=True):
                await self.stop(kill=True)
        env = dict(os.environ)
        # The worker imports diskaudit from wherever this process did, installed or not.
        src = _SRC_DIR
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        # Shielded: a cancellation landing inside open_process would leave a started process
        # that no slot knows about. The wait for "ready" below may be cancelled: by then the
        # process is ours to kill.
        with anyio.CancelScope(shield=True):
            proc = await anyio.open_process(
                # -S: no site module, .pth files or sitecustomize; PYTHONPATH finds this package.
                [sys.executable, "-S", "-m", "diskaudit.scan.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,
                env=env,
                # Its own session: a Ctrl-C meant for the CLI must not kill workers mid-chunk; they
                # end when the pool closes their stdin or kills them.
                start_new_session=True,
            )
        self.proc = proc
        assert proc.stdout is not None
        self._reader = BufferedByteReceiveStream(proc.stdout)
        # Wait until the interpreter is up: the pool starts its workers one after the other,
        # so a worker still starting never competes for a core with the next one's fork, which
        # shows the whole parent's memory as its own until it execs.
        ready = await self.receive()
        if ready[0] != "ready":
            raise ProtocolError(f"worker said {ready[0]!r} before 'ready'")
        self.implementation = str(ready[1])

    async def send(self, message: tuple[object, ...]) -> None:
        proc = self.proc
        if proc is None or proc.stdin is None:
            raise anyio.BrokenResourceError("worker not running")
        async with self._send_lock:
            await proc.stdin.send(encode(message))

    async def receive(self) -> tuple[object, ...]:
        if self._reader is None:
            raise anyio.EndOfStream
        header = await self._reader.receive_exactly(HEADER_BYTES)
        return decode(await self._reader.receive_exactly(body_length(header)))

    async def stop(self, *, kill: bool) -> None:
        """End the worker process and reap it. Call shielded: it must finish."""
        proc, self.proc, self._reader = self.proc, None, None
        if proc is None:
            return
        if not kill and proc.stdin is not None:
            await proc.stdin.aclose()
            with anyio.move_on_after(WORKER_STOP_GRACE_S):
                await proc.wait()
                return
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await proc.aclose()


class ScanPool:
    """Runs scans on a fixed number of worker slots. Create with ``open_scan_pool``."""

    def __init__(self, max_procs: int) -> None:
        if max_procs < 1:
            raise ValueError("max_procs must be >= 1")
        self.max_procs = max_procs
        self._slots: list[_Slot] = []
        self._jobs: list[_Job] = []
        self._changed = anyio.Event()
        self._idle = 0
        self._entries = 0
        self._next_unit = 0

    # -- public ------------------------------------------------------------------------------

    async def scan(self, root: str, config: ScanConfig) -> RootUsage:
        """Scan ``root`` to ``config.dir_level`` under the caller's deadline.

        Raises ``ScanError`` if the root cannot be read at all, ``WorkerError`` if a worker
        died, ``TimeoutError`` from the caller's ``fail_after`` when the deadline passes.
        """
        deadline = anyio.current_effective_deadline()
        root, st = await anyio.to_thread.run_sync(_check_root, root, abandon_on_cancel=True)
        exact, globs = split_ignore(config.ignore_dirs)
        options = WalkOptions(
            root=root,
            dir_level=config.dir_level,
            chunk_size=config.chunk_size,
            follow_symlinks=config.follow_symlinks,
            one_file_system=config.one_file_system,
            root_dev=st.st_dev,
            ignore_paths=exact,
            ignore_globs=globs,
            deadline=deadline,
            # Each worker keeps to its share; together they keep to the root's budget.
            max_rate=config.io_budget / self.max_procs if config.io_budget else 0.0,
            size_bounds=SIZE_BOUNDS if config.size_buckets else (),
            top_files=config.top_files,
        )
        acc = RootAccumulator(
            root,
            config.dir_level,
            st,
            size_bounds=options.size_bounds,
            top_files=config.top_files,
        )
        job = _Job(acc, options)
        job.pending.append([(root, 0, root, True)])
        self._jobs.append(job)
        self._notify()
        try:
            await job.finished.wait()
        finally:
            if not job.finished.is_set():
                job.fail(anyio.get_cancelled_exc_class()())
            self._jobs.remove(job)
            self._notify()
            # Return only once every unit of this scan has stopped and its worker process, if
            # it was interrupted, is killed and reaped: nothing of it outlives the call.
            with anyio.CancelScope(shield=True):
                job.check_done()
                await job.stopped.wait()
        if job.error is not None:
            raise job.error
        return job.acc.result(time.monotonic() - job.started)

    @property
    def implementation(self) -> str:
        """How the workers read directories: "c", "python", or "unknown" before any started."""
        return next((s.implementation for s in self._slots if s.proc is not None), "unknown")

    def kill_now(self) -> None:
        """SIGKILL every worker process, synchronously: for an exit that cannot wait."""
        for slot in self._slots:
            if slot.proc is not None and slot.proc.returncode is None:
                slot.proc.kill()

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(
            workers=self.max_procs,
            busy_workers=sum(1 for s in self._slots if s.job is not None),
            running_processes=sum(1 for s in self._slots if s.proc is not None),
            pending_units=sum(len(j.pending) for j in self._jobs),
            active_scans=len(self._jobs),
            entries_scanned=self._entries,
            worker_entries=tuple(s.entries for s in self._slots),
        )

    # -- slots -------------------------------------------------------------------------------

    async def _run_slot(
        self, slot: _Slot, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self._slots.append(slot)
        try:
            # Start the worker process now, before any walking: a process forked while the
            # cores are busy can wait for one between (v)fork and exec, and meanwhile shows the
            # whole parent's memory as its own (seen as 38 MiB spikes in `make bench`).
            await slot.start()
            task_status.started()
            while True:
                job, items = await self._take(slot)
                await self._run_unit(slot, job, items)
        finally:
            with anyio.CancelScope(shield=True):
                await slot.stop(kill=True)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _take(self, slot: _Slot) -> tuple[_Job, list[DirItem]]:
        while True:
            for job in self._jobs:
                if job.pending:
                    job.running += 1
                    return job, job.pending.pop()
            changed = self._changed
            self._idle += 1
            try:
                await self._request_splits()
                timeout = WORKER_IDLE_TIMEOUT_S if slot.proc is not None else math.inf
                with anyio.move_on_after(timeout) as idle:
                    await changed.wait()
            finally:
                self._idle -= 1
            if idle.cancelled_caught:
                with anyio.CancelScope(shield=True):
                    await slot.stop(kill=False)

    async def _request_splits(self) -> None:
        """Ask busy workers to give work to the idle ones; at most one request in flight per
        worker, renewed after each of its chunks."""
        busy = [s for s in self._slots if s.job is not None and not s.split_pending]
        if not busy or self._idle == 0:
            return
        wanted = max(1, self._idle // len(busy))
        for slot in busy:
            slot.split_pending = True
            # A worker going away is its own slot's business.
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await slot.send(("split", wanted))

    async def _run_unit(self, slot: _Slot, job: _Job, items: list[DirItem]) -> None:
        scope = anyio.CancelScope(deadline=job.options.deadline)
        job.scopes.add(scope)
        crashed: BaseException | None = None
        try:
            with scope:
                await slot.start()
                slot.job = job
                self._next_unit += 1
                walk = ("walk", self._next_unit, items, job.options.wire())
                try:
                    await slot.send(walk)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    # The idle worker died unnoticed: nothing of this unit was done yet, so a
                    # new worker can take it.
                    with anyio.CancelScope(shield=True):
                        await slot.stop(kill=True)
                    await slot.start()
                    await slot.send(walk)
                await self._follow_unit(slot, job)
        except (
            anyio.BrokenResourceError,
            anyio.EndOfStream,
            anyio.IncompleteRead,  # the worker died in the middle of a frame, or between two
            ProtocolError,
            OSError,
        ) as exc:
            crashed = exc
        finally:
            job.scopes.discard(scope)
            slot.job = None
            slot.split_pending = False
            job.running -= 1
            if scope.cancel_called or crashed is not None:
                # The worker may be mid-walk: the only prompt way to stop it is to kill it.
                with anyio.CancelScope(shield=True):
                    await slot.stop(kill=True)
            if crashed is not None:
                job.fail(WorkerError(f"scan worker {slot.index} failed: {crashed!r}"))
            elif scope.cancelled_caught and job.error is None:
                job.fail(TimeoutError(f"scan of {job.acc.root} passed its deadline"))
            job.check_done()
            self._notify()

    async def _follow_unit(self, slot: _Slot, job: _Job) -> None:
        while True:
            message = await slot.receive()
            kind = message[0]
            if kind == "chunk":
                self._merge(slot, job, message[2:])
            elif kind == "done":
                return
            elif kind == "expired":
                job.fail(TimeoutError(f"scan of {job.acc.root} passed its deadline"))
                return
            elif kind == "failed":
                job.fail(WorkerError(f"scan worker {slot.index} failed:\n{message[2]}"))
                return
            else:
                raise ProtocolError(f"unexpected message {kind!r}")

    def _merge(self, slot: _Slot, job: _Job, fields: tuple[object, ...]) -> None:
        # The order of ``walk.Chunk.as_message``.
        totals, inodes, linked_dirs, spilled, entries, errors, samples, big = cast(Any, fields)
        slot.split_pending = False
        slot.entries += entries
        self._entries += entries
        accepted = job.acc.add_chunk(totals, inodes, linked_dirs, entries, errors, samples, big)
        if job.error is None:
            job.pending.extend(spilled)
            job.pending.extend([item] for item in accepted)
        self._notify()


def _check_root(root: str) -> tuple[str, os.stat_result]:
    """Make the root absolute; stat and open it (following a symlink, as ``du -D`` would).

    A root that cannot be listed at all is an error of the whole scan, not a counted skip.
    """
    root = os.path.abspath(root)
    try:
        st = os.stat(root)
        if not os.path.isdir(root):
            raise ScanError(f"{root}: not a directory")
        fd = os.open(root, O_DIR)
        os.close(fd)
    except OSError as exc:
        raise ScanError(f"{root}: {exc.strerror or exc}") from exc
    return root, st


@asynccontextmanager
async def open_scan_pool(max_procs: int) -> AsyncIterator[ScanPool]:
    """A pool of ``max_procs`` slots in its own task group; processes end with the block."""
    pool = ScanPool(max_procs)
    try:
        async with anyio.create_task_group() as tg:
            for index in range(max_procs):
                await tg.start(pool._run_slot, _Slot(index))
            try:
                yield pool
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The slots never raise; what comes out is the caller's own exception, which the
        # caller expects as it raised it, not wrapped in a group.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


__all__ = [
    "PoolStatistics",
    "ScanConfig",
    "ScanError",
    "ScanPool",
    "WorkerError",
    "open_scan_pool",
]
