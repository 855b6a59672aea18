"""The daemon's HTTP side under load and abuse: ``diskaudit serve`` as a subprocess on
127.0.0.1.

- a burst of job submissions from several keep-alive connections: every one accepted, stored
  once, none lost; memory and /metrics latency afterwards;
- slow clients (slowloris): 200 connections that send a request a byte a second and hold on;
  /metrics and /healthz still answer at once, and the descriptors are given back.

Request bodies (10 MB with and without Content-Length, invalid JSON, unknown fields) are covered
by tests/e2e/test_jobs.py::test_request_validation. Outcomes: RESULTS-git-api.md.

``DISKAUDIT_BURST`` sets the burst size; the default is 10,000 with ``DISKAUDIT_SOAK`` set, else
2,000.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import pytest

from tests.daemon import Daemon, running_daemon

BURST = int(
    os.environ.get("DISKAUDIT_BURST") or (10_000 if os.environ.get("DISKAUDIT_SOAK") else 2_000)
)
SENDERS = 8  # threads, one keep-alive connection each
SLOW_CLIENTS = 200
MiB = 1024 * 1024


def settings(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    scan = tmp_path / "scan"
    scan.mkdir(exist_ok=True)
    (scan / "f").write_bytes(b"x" * 100)
    return {
        "analyzed-path": str(scan),
        "scan-interval": "1h",
        "allowed-schemes": ["git"],
        "allowed-hosts": ["127.0.0.1"],
        "job-workers": 1,
        "max-attempts": 1,
        "shutdown-grace": "0.5s",
        **extra,
    }


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with running_daemon(tmp_path, settings(tmp_path)) as d:
        yield d


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1)) * 1024


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def timed_get(d: Daemon, path: str) -> tuple[int, float]:
    """GET ``path`` on a fresh connection; (status, seconds)."""
    started = time.monotonic()
    status, _ = d.get(path)
    return status, time.monotonic() - started


def jobs_by_status(d: Daemon) -> dict[str, int]:
    """``diskaudit_jobs{status=...}`` from /metrics (refreshed by the daemon every 5 s)."""
    found = re.findall(r'^diskaudit_jobs\{status="(\w+)"\} (\S+)$', d.metrics(), re.MULTILINE)
    return {status: int(float(n)) for status, n in found}


def submit_many(port: int, urls: list[str]) -> list[tuple[int, str]]:
    """POST each URL on one keep-alive connection; (status, job id or error) per URL."""
    out: list[tuple[int, str]] = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    with closing(conn):
        for url in urls:
            body = json.dumps({"url": url})
            try:
                conn.request("POST", "/api/v1/jobs", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                out.append((0, f"{type(exc).__name__}: {exc}"))  # not retried: counted lost
                conn.close()
                continue
            answer = json.loads(data)
            out.append((resp.status, answer.get("id") or answer.get("detail", "")))
    return out


# --- 1. a burst of submissions ---------------------------------------------------------------


def test_burst_of_submissions_is_stored_exactly_once(tmp_path: Path, daemon: Daemon) -> None:
    d = daemon
    pid = d.proc.pid
    rss_before = rss_bytes(pid)
    urls = [f"git://127.0.0.1:1/r{i:05}.git" for i in range(BURST)]
    slices = [urls[n::SENDERS] for n in range(SENDERS)]
    started = time.monotonic()
    with ThreadPoolExecutor(SENDERS) as senders:
        answers = [a for part in senders.map(submit_many, [d.port] * SENDERS, slices) for a in part]
    burst_s = time.monotonic() - started
    rss_after = rss_bytes(pid)

    statuses: dict[int, int] = {}
    for status, _ in answers:
        statuses[status] = statuses.get(status, 0) + 1
    ids = {job_id for status, job_id in answers if status == 202}
    assert statuses == {202: BURST}, [a for a in answers if a[0] != 202][:5]
    assert len(ids) == BURST

    # The job counts are refreshed every 5 s; /metrics answers quickly all the while.
    deadline = time.monotonic() + 20
    latencies = []
    while True:
        t0 = time.monotonic()
        by_status = jobs_by_status(d)
        latencies.append(time.monotonic() - t0)
        counted = sum(by_status.values())
        if counted == BURST or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert counted == BURST
    assert max(latencies) < 1.0, latencies
    status, body = d.get("/api/v1/jobs?limit=1000")
    assert status == 200
    assert len(json.loads(body)["jobs"]) == min(BURST, 1000)
    rss_settled = rss_bytes(pid)
    assert d.stop() == 0, d.log_text()[-3000:]

    with closing(
        sqlite3.connect(f"file:{tmp_path / 'data' / 'diskaudit.db'}?mode=ro", uri=True)
    ) as db:
        rows = db.execute("SELECT id, url FROM jobs").fetchall()
    assert len(rows) == BURST
    assert {r[0] for r in rows} == ids
    assert sorted(r[1] for r in rows) == urls
    print(
        f"burst of {BURST}: {burst_s:.1f}s ({BURST / burst_s:.0f}/s) from {SENDERS} connections; "
        f"RSS {rss_before / MiB:.1f} -> {rss_after / MiB:.1f} MiB after the burst, "
        f"{rss_settled / MiB:.1f} MiB later; /metrics max {max(latencies) * 1000:.0f} ms; "
        f"jobs {by_status}"
    )
    assert rss_after - rss_before < 50 * MiB
    assert rss_settled - rss_before < 50 * MiB


# --- 2. slow clients -------------------------------------------------------------------------


def test_slow_clients_do_not_starve_metrics_and_health(daemon: Daemon) -> None:
    d = daemon
    pid = d.proc.pid
    assert d.get("/healthz")[0] == 200
    fds_before = open_fds(pid)
    request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\n"
    slow = [socket.create_connection(("127.0.0.1", d.port), timeout=5) for _ in range(SLOW_CLIENTS)]
    cut: set[int] = set()  # slow connections the daemon closed
    stop = threading.Event()

    def drip() -> None:
        for i in range(len(request)):
            for n, s in enumerate(slow):
                if n not in cut:
                    try:
                        s.send(request[i : i + 1])
                    except OSError:
                        cut.add(n)
            if stop.wait(1.0):
                return

    dripper = threading.Thread(target=drip, name="slowloris")
    dripper.start()
    try:
        time.sleep(0.5)
        fds_held = open_fds(pid)
        probes: list[tuple[str, int, float]] = []
        for _ in range(5):
            probes.extend((path, *timed_get(d, path)) for path in ("/metrics", "/healthz"))
            time.sleep(1.0)
    finally:
        stop.set()
        dripper.join()
        for s in slow:
            with suppress(OSError):
                s.close()

    deadline = time.monotonic() + 10
    while (fds_after := open_fds(pid)) > fds_before + 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    print(
        f"{SLOW_CLIENTS} slow clients: fds {fds_before} -> {fds_held} held -> {fds_after} after; "
        f"{len(cut)} cut by the daemon; probes max "
        f"{max(p[2] for p in probes) * 1000:.0f} ms"
    )
    assert fds_held >= fds_before + SLOW_CLIENTS - 5  # the connections were really held
    assert [(p, s) for p, s, _ in probes] == [("/metrics", 200), ("/healthz", 200)] * 5
    assert max(t for _, _, t in probes) < 1.0, probes
    assert abs(fds_after - fds_before) <= 5
    assert d.get("/healthz")[0] == 200
    assert d.stop() == 0


def test_slow_clients_up_to_the_fd_limit_do_not_starve_health(daemon: Daemon) -> None:
    d = daemon
    _, hard = resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE, (256, hard))  # as a small systemd unit
    slow = [socket.create_connection(("127.0.0.1", d.port), timeout=5) for _ in range(300)]
    try:
        for s in slow:
            s.send(b"GET /")
        time.sleep(1.0)
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=2)
        with closing(conn):
            conn.request("GET", "/healthz")
            assert conn.getresponse().status == 200
    finally:
        for s in slow:
            s.close()
