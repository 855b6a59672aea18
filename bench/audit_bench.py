"""A burst of repository audits against a local git server: peak memory and total time by
clone limit. ``python -m bench.audit_bench [--repos 6] [--size-mb 50] [--limits 1,2,6]``.

``--machine-mb 1024`` also runs the burst on a simulated machine of that much memory: fixed
limit 2 against the adaptive admission (``Admission`` with up to ``--max-clones`` slots and the
default reserve and estimate). The simulated machine's available memory is its size less the
RSS of this process tree (the sampler's latest sample), so the admission reacts to what the
clones really take; nothing else on the host counts.

The "daemon" is this process running ``AuditService`` (as ``diskaudit serve`` does) with its
scan pool; its RSS and that of every descendant (scan workers, git, index-pack, ...) are sampled
every 10 ms and summed. The git server (``git daemon``) is started detached (``setsid -f``) so
that its upload-pack processes are not counted. Repositories are made once (seeded,
incompressible blobs) and cached.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
from tests.gitservers import make_repo_of_size

from bench.scan_bench import ProcessTreeSampler
from bench.treegen import default_cache_dir
from diskaudit.audit.admission import Admission, AdmissionConfig, MachineProbe, MachineReading
from diskaudit.audit.service import AuditConfig, AuditService, prepare_dirs
from diskaudit.audit.urlpolicy import UrlPolicy
from diskaudit.scan.pool import open_scan_pool


@contextmanager
def detached_git_daemon(root: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pid_file = root / "daemon.pid"
    subprocess.run(
        [
            "setsid",
            "-f",
            "git",
            "daemon",
            "--reuseaddr",
            f"--pid-file={pid_file}",
            f"--base-path={root}",
            "--export-all",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(root),
        ],
        check=True,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    try:
        yield f"git://127.0.0.1:{port}/"
    finally:
        os.kill(int(pid_file.read_text()), signal.SIGTERM)


def ensure_repos(root: Path, count: int, size_mb: int) -> None:
    for i in range(count):
        path = root / f"r{i}.git"
        if not (path / "HEAD").exists():
            print(f"making {path} ({size_mb} MB)", flush=True)
            make_repo_of_size(path, size_mb * 1024 * 1024)


class LastSampleSampler(ProcessTreeSampler):
    """The process tree sampler, also keeping its latest total (for the simulated machine)."""

    last_kib = 0

    def sample(self) -> None:
        before = self.peak_kib
        self.peak_kib = 0
        super().sample()
        self.last_kib = self.peak_kib
        self.peak_kib = max(before, self.peak_kib)


class SimulatedMachine:
    """A machine of ``size`` bytes whose only tenant is this process tree; real disk."""

    def __init__(self, size: int, sampler: LastSampleSampler, data_dir: str) -> None:
        self.size = size
        self.sampler = sampler
        self.disk = MachineProbe(data_dir)

    def read(self) -> MachineReading:
        available = max(0, self.size - self.sampler.last_kib * 1024)
        return MachineReading(available, self.disk.disk_free())


async def burst(base: str, count: int, admission: Admission, data: Path) -> tuple[float, int]:
    """Wall time of ``count`` concurrent audits, and the most slots held at once."""
    cfg = AuditConfig(
        policy=UrlPolicy(allowed_schemes=frozenset({"git"})),
        clones_dir=data / "clones",
        git_home=data / "git-home",
    )
    prepare_dirs(cfg, sweep=True)
    most = 0
    started = time.monotonic()
    async with open_scan_pool(2) as pool:
        service = AuditService(cfg, pool, admission)

        async def watch() -> None:
            nonlocal most
            while True:
                most = max(most, service.slots().in_use)
                await anyio.sleep(0.01)

        await admission.refresh()
        async with anyio.create_task_group() as outer:
            outer.start_soon(watch)
            async with anyio.create_task_group() as tg:
                for i in range(count):
                    tg.start_soon(service.audit, f"{base}r{i}.git")
            outer.cancel_scope.cancel()
    return time.monotonic() - started, most


def report(label: str, args: argparse.Namespace, wall: float, most: int, peak_kib: int) -> None:
    print(
        f"{args.repos} audits of {args.size_mb} MB repositories, {label}: {wall:.1f} s, "
        f"peak RSS {peak_kib / 1024:.0f} MiB, at most {most} slots held",
        flush=True,
    )


def simulated(args: argparse.Namespace, base: str, tmp: Path) -> None:
    """Fixed limit 2 against adaptive admission on a machine of ``--machine-mb``."""
    size = args.machine_mb * 1024 * 1024
    for mode in args.modes.split(","):
        sampler = LastSampleSampler(os.getpid(), 0.01)
        sampler.start()
        machine = SimulatedMachine(size, sampler, str(tmp))
        if mode == "fixed2":
            admission = Admission.fixed(anyio.CapacityLimiter(2))
        else:
            config = AdmissionConfig(
                max_clones=args.max_clones,
                memory_reserve=256 * 1024 * 1024,
                memory_estimate=128 * 1024 * 1024,
            )
            admission = Admission(anyio.CapacityLimiter(args.max_clones), config, machine)
        wall, most = anyio.run(burst, base, args.repos, admission, tmp)
        sampler.stop()
        label = f"{args.machine_mb} MB machine, {mode}"
        report(label, args, wall, most, sampler.peak_kib)
        print(
            f"    the simulated machine kept {(size - sampler.peak_kib * 1024) / 2**20:.0f} MiB "
            "available at the peak",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repos", type=int, default=6)
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--limits", default="1,2,6", help="fixed limits ('' for none)")
    parser.add_argument("--machine-mb", type=int, default=0, help="simulated machine size")
    parser.add_argument("--modes", default="fixed2,adaptive")
    parser.add_argument("--max-clones", type=int, default=6)
    args = parser.parse_args()
    root = default_cache_dir() / f"repos-{args.size_mb}mb"
    ensure_repos(root, args.repos, args.size_mb)
    with detached_git_daemon(root) as base, tempfile.TemporaryDirectory() as tmp:
        for limit in (int(x) for x in args.limits.split(",") if x):
            sampler = ProcessTreeSampler(os.getpid(), 0.01)
            sampler.start()
            admission = Admission.fixed(anyio.CapacityLimiter(limit))
            wall, most = anyio.run(burst, base, args.repos, admission, Path(tmp))
            sampler.stop()
            report(f"limit {limit}", args, wall, most, sampler.peak_kib)
        if args.machine_mb:
            simulated(args, base, Path(tmp))


if __name__ == "__main__":
    main()
