"""The job API and the job runner end to end: ``diskaudit serve`` as a subprocess on 127.0.0.1,
real git servers on 127.0.0.1 (``tests/gitservers.py``), every wait bounded.

A slow server (``delay_s``) keeps clones running while a test kills, stops or cancels; its
``delay_s`` is read at each request, so a test sets it to 0 once the slow part is over.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client import CollectorRegistry

from diskaudit.audit.urlpolicy import UrlPolicy
from diskaudit.exporter.state import ExporterState
from diskaudit.http.app import build_app
from diskaudit.http.jobs_api import job_routes
from diskaudit.http.webconfig import BasicAuth
from diskaudit.jobs.memory_store import MemoryJobStore
from tests.daemon import Daemon, running_daemon
from tests.gitservers import git_processes, http_git_server, make_repo, wait_git_processes_gone

T = TypeVar("T")

JOBS = "/api/v1/jobs"
FINAL = {"succeeded", "failed", "timed_out", "cancelled"}
SLOW_S = 60.0  # the slow server's delay: far longer than any test waits with clones running


# --- helpers ---------------------------------------------------------------------------------


def call(
    d: Daemon,
    method: str,
    path: str,
    body: object = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request; (status, headers with lower-case names, JSON body or raw bytes)."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    sent = dict(headers or {})
    if data is not None:
        sent.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(d.url + path, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, got, content = int(resp.status), resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        status, got, content = exc.code, exc.headers, exc.read()
    out = {k.lower(): v for k, v in got.items()}
    parsed = json.loads(content) if "json" in out.get("content-type", "") else content
    return status, out, parsed


def submit(
    d: Daemon, url: str, ref: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"url": url} if ref is None else {"url": url, "ref": ref}
    status, _, job = call(d, "POST", JOBS, body, headers=headers)
    return status, job


def job(d: Daemon, job_id: str) -> dict[str, Any]:
    status, _, body = call(d, "GET", f"{JOBS}/{job_id}")
    assert status == 200, body
    return dict(body)


def jobs(d: Daemon, status: str | None = None) -> list[dict[str, Any]]:
    query = "?limit=1000" + (f"&status={status}" if status else "")
    code, _, body = call(d, "GET", JOBS + query)
    assert code == 200, body
    return list(body["jobs"])


def by_status(d: Daemon) -> dict[str, int]:
    out: dict[str, int] = {}
    for j in jobs(d):
        out[j["status"]] = out.get(j["status"], 0) + 1
    return out


def wait_for(
    what: str, check: Callable[[], T | None], timeout_s: float, *, d: Daemon | None = None
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            log = f"\ndaemon log:\n{d.log_text()[-4000:]}" if d is not None else ""
            raise AssertionError(f"not within {timeout_s}s: {what} (last: {value!r}){log}")
        time.sleep(0.1)


def wait_final(d: Daemon, ids: list[str], timeout_s: float) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        current = [job(d, i) for i in ids]
        return current if all(j["status"] in FINAL for j in current) else None

    return wait_for(f"jobs {ids} final", done, timeout_s, d=d)


def statuses(j: dict[str, Any]) -> list[str]:
    return [h["status"] for h in j["history"]]


def alive(pid: int) -> bool:
    """``pid`` runs (exists and is not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] not in (b"Z", b"X")


def kill_groups(pids: list[int]) -> None:
    """SIGKILL the process groups of those of ``pids`` that still run git."""
    for pid in pids:
        if alive(pid) and "git" in argv(pid):
            with suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)


def argv(pid: int) -> str:
    with suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    return "?"


