"""Several daemons, one queue: ``diskaudit serve`` subprocesses sharing a real PostgreSQL
(tests/pgserver.py, on 127.0.0.1) and cloning from a real smart-HTTP git server that counts the
clones in progress from its side (tests/gitservers.py).

Skipped with the reason where PostgreSQL is not installed; with CI set, a failure instead.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.daemon import Daemon, running_daemon
from tests.e2e.test_jobs import FINAL, call, jobs, submit, wait_for
from tests.gitservers import GitHTTPServer, git_processes, http_git_server, make_repo
from tests.pgserver import PgServer

LEASE_S = 4.0  # job-lease: short, so that a dead daemon's work moves on within seconds
_databases = itertools.count()


@pytest.fixture
def dsn(pg: PgServer) -> str:
    return pg.create_database(f"cluster_{os.getpid()}_{next(_databases)}")


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 bare repositories (copies of one: only the URLs need to differ)."""
    root = tmp_path_factory.mktemp("cluster-repos")
    first = make_repo(root / "r00.git", files=30, size=2000, commits=2)
    for i in range(1, 30):
        shutil.copytree(first, root / f"r{i:02}.git")
    return root


def daemon_settings(tmp_path: Path, name: str, dsn: str, **extra: object) -> dict[str, Any]:
    scan = tmp_path / "scan"
    scan.mkdir(exist_ok=True)
    return {
        "analyzed-path": str(scan),
        "data-dir": str(tmp_path / name),
        "allowed-schemes": ["http"],
        "scan-interval": "1h",
        "job-store": dsn,
        "job-lease": f"{LEASE_S}s",
        "cluster-max-concurrent-clones": 2,
        "max-concurrent-clones": 2,
        "job-workers": 2,
        "retry-backoff": "1s",
        "job-timeout": "60s",
        **extra,
    }


def start_daemons(
    stack: ExitStack, tmp_path: Path, dsn: str, n: int, **extra: object
) -> list[Daemon]:
    return [
        stack.enter_context(
            running_daemon(tmp_path, daemon_settings(tmp_path, f"d{i}", dsn, **extra))
        )
        for i in range(n)
    ]


def clones_served(server: GitHTTPServer) -> int:
    """Clone sessions the server started (its upload-pack advertisements answered 200)."""
    return sum(
        1
        for r in server.requests
        if r.path.endswith("/info/refs") and "git-upload-pack" in r.query and r.status == 200
    )


def all_final(d: Daemon, count: int, timeout_s: float) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        current = jobs(d)
        if len(current) == count and all(j["status"] in FINAL for j in current):
            return current
        return None

    return wait_for(f"{count} jobs final", done, timeout_s, d=d)


def succeeded_once(j: dict[str, Any]) -> bool:
    return [h["status"] for h in j["history"]].count("succeeded") == 1


@pytest.fixture
def server(repos: Path) -> Iterator[GitHTTPServer]:
    with http_git_server(repos, delay_s=0.3) as s:
        yield s


def test_three_daemons_share_one_queue_and_two_clone_slots(
    tmp_path: Path, dsn: str, server: GitHTTPServer
) -> None:
    with ExitStack() as stack:
        daemons = start_daemons(stack, tmp_path, dsn, 3)
        # The same repository submitted through every daemon is one job.
        dup = [submit(d, server.url + "r00.git", "main") for d in daemons]
        assert [status for status, _ in dup] == [202, 200, 200]
        assert len({body["id"] for _, body in dup}) == 1
        for i in range(1, 30):
            status, body = submit(daemons[i % 3], server.url + f"r{i:02}.git", "main")
            assert status == 202, body

        done = all_final(daemons[0], 30, timeout_s=180)

        assert [j["status"] for j in done] == ["succeeded"] * 30, [
            (j["url"], j["status"], j["error"]) for j in done
        ]
        assert all(succeeded_once(j) and j["attempts"] == 1 for j in done)
        # The cluster limit, seen from the git server: never more than 2 clones at once, and
        # the limit was reached (3 daemons x 2 local slots could have run 6).
        assert server.max_active == 2
        assert clones_served(server) == 30  # every job cloned once
        owners = {j["owner"] for j in done}
        assert len(owners) >= 2, owners  # the queue was shared
        metrics = daemons[1].metrics()
        assert "diskaudit_cluster_clone_slots 2.0" in metrics
        wait_for(
            "queue counts refreshed",
            lambda: 'diskaudit_jobs{status="succeeded"} 30.0' in daemons[1].metrics(),
            15,
        )


def test_a_killed_daemons_jobs_finish_on_the_others(
    tmp_path: Path, dsn: str, server: GitHTTPServer
) -> None:
    server.delay_s = 2.0  # clones stay in flight while the daemon is killed
    with ExitStack() as stack:
        victim, *others = start_daemons(stack, tmp_path, dsn, 3)
        for i in range(8):
            status, body = submit(others[i % 2], server.url + f"r{i:02}.git", "main")
            assert status == 202, body
        mark = f":{victim.proc.pid}:"

        def victims_running() -> list[dict[str, Any]]:
            return [j for j in jobs(others[0], "running") if mark in (j["owner"] or "")]

        taken = wait_for("the victim runs jobs", victims_running, 60, d=victim)
        git_before = git_processes(victim.proc.pid)
        assert victim.stop(signal.SIGKILL) == -signal.SIGKILL
        killed_at = time.monotonic()
        # Its git processes die with it (the pdeathsig group leader, ADR 0011).
        wait_for("the victim's git processes gone", lambda: not git_processes(victim.proc.pid), 10)
        assert git_before is not None
        server.delay_s = 0.2

        done = all_final(others[0], 8, timeout_s=120)

        assert [j["status"] for j in done] == ["succeeded"] * 8, [
            (j["url"], j["status"], j["error"]) for j in done
        ]
        assert all(succeeded_once(j) for j in done)
        by_id = {j["id"]: j for j in done}
        for j in taken:
            after = by_id[j["id"]]
            assert after["attempts"] == 2  # the victim's attempt counted
            assert mark not in after["owner"]  # finished by another daemon
        # The take-over waited for the lease, not longer than a few lease periods.
        assert time.monotonic() - killed_at >= LEASE_S * 0.5
        assert server.max_active <= 2


def test_daemons_ride_out_a_postgresql_restart(
    tmp_path: Path, dsn: str, pg: PgServer, server: GitHTTPServer
) -> None:
    server.delay_s = 0.5
    with ExitStack() as stack:
        daemons = start_daemons(stack, tmp_path, dsn, 2)
        for i in range(12):
            status, body = submit(daemons[i % 2], server.url + f"r{i:02}.git", "main")
            assert status == 202, body
        wait_for(
            "some jobs done, some not",
            lambda: 0 < sum(j["status"] == "succeeded" for j in jobs(daemons[0])) < 10,
            60,
            d=daemons[0],
        )
        pg.stop()
        try:
            # While the database is down the daemons keep serving; the store is reported down.
            status, _, body = call(daemons[0], "GET", "/api/v1/jobs")
            assert status == 503, body
            wait_for(
                "the store reported down",
                lambda: "diskaudit_job_store_up 0.0" in daemons[1].metrics(),
                15,
            )
            time.sleep(1.0)
        finally:
            pg.start()

        done = all_final(daemons[0], 12, timeout_s=120)

        assert [j["status"] for j in done] == ["succeeded"] * 12, [
            (j["url"], j["status"], j["error"]) for j in done
        ]
        assert all(succeeded_once(j) for j in done)
        assert server.max_active <= 2
        for d in daemons:
            assert d.proc.poll() is None, d.log_text()[-3000:]
