"""The pool with real worker processes: sharing, deadlines, cancellation, no leftovers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from diskaudit.scan import walk
from diskaudit.scan.pool import ScanConfig, ScanError, open_scan_pool
from diskaudit.scan.protocol import FdReader, encode
from diskaudit.scan.walk import WalkOptions
from tests.trees import du

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~60,000 entries, nearly all under one subtree: the case where splitting by root fails."""
    root = tmp_path_factory.mktemp("big")
    (root / "small").mkdir()
    (root / "small" / "f").write_bytes(b"x")
    for i in range(60):
        d = root / "huge" / f"d{i:02}" / "inner"
        d.mkdir(parents=True)
        for j in range(1000):
            (d / f"f{j}").touch()
    return root


def worker_pids() -> set[int]:
    """This test process's worker processes, found in /proc by command line and parent."""
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat") as f:
                stat_fields = f.read().rsplit(")", 1)[1].split()
            state = stat_fields[0]
        except OSError:
            continue
        ppid = int(stat_fields[1])
        if b"diskaudit.scan.worker" in cmdline and state != "Z" and ppid == os.getpid():
            pids.add(int(entry))
    return pids


def describe(pids: set[int]) -> list[str]:
    return [Path(f"/proc/{p}/stat").read_text() for p in pids]


async def test_one_huge_subtree_keeps_every_worker_busy(big_tree: Path) -> None:
    before = worker_pids()
    async with open_scan_pool(2) as pool:
        usage = await pool.scan(str(big_tree), ScanConfig(dir_level=1, chunk_size=500))
        stats = pool.statistics()
        assert len(worker_pids() - before) == 2
    assert usage.total.disk_bytes == du(big_tree, depth=0, apparent=False)[str(big_tree)]
    assert usage.total.files == 60 * 1000 + 1
    # Both workers walked a real share of the one big subtree.
    assert len(stats.worker_entries) == 2
    assert min(stats.worker_entries) > 0.2 * sum(stats.worker_entries)
    assert stats.entries_scanned == usage.entries_scanned
    assert worker_pids() - before == set()


async def test_deadline_stops_the_scan_and_kills_the_workers(big_tree: Path) -> None:
    # chunk_size=1: a message per entry makes this walk take seconds, far past the deadline.
    before = worker_pids()
    async with open_scan_pool(2) as pool:
        with pytest.raises(TimeoutError), anyio.fail_after(0.05) as scope:
            await pool.scan(str(big_tree), ScanConfig(dir_level=2, chunk_size=1))
        assert scope.cancel_called
        stats = pool.statistics()
        assert stats.busy_workers == 0
        assert stats.pending_units == 0
        # Workers interrupted mid-walk were killed; an idle one may stay for the next scan.
        left = worker_pids() - before
        assert stats.running_processes == len(left) < 2, describe(left)
        # The pool is still usable after a timeout.
        usage = await pool.scan(str(big_tree / "small"), ScanConfig(dir_level=0))
        assert usage.total.files == 1
    assert worker_pids() - before == set()


async def test_cancelling_the_caller_cancels_the_walk(big_tree: Path) -> None:
    before = worker_pids()
    async with open_scan_pool(2) as pool:
        started = anyio.Event()

        async def watch() -> None:
            while pool.statistics().busy_workers == 0:  # noqa: ASYNC110 (polling the pool is the point)
                await anyio.sleep(0.001)
            started.set()

        with anyio.CancelScope() as outer:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                tg.start_soon(pool.scan, str(big_tree), ScanConfig(dir_level=2, chunk_size=1))
                await started.wait()
                outer.cancel()
        assert outer.cancelled_caught
        stats = pool.statistics()
        assert (stats.busy_workers, stats.active_scans, stats.pending_units) == (0, 0, 0)
        left = worker_pids() - before
        assert stats.running_processes == len(left) < 2, describe(left)
    assert worker_pids() - before == set()


def test_worker_process_checks_the_deadline_itself(big_tree: Path) -> None:
    """The deadline travels with each unit: the worker stops at its first chunk boundary past
    it and says so, whatever the pool's own timer does (both use the monotonic clock)."""
    opts = WalkOptions(
        root=str(big_tree), dir_level=1, chunk_size=100, deadline=time.monotonic() - 1
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "diskaudit.scan.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(encode(("walk", 7, [(str(big_tree), 0, str(big_tree), True)], opts.wire())))
    proc.stdin.flush()
    reader = FdReader(proc.stdout.fileno())
    assert reader.read() == ("ready", walk.IMPLEMENTATION)
    first = reader.read()
    assert first is not None
    assert first[:2] == ("chunk", 7)
    assert reader.read() == ("expired", 7)
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0
    proc.stdout.close()


async def test_missing_and_non_directory_roots_are_scan_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    async with open_scan_pool(1) as pool:
        with pytest.raises(ScanError, match="No such file"):
            await pool.scan(str(tmp_path / "missing"), ScanConfig())
        with pytest.raises(ScanError, match="not a directory"):
            await pool.scan(str(tmp_path / "file"), ScanConfig())


async def test_concurrent_scans_share_the_pool(big_tree: Path, tmp_path: Path) -> None:
    results = {}
    async with open_scan_pool(2) as pool:

        async def one(path: Path) -> None:
            results[path] = await pool.scan(str(path), ScanConfig(dir_level=1, chunk_size=200))

        async with anyio.create_task_group() as tg:
            for p in (big_tree / "huge", big_tree / "small", tmp_path):
                tg.start_soon(one, p)
    for p, usage in results.items():
        assert usage.total.disk_bytes == du(p, depth=0, apparent=False)[str(p)]