def scan_workers(parent: int) -> list[int]:
    """Live scan worker processes whose parent is ``parent``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and alive(int(entry)) and "diskaudit.scan.worker" in argv(int(entry)):
            with suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_bytes()
                if int(stat[stat.rindex(b")") + 2 :].split()[1]) == parent:
                    found.append(int(entry))
    return found


def clones(tmp_path: Path) -> list[str]:
    path = tmp_path / "data" / "clones"
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def settings(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """Daemon settings (``extra`` with dashed keys via ``**{"job-workers": 1}``)."""
    scan = tmp_path / "scan"
    scan.mkdir(exist_ok=True)
    (scan / "f").write_bytes(b"x" * 100)
    return {
        "analyzed-path": str(scan),
        "scan-interval": "1h",
        "allowed-schemes": ["http", "git"],
        "allowed-hosts": ["127.0.0.1"],
        "job-workers": 2,
        "max-concurrent-clones": 2,
        "shutdown-grace": "0.5s",
        **extra,
    }


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small bare repository; tests copy it under as many names as they need."""
    return make_repo(tmp_path_factory.mktemp("template") / "repo.git", files=8, size=500)


def repos(tmp_path: Path, template: Path, n: int) -> Path:
    root = tmp_path / "repos"
    for i in range(n):
        shutil.copytree(template, root / f"r{i:02}.git")
    return root


# --- 1. kill -9 ------------------------------------------------------------------------------


def test_sigkill_with_jobs_queued_and_running_loses_nothing(tmp_path: Path, template: Path) -> None:
    root = repos(tmp_path, template, 22)
    with http_git_server(root, delay_s=SLOW_S) as git:
        urls = [f"{git.url}r{i:02}.git" for i in range(22)]
        with running_daemon(tmp_path, settings(tmp_path)) as d:
            ids = []
            for url in urls:
                code, j = submit(d, url)
                assert code == 202, j
                ids.append(j["id"])
            wait_for(
                "2 running, 20 queued",
                lambda: by_status(d) == {"running": 2, "queued": 20},
                20,
                d=d,
            )
            children = wait_for(
                "git clones of both running jobs",
                lambda: git_processes(d.proc.pid) if git.active >= 2 else [],
                20,
                d=d,
            )
            running = {j["id"] for j in jobs(d, "running")}
            workers = scan_workers(d.proc.pid)
            assert d.stop(signal.SIGKILL) == -signal.SIGKILL
        # Scan workers end when their stdin (a pipe from the daemon) closes.
        wait_for("scan workers gone", lambda: not any(map(alive, workers)), 10)
        # The daemon's git processes outlive it (test_git_children_die_with_a_sigkilled_daemon):
        # kill them here, so that they cannot write into data-dir/clones after the restart.
        kill_groups(children)
        wait_for("orphaned git processes gone", lambda: not any(map(alive, children)), 10)

        git.delay_s = 0.0
        with running_daemon(tmp_path, settings(tmp_path)) as d2:
            final = wait_final(d2, ids, 90)
            assert "2 jobs were running when the daemon stopped" in d2.log_text()
            assert "removed 2 clone directories left by an earlier run" in d2.log_text()
            listed = jobs(d2)
            assert d2.stop() == 0

    assert [j["status"] for j in final] == ["succeeded"] * 22, [j["error"] for j in final]
    assert len(listed) == 22
    assert len({j["id"] for j in listed}) == 22
    assert sorted(j["url"] for j in listed) == sorted(urls)
    for j in final:
        if j["id"] in running:
            assert j["attempts"] == 2, j
            assert statuses(j) == ["queued", "running", "queued", "running", "succeeded"], j
        else:
            assert j["attempts"] == 1, j
            assert statuses(j) == ["queued", "running", "succeeded"], j
    assert clones(tmp_path) == []


def test_git_children_die_with_a_sigkilled_daemon(tmp_path: Path, template: Path) -> None:
    root = repos(tmp_path, template, 2)
    with http_git_server(root, delay_s=SLOW_S) as git:
        with running_daemon(tmp_path, settings(tmp_path)) as d:
            for i in range(2):
                submit(d, f"{git.url}r{i:02}.git")
            children = wait_for(
                "git clones of both jobs",
                lambda: git_processes(d.proc.pid) if git.active >= 2 else [],
                20,
                d=d,
            )
            d.stop(signal.SIGKILL)
        try:
            deadline = time.monotonic() + 3.0
            while (left := [p for p in children if alive(p)]) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not left, [argv(p) for p in left]
        finally:
            kill_groups(children)


