"""Hostile and broken git servers, with real git, on 127.0.0.1 only.

- a "git bomb": a few KB of objects whose checkout is 1 GiB (one blob, trees of trees);
- a server that answers the upload-pack POST with the start of a pack and then random bytes
  without end, fast (max-repo-bytes stops it) or slowly (the deadline stops it);
- a server that stalls in the middle of the pack (``stalling_server``): the deadline stops it,
  and so does git's low-speed limit on its own.

After every test: no git process below this one, nothing left in data-dir/clones, and (for the
in-process service) the clone slot given back. Outcomes are summarised in RESULTS-git-api.md.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest

import diskaudit.audit.service as service_module
from diskaudit.audit.errors import CloneError, RepoTooLarge, classify_clone_failure
from diskaudit.audit.gitproc import hardened_env
from diskaudit.audit.service import AuditConfig, AuditService, prepare_dirs
from diskaudit.audit.urlpolicy import UrlPolicy
from diskaudit.scan.pool import ScanPool, open_scan_pool
from tests.daemon import running_daemon
from tests.gitservers import (
    EPOCH,
    IDENTITY,
    LOOPBACK,
    git_daemon,
    isolated_git_env,
    make_repo,
    stalling_server,
    wait_git_processes_gone,
)

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
LIMIT = 20 * MiB  # max-repo-bytes in these tests


# --- fixtures and helpers --------------------------------------------------------------------


def config(tmp_path: Path, **kw: object) -> AuditConfig:
    defaults: dict[str, object] = {
        "policy": UrlPolicy(allowed_schemes=frozenset({"http", "git"}), allow_local=False),
        "clones_dir": tmp_path / "data" / "clones",
        "git_home": tmp_path / "data" / "git-home",
        "max_repo_bytes": LIMIT,
    }
    cfg = AuditConfig(**{**defaults, **kw})  # type: ignore[arg-type]
    prepare_dirs(cfg, sweep=True)
    return cfg


def clones(tmp_path: Path) -> list[str]:
    path = tmp_path / "data" / "clones"
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


@pytest.fixture(autouse=True)
def nothing_left_behind(tmp_path: Path) -> Iterator[None]:
    yield
    assert wait_git_processes_gone(os.getpid()) == []
    assert clones(tmp_path) == []


@pytest.fixture
async def pool() -> AsyncIterator[ScanPool]:
    async with open_scan_pool(2) as p:
        yield p


def _git(args: list[str], env: Mapping[str, str], stdin: bytes | None = None) -> str:
    proc = subprocess.run(
        ["git", *args], input=stdin, capture_output=True, env=dict(env), check=True, timeout=60
    )
    return proc.stdout.decode().strip()


def make_git_bomb(
    path: Path, *, blob_bytes: int = 64 * 1024, fanout: int = 16, levels: int = 3, top: int = 4
) -> tuple[Path, int]:
    """A bare repository (branch main) of one commit whose tree is ``top`` x ``fanout**levels``
    copies of one ``blob_bytes`` blob: ``levels + 2`` trees and one blob, a few KB packed.
    Returns (path, bytes the checkout would write)."""
    with tempfile.TemporaryDirectory(prefix="bomb-") as home:
        env = isolated_git_env(home)
        _git(["init", "-q", "--bare", "--initial-branch=main", str(path)], env)
        gd = ["--git-dir", str(path)]
        line = b"all work and no play makes jack a dull boy\n"
        content = (line * (blob_bytes // len(line) + 1))[:blob_bytes]
        oid = _git([*gd, "hash-object", "-w", "--stdin"], env, content)
        mode, kind = "100644", "blob"
        for level in range(levels + 1):
            n = fanout if level < levels else top
            entries = "".join(f"{mode} {kind} {oid}\tx{i:02}\n" for i in range(n))
            oid = _git([*gd, "mktree"], env, entries.encode())
            mode, kind = "040000", "tree"
        date = f"{EPOCH} +0000"
        dated = {**env, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
        commit = _git([*IDENTITY, *gd, "commit-tree", oid, "-m", "bomb"], dated)
        _git([*gd, "update-ref", "refs/heads/main", commit], env)
        _git([*gd, "repack", "-a", "-d", "-q"], env)
    return path, blob_bytes * fanout**levels * top


def repo_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --- a server that sends a pack without end --------------------------------------------------


def pkt(data: bytes) -> bytes:
    return b"%04x" % (len(data) + 4) + data


_OID = "1" * 40
ADVERTISEMENT = (
    pkt(b"# service=git-upload-pack\n")
    + b"0000"
    + pkt(
        f"{_OID} HEAD\0multi_ack_detailed side-band-64k ofs-delta "
        "symref=HEAD:refs/heads/main object-format=sha1 agent=git/2.39.5\n".encode()
    )
    + pkt(f"{_OID} refs/heads/main\n".encode())
    + b"0000"
)


def pack_start() -> bytes:
    """A pack header (version 2, one object) and the header of a blob of 1 TiB: past
    core.bigFileThreshold, so index-pack streams it to the temporary pack, never in memory."""
    size = 1 << 40
    header = bytearray([0x80 | (3 << 4) | (size & 0x0F)])
    size >>= 4
    while size:
        header.append((0x80 if size >> 7 else 0) | (size & 0x7F))
        size >>= 7
    return b"PACK" + struct.pack(">II", 2, 1) + bytes(header)


class EndlessPackServer:
    """Smart HTTP that advertises one ref and answers the upload-pack POST with ``NAK``, a pack
    header and then a zlib stream of random bytes in side-band-64k packets, without end (at
    ``rate`` bytes/s, or as fast as the client reads). ``sent``: pack bytes sent so far."""

    def __init__(self, rate: int | None = None) -> None:
        self.rate = rate
        self.sent = 0
        self.posts = 0
        self.stopping = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30.0

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.close_connection = True
                if "service=git-upload-pack" not in self.path:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-git-upload-pack-advertisement")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Content-Length", str(len(ADVERTISEMENT)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(ADVERTISEMENT)

            def do_POST(self) -> None:
                self.close_connection = True
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    while size := int(self.rfile.readline(1024).split(b";")[0], 16):
                        self.rfile.read(size + 2)
                    self.rfile.readline(1024)
                else:
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.posts += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-git-upload-pack-result")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                with suppress(OSError):  # the client went away (git was killed)
                    outer._stream(self.wfile)

        self._httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._httpd.daemon_threads = False
        self._httpd.block_on_close = True
        self.url = f"http://{LOOPBACK}:{self._httpd.server_address[1]}/repo.git"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _stream(self, out: Any) -> None:
        out.write(pkt(b"NAK\n"))
        noise = random.Random(7).randbytes(64 * 1024)
        deflate = zlib.compressobj(0)  # stored blocks: every random byte lands on disk
        data = pack_start()
        chunk = 16 * 1024 if self.rate else 64 * 1024
        while not self.stopping.is_set():
            data += deflate.compress(noise[:chunk]) + deflate.flush(zlib.Z_SYNC_FLUSH)
            while data:
                part, data = data[:65515], data[65515:]
                out.write(pkt(b"\x01" + part))
                self.sent += len(part)
            out.flush()
            if self.rate:
                self.stopping.wait(chunk / self.rate)

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()  # joins the handler threads
        self._thread.join()


@contextmanager
def endless_pack_server(rate: int | None = None) -> Iterator[EndlessPackServer]:
    server = EndlessPackServer(rate)
    try:
        yield server
    finally:
        server.stop()


# --- 1. git bomb -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bomb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bomb")
    path, checkout = make_git_bomb(root / "bomb.git")
    assert checkout == 1024 * MiB
    objects = repo_bytes(path / "objects")
    assert objects < 8 * 1024, objects  # a few KB
    return root


async def test_git_bomb_is_stopped_by_max_repo_bytes(
    tmp_path: Path, pool: ScanPool, bomb_root: Path
) -> None:
    service = AuditService(config(tmp_path), pool, anyio.CapacityLimiter(1))
    with git_daemon(bomb_root) as base:
        started = time.monotonic()
        with pytest.raises(RepoTooLarge, match="max-repo-bytes") as caught, anyio.fail_after(60):
            await service.audit(base + "bomb.git")
        elapsed = time.monotonic() - started
    print(f"git bomb: {caught.value} after {elapsed:.1f}s")
    # Refused from `git ls-tree` before a single file was written, not caught by the watcher.
    assert "the checkout would pass max-repo-bytes" in str(caught.value)
    assert clones(tmp_path) == []
    assert service.slots().in_use == 0
    # The slot is free: the next audit gets it at once (and fails the same way).
    with git_daemon(bomb_root) as base, pytest.raises(RepoTooLarge), anyio.fail_after(60):
        await service.audit(base + "bomb.git")


def test_git_bomb_job_fails_with_max_repo_bytes(tmp_path: Path, bomb_root: Path) -> None:
    scan = tmp_path / "scan"
    scan.mkdir()
    settings = {
        "analyzed-path": str(scan),
        "scan-interval": "1h",
        "allowed-schemes": ["git", "http"],
        "allowed-hosts": ["127.0.0.1"],
        "max-repo-bytes": "20MiB",
        "job-workers": 1,
        "max-attempts": 1,
        "shutdown-grace": "0.5s",
    }
    with git_daemon(bomb_root) as base, running_daemon(tmp_path, settings) as d:
        req = urllib.request.Request(
            d.url + "/api/v1/jobs",
            data=json.dumps({"url": base + "bomb.git"}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 202
            job_id = json.load(resp)["id"]
        deadline = time.monotonic() + 60
        while True:
            status, body = d.get(f"/api/v1/jobs/{job_id}")
            assert status == 200, body
            job = json.loads(body)
            if job["status"] not in ("queued", "running") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert wait_git_processes_gone(d.proc.pid) == []
        assert d.stop() == 0
    assert job["status"] == "failed", job
    assert "max-repo-bytes" in job["error"], job
    assert job["attempts"] == 1


# --- 2. a pack without end -------------------------------------------------------------------


async def test_endless_pack_is_stopped_by_max_repo_bytes(tmp_path: Path, pool: ScanPool) -> None:
    service = AuditService(config(tmp_path), pool, anyio.CapacityLimiter(1))
    with endless_pack_server() as server:
        started = time.monotonic()
        with pytest.raises(RepoTooLarge, match="max-repo-bytes") as caught, anyio.fail_after(30):
            await service.audit(server.url)
        elapsed = time.monotonic() - started
        assert server.posts == 1
    print(f"endless pack, fast: {caught.value} after {elapsed:.1f}s, {server.sent} bytes sent")
    assert server.sent > LIMIT
    assert clones(tmp_path) == []
    assert service.slots().in_use == 0


async def test_slow_endless_pack_is_stopped_by_the_deadline(tmp_path: Path, pool: ScanPool) -> None:
    # 64 KB/s: far above the low-speed limit (1000 B/s), far below max-repo-bytes in 4 s.
    service = AuditService(config(tmp_path), pool, anyio.CapacityLimiter(1))
    with endless_pack_server(rate=64_000) as server:
        started = time.monotonic()
        with pytest.raises(TimeoutError), anyio.fail_after(4):
            await service.audit(server.url)
        elapsed = time.monotonic() - started
    print(f"endless pack, slow: deadline after {elapsed:.1f}s, {server.sent} bytes sent")
    assert 4 <= elapsed < 4 + 5  # the deadline, plus at most the kill grace and the rmtree
    assert 100_000 < server.sent < LIMIT
    assert clones(tmp_path) == []
    assert service.slots().in_use == 0


# --- 3. a pack that stalls -------------------------------------------------------------------


async def test_stalled_pack_is_stopped_by_the_deadline(tmp_path: Path, pool: ScanPool) -> None:
    make_repo(tmp_path / "srv" / "r.git", files=40, size=4000, big_blob=256 * 1024)
    service = AuditService(config(tmp_path), pool, anyio.CapacityLimiter(1))
    with stalling_server(tmp_path / "srv") as server:
        started = time.monotonic()
        with pytest.raises(TimeoutError), anyio.fail_after(5):
            await service.audit(server.url + "r.git")
        elapsed = time.monotonic() - started
        assert server.active == 1  # the pack was being sent when the deadline came
    print(f"stalled pack: deadline after {elapsed:.1f}s")
    assert elapsed < 5 + 5
    assert clones(tmp_path) == []
    assert service.slots().in_use == 0


async def test_stalled_pack_is_stopped_by_the_low_speed_limit(
    tmp_path: Path, pool: ScanPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    def env_with_short_low_speed_time(
        home: str, extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        return hardened_env(home, {**(extra or {}), "GIT_HTTP_LOW_SPEED_TIME": "2"})

    monkeypatch.setattr(service_module, "hardened_env", env_with_short_low_speed_time)
    # CloneError keeps git's last lines only; git-remote-http's "Operation too slow" comes
    # before fetch-pack's "early EOF". Record the whole (redacted) stderr it was classified by.
    classified: list[str] = []

    def spy(stderr: str) -> bool:
        classified.append(stderr)
        return classify_clone_failure(stderr)

    monkeypatch.setattr(service_module, "classify_clone_failure", spy)
    make_repo(tmp_path / "srv" / "r.git", files=40, size=4000, big_blob=256 * 1024)
    service = AuditService(config(tmp_path), pool, anyio.CapacityLimiter(1))
    with stalling_server(tmp_path / "srv") as server:
        started = time.monotonic()
        with pytest.raises(CloneError) as caught, anyio.fail_after(30):
            await service.audit(server.url + "r.git")
        elapsed = time.monotonic() - started
    print(f"stalled pack, low-speed time 2s: {caught.value} after {elapsed:.1f}s")
    assert caught.value.transient, caught.value
    assert len(classified) == 1
    assert "operation too slow" in classified[0].lower(), classified[0]
    assert elapsed < 10
    assert clones(tmp_path) == []
    assert service.slots().in_use == 0


def test_pack_start_is_a_valid_pack_header() -> None:
    """The endless server's first bytes parse as a pack: index-pack reads the header and the
    object header, then waits for more data (it is told the stream ends early)."""
    data = pack_start() + zlib.compressobj(0).compress(b"x" * 1000)
    with tempfile.TemporaryDirectory() as home:
        _git(["init", "-q", home], isolated_git_env(home))
        proc = subprocess.run(
            ["git", "index-pack", "--stdin", "-v"],
            input=data,
            capture_output=True,
            env=isolated_git_env(home),
            cwd=home,
            check=False,
        )
    # Not "bad pack header" nor "unknown object type": the stream was simply cut short.
    err = proc.stderr.decode()
    assert proc.returncode != 0
    assert "bad pack header" not in err, err
    assert "unknown object type" not in err, err
    assert "early eof" in err.lower() or "premature end" in err.lower(), err
