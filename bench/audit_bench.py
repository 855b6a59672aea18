"""A burst of repository audits against a local git server: peak memory and total time by
clone limit. ``python -m bench.audit_bench [--repos 6] [--size-mb 50] [--limits 1,2,6]``.

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


async def burst(base: str, count: int, limit: int, data: Path) -> float:
    cfg = AuditConfig(
        policy=UrlPolicy(allowed_schemes=frozenset({"git"})),
        clones_dir=data / "clones",
        git_home=data / "git-home",
    )
    prepare_dirs(cfg, sweep=True)
    started = time.monotonic()
    async with open_scan_pool(2) as pool:
        service = AuditService(cfg, pool, anyio.CapacityLimiter(limit))
        async with anyio.create_task_group() as tg:
            for i in range(count):
                tg.start_soon(service.audit, f"{base}r{i}.git")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repos", type=int, default=6)
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--limits", default="1,2,6")
    args = parser.parse_args()
    root = default_cache_dir() / f"repos-{args.size_mb}mb"
    ensure_repos(root, args.repos, args.size_mb)
    with detached_git_daemon(root) as base, tempfile.TemporaryDirectory() as tmp:
        for limit in (int(x) for x in args.limits.split(",")):
            sampler = ProcessTreeSampler(os.getpid(), 0.01)
            sampler.start()
            wall = anyio.run(burst, base, args.repos, limit, Path(tmp))
            sampler.stop()
            print(
                f"{args.repos} audits of {args.size_mb} MB repositories, limit {limit}: "
                f"{wall:.1f} s, peak RSS {sampler.peak_kib / 1024:.0f} MiB "
                f"over up to {sampler.peak_nprocs} processes",
                flush=True,
            )


if __name__ == "__main__":
    main()