# --- 2. graceful stop ------------------------------------------------------------------------


def test_sigterm_gives_running_jobs_back_and_they_succeed_after_restart(
    tmp_path: Path, template: Path
) -> None:
    root = repos(tmp_path, template, 2)
    cfg = settings(tmp_path, **{"shutdown-grace": "1s"})
    with http_git_server(root, delay_s=SLOW_S) as git:
        with running_daemon(tmp_path, cfg) as d:
            ids = [submit(d, f"{git.url}r{i:02}.git")[1]["id"] for i in range(2)]
            wait_for("2 running", lambda: by_status(d) == {"running": 2}, 20, d=d)
            children = wait_for(
                "both clones under way",
                lambda: git_processes(d.proc.pid) if git.active >= 2 else [],
                20,
                d=d,
            )
            t0 = time.monotonic()
            assert d.stop(signal.SIGTERM, timeout_s=20) == 0, d.log_text()
            took = time.monotonic() - t0
            assert not [pid for pid in children if alive(pid)]
        # Read the store as the stopped daemon left it (a new daemon would claim the jobs).
        db_uri = f"file:{tmp_path / 'data' / 'diskaudit.db'}?mode=ro"
        with closing(sqlite3.connect(db_uri, uri=True)) as db:
            rows = db.execute("SELECT id, status, attempts FROM jobs ORDER BY id").fetchall()
        assert sorted(rows) == sorted((i, "queued", 0) for i in ids)
        assert took < 10, f"graceful stop took {took:.1f}s"
        assert clones(tmp_path) == []

        git.delay_s = 0.0
        with running_daemon(tmp_path, cfg) as d2:
            final = wait_final(d2, ids, 60)
            assert d2.stop() == 0
    for j in final:
        assert j["status"] == "succeeded", j
        assert j["attempts"] == 1, j
        assert statuses(j) == ["queued", "running", "queued", "running", "succeeded"], j


# --- 3. authentication -----------------------------------------------------------------------


def test_api_token(tmp_path: Path, template: Path) -> None:
    root = repos(tmp_path, template, 1)
    with (
        http_git_server(root) as git,
        running_daemon(tmp_path, settings(tmp_path, **{"api-token": "s3cret"})) as d,
    ):
        code, headers, body = call(d, "GET", JOBS)
        assert code == 401, body
        assert headers["www-authenticate"].startswith("Bearer"), headers
        assert "Bearer" in body["detail"]
        code, headers, _ = call(d, "GET", JOBS, headers={"Authorization": "Bearer wrong"})
        assert code == 401
        assert headers["www-authenticate"].startswith("Bearer")
        code, _, _ = call(d, "GET", JOBS, headers={"Authorization": "Basic czNjcmV0"})
        assert code == 401
        code, _ = submit(d, f"{git.url}r00.git")
        assert code == 401
        good = {"Authorization": "Bearer s3cret"}
        code, j = submit(d, f"{git.url}r00.git", headers=good)
        assert code == 202, j
        code, _, body = call(d, "GET", f"{JOBS}/{j['id']}", headers=good)
        assert code == 200, body
        assert d.get("/metrics")[0] == 200
        assert d.get("/healthz")[0] == 200
        assert d.stop() == 0


async def asgi_get(app: Any, path: str, client: tuple[str, int] | None, token: str | None) -> int:
    """GET ``path`` from an ASGI app in process; the response status."""
    headers = [(b"host", b"diskaudit")]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": client,
        "server": ("127.0.0.1", 9995),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    [start] = [m for m in sent if m["type"] == "http.response.start"]
    return int(start["status"])


@pytest.mark.parametrize(
    ("token", "client", "auth", "expected"),
    [
        (None, ("127.0.0.1", 5555), None, 200),
        (None, ("127.8.9.10", 5555), None, 200),
        (None, ("::1", 5555), None, 200),
        (None, ("10.1.2.3", 5555), None, 403),
        (None, ("::ffff:10.1.2.3", 5555), None, 403),
        (None, ("10.1.2.3", 5555), "anything", 403),
        (None, None, None, 403),
        (None, ("not-an-address", 1), None, 403),
        ("s3cret", ("10.1.2.3", 5555), "s3cret", 200),
        ("s3cret", ("10.1.2.3", 5555), None, 401),
        ("s3cret", ("127.0.0.1", 5555), None, 401),
    ],
)
async def test_api_auth_by_client_address(
    token: str | None, client: tuple[str, int] | None, auth: str | None, expected: int
) -> None:
    app = build_app(
        lambda: ExporterState([]).snapshot,
        CollectorRegistry(),
        BasicAuth({}),
        api_routes=job_routes(MemoryJobStore(), None, UrlPolicy()),
        api_token=token,
    )
    assert await asgi_get(app, JOBS, client, auth) == expected
    assert await asgi_get(app, "/healthz", client, None) == 200  # not part of the job API


# --- 4. deduplication ------------------------------------------------------------------------


def test_same_url_and_ref_while_queued_or_running_is_the_same_job(
    tmp_path: Path, template: Path
) -> None:
    root = repos(tmp_path, template, 2)
    with (
        http_git_server(root, delay_s=SLOW_S) as git,
        running_daemon(tmp_path, settings(tmp_path, **{"job-workers": 1})) as d,
    ):
        a, b = f"{git.url}r00.git", f"{git.url}r01.git"
        code, first = submit(d, a)
        assert code == 202
        wait_for("a running", lambda: job(d, first["id"])["status"] == "running", 20, d=d)
        code, queued = submit(d, b, "main")
        assert code == 202
        assert queued["status"] == "queued"

        status, headers, again = call(d, "POST", JOBS, {"url": a})
        assert status == 200, again
        assert again["id"] == first["id"]
        assert again["status"] == "running"
        assert headers["location"] == f"{JOBS}/{first['id']}"
        code, again = submit(d, b, "main")
        assert code == 200
        assert again["id"] == queued["id"]
        assert again["status"] == "queued"

        code, other_ref = submit(d, a, "main")  # None (the default branch) is another ref
        assert code == 202
        assert other_ref["id"] not in (first["id"], queued["id"])
        assert submit(d, b)[0] == 202
        assert len({j["id"] for j in jobs(d)}) == 4
        assert d.stop() == 0


# --- 5. cancel -------------------------------------------------------------------------------


def test_cancel_queued_and_running_jobs(tmp_path: Path, template: Path) -> None:
    root = repos(tmp_path, template, 3)
    with (
        http_git_server(root, delay_s=SLOW_S) as git,
        running_daemon(tmp_path, settings(tmp_path)) as d,
    ):
        ids = [submit(d, f"{git.url}r{i:02}.git")[1]["id"] for i in range(3)]
        wait_for(
            "2 running, 1 queued", lambda: by_status(d) == {"running": 2, "queued": 1}, 20, d=d
        )
        wait_for("both clones under way", lambda: git.active >= 2, 20, d=d)
        assert len(clones(tmp_path)) == 2
        [queued] = jobs(d, "queued")
        code, _, body = call(d, "DELETE", f"{JOBS}/{queued['id']}")
        assert code == 200, body
        assert body["status"] == "cancelled"
        assert body["attempts"] == 0
        assert job(d, queued["id"])["status"] == "cancelled"

        running = [j["id"] for j in jobs(d, "running")]
        t0 = time.monotonic()
        for job_id in running:
            code, _, body = call(d, "DELETE", f"{JOBS}/{job_id}")
            assert code == 200, body
            assert body["status"] in ("running", "cancelled")
            assert body["cancel_requested"] or body["status"] == "cancelled", body
        final = wait_final(d, running, 15)
        took = time.monotonic() - t0
        assert [j["status"] for j in final] == ["cancelled", "cancelled"], final
        assert all(j["error"] == "cancelled" for j in final)
        assert wait_git_processes_gone(d.proc.pid) == []
        assert clones(tmp_path) == []
        assert took < 10, f"cancelling running jobs took {took:.1f}s"
        # A final job stays as it is.
        code, _, body = call(d, "DELETE", f"{JOBS}/{ids[0]}")
        assert code == 200
        assert body["status"] == "cancelled"
        assert by_status(d) == {"cancelled": 3}
        assert d.stop() == 0


# --- 6. retry --------------------------------------------------------------------------------


def test_transient_failure_is_retried_then_succeeds(tmp_path: Path, template: Path) -> None:
    root = repos(tmp_path, template, 1)
    # The first request of the clone (the ref advertisement) gets a 503: "returned error: 503".
    with (
        http_git_server(root, fail_first=1) as git,
        running_daemon(tmp_path, settings(tmp_path, **{"retry-backoff": "1s"})) as d,
    ):
        t0 = time.monotonic()
        code, j = submit(d, f"{git.url}r00.git")
        assert code == 202
        [final] = wait_final(d, [j["id"]], 45)
        took = time.monotonic() - t0
        assert final["status"] == "succeeded", final
        assert final["attempts"] == 2
        assert statuses(final) == ["queued", "running", "queued", "running", "succeeded"]
        assert "503" in d.log_text()
        assert [r.status for r in git.requests][:1] == [503]
        assert 1 <= took < 40, f"retry took {took:.1f}s"  # after the 1 s backoff, not before
        print(f"retry then success took {took:.1f}s")
        assert d.stop() == 0


# --- 7. disk full ----------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """data-dir (tmp_path/data) on a 512 KiB tmpfs; unmounted at the end."""
    data = tmp_path / "data"
    data.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "none", str(data)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        reason = f"cannot mount a tmpfs (root needed): {proc.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield data
    finally:
        if subprocess.run(["umount", str(data)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(data)], check=False)


def fill(directory: Path) -> Path:
    """Write a file in ``directory`` until the file system is full."""
    path = directory / "filler"
    chunk = b"\0" * 4096
    with open(path, "wb", buffering=0) as f:
        try:
            for _ in range(1 << 20):
                f.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            return path
    raise AssertionError("the file system did not fill up")


def test_disk_full_refuses_submissions_with_503(
    tmp_path: Path, template: Path, small_tmpfs: Path
) -> None:
    root = tmp_path / "repos"
    make_repo(root / "tiny.git", files=2, size=100, commits=1)
    # data-dir is a 512 KiB tmpfs: no clone would ever get the default 1 GiB disk reserve.
    daemon_settings = settings(tmp_path, **{"clone-disk-reserve": 0})
    with http_git_server(root) as git, running_daemon(tmp_path, daemon_settings) as d:
        url = f"{git.url}tiny.git"
        code, first = submit(d, url)
        assert code == 202, first
        [done] = wait_final(d, [first["id"]], 30)
        assert done["status"] == "succeeded", done

        filler = fill(small_tmpfs)
        code, headers, body = call(d, "POST", JOBS, {"url": url, "ref": "main"})
        assert code == 503, body
        assert "store" in body["detail"]
        assert "full" in body["detail"] or "disk" in body["detail"], body
        assert headers.get("retry-after") == "60"
        assert d.get("/metrics")[0] == 200
        assert job(d, first["id"])["status"] == "succeeded"
        assert [j["id"] for j in jobs(d)] == [first["id"]]

        filler.unlink()
        code, second = submit(d, url, "main")
        assert code == 202, second
        [done] = wait_final(d, [second["id"]], 30)
        assert done["status"] == "succeeded", done
        assert d.stop() == 0


# --- 8. validation ---------------------------------------------------------------------------


def raw_post(d: Daemon, head: bytes, body_chunks: Iterator[bytes]) -> bytes:
    """Send a request by hand (the body may be cut short by the server); the raw answer."""
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        s.sendall(head)
        with suppress(OSError):  # the server may answer and close before reading it all
            for chunk in body_chunks:
                s.sendall(chunk)
        answer = b""
        with suppress(OSError):
            while data := s.recv(65536):
                answer += data
    return answer


def test_request_validation(tmp_path: Path) -> None:
    with running_daemon(tmp_path, settings(tmp_path)) as d:
        ten_mb = 10 * 1024 * 1024
        head = (
            f"POST {JOBS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {ten_mb}\r\nConnection: close\r\n\r\n"
        ).encode()
        answer = raw_post(d, head, (b"x" * 65536 for _ in range(ten_mb // 65536)))
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        assert b"larger than" in answer
        # Chunked, so no Content-Length to refuse it by: refused once 64 KiB were read.
        head = (
            f"POST {JOBS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ).encode()
        chunk = b"10000\r\n" + b"x" * 65536 + b"\r\n"
        answer = raw_post(d, head, iter([chunk] * 160 + [b"0\r\n\r\n"]))
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]

        code, _, body = call(d, "POST", JOBS, raw=b'{"url": "http://127.0.0.1/x.git"')
        assert code == 400, body
        assert "JSON" in body["detail"]
        code, _, body = call(d, "POST", JOBS, raw=b"\xff\xfe")
        assert code == 400, body

        code, _, body = call(d, "POST", JOBS, {"url": "http://127.0.0.1/x.git", "bogus": 1})
        assert code == 422, body
        assert [(e["loc"], e["type"]) for e in body["errors"]] == [(["bogus"], "extra_forbidden")]
        code, _, body = call(d, "POST", JOBS, {"ref": "main"})
        assert code == 422, body
        assert [e["loc"] for e in body["errors"]] == [["url"]]
        code, _, body = call(d, "POST", JOBS, [1])
        assert code == 422, body

        hostile = {
            "ext::sh -c touch% /tmp/pwned": "transport",
            "--upload-pack=touch /tmp/pwned": "'-'",
            "http://user:pw@127.0.0.1/x.git": "credentials",
            "file:///etc": "file://",
            "/etc": "local paths",
            "https://127.0.0.1/x.git": "scheme",
            "http://example.com/x.git": "allowed-hosts",
            "http://127.0.0.1/x.git\nHost: evil": "whitespace",
        }
        for url, reason in hostile.items():
            code, _, body = call(d, "POST", JOBS, {"url": url})
            assert code == 422, (url, body)
            assert body["detail"].startswith("refused: "), (url, body)
            assert reason in body["detail"], (url, body)
        for ref in ("--orphan", "a..b", "x:y", "main\n"):
            code, _, body = call(d, "POST", JOBS, {"url": "http://127.0.0.1/x.git", "ref": ref})
            assert code == 422, (ref, body)
            assert body["detail"].startswith("refused: "), (ref, body)

        for query in ("status=bogus", "limit=0", "limit=1001", "limit=-1", "limit=x"):
            code, _, body = call(d, "GET", f"{JOBS}?{query}")
            assert code == 422, (query, body)
            assert "detail" in body
        unknown = "0" * 32
        for method in ("GET", "DELETE"):
            code, _, body = call(d, method, f"{JOBS}/{unknown}")
            assert code == 404, body
            assert body == {"detail": "no such job"}
        assert jobs(d) == []
        assert d.stop() == 0


def test_odd_limits_are_422(tmp_path: Path) -> None:
    with running_daemon(tmp_path, settings(tmp_path)) as d:
        answers = {limit: call(d, "GET", f"{JOBS}?limit={limit}")[0] for limit in ODD_LIMITS}
        assert d.stop() == 0
    assert answers == dict.fromkeys(ODD_LIMITS, 422)


ODD_LIMITS = ("%C2%B2", "9" * 5000)  # a superscript 2 (str.isdigit() is true), 5000 digits
